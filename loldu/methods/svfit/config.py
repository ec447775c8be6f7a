"""Configuration of SVFit adapters."""

from __future__ import annotations

from dataclasses import dataclass, field

from loldu.methods.diagonal.config import DiagonalConfig
from loldu.methods.peft_registry import peft_type

SVFIT = peft_type("SVFIT")


@dataclass
class SVFitConfig(DiagonalConfig):
    """SVFit (arXiv 2409.05926): ``W_eff = W + U_r diag(sigma s - sigma0 s0) V_r^T``.

    The top-r singular vectors are frozen; the r singular values (and, unless
    ``train_sigma=False``, one scale) are trained. Same targets and ranks as
    LoLDU; the paper trains singular values only, which is ``train_sigma=False``.
    """

    svd: str = field(
        default="full",
        metadata={"help": "full (torch.linalg.svd) or lowrank (randomized torch.svd_lowrank, for large r)."},
    )
    svd_niter: int = field(default=4, metadata={"help": "Subspace iterations of the randomized SVD."})
    svd_seed: int = field(default=0, metadata={"help": "Seed of the randomized SVD (so a reload repeats it)."})

    def __post_init__(self):
        self.peft_type = SVFIT
        super().__post_init__()
        if self.svd not in ("full", "lowrank"):
            raise ValueError(f"svd must be 'full' or 'lowrank', got {self.svd!r}")
