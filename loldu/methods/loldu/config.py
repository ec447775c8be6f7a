"""Configuration of LoLDU adapters."""

from __future__ import annotations

from dataclasses import dataclass, field

from loldu.methods.diagonal.config import DiagonalConfig
from loldu.methods.peft_registry import peft_type

LOLDU = peft_type("LOLDU")


@dataclass
class LoLDUConfig(DiagonalConfig):
    """LoLDU (arXiv 2410.13618): ``W_eff = W + P L_r diag(sigma z - sigma0 z0) U'_r``.

    Trains r + 1 numbers per adapted matrix. Recommended settings (the paper's):

    * RoBERTa / BERT (GLUE): ``target_modules=["query", "value"]``, ``r = 768``
      (full rank for base models), ``alpha = r``, lr 2e-4 to 4e-4.
    * ViT-base (image classification): ``["query", "value"]``, ``r = 768``, lr 3e-3.
    * LLaMA-family instruction tuning: ``["q_proj", "v_proj"]``, ``r = 1024``, lr 1e-3.
    * Stable Diffusion UNet: ``["to_q", "to_k", "to_v", "to_out.0"]``, ``r = 32``, lr 5e-4.

    Weight decay should not apply to z and sigma (see
    :func:`loldu.methods.optimizer_param_groups`).
    """

    decompose_dtype: str = field(
        default="float32",
        metadata={"help": "Precision of the LU: float32 (default) or float64. Buffers are cast to the layer dtype."},
    )

    def __post_init__(self):
        self.peft_type = LOLDU
        super().__post_init__()
        if self.decompose_dtype not in ("float32", "float64"):
            raise ValueError(f"decompose_dtype must be 'float32' or 'float64', got {self.decompose_dtype!r}")
