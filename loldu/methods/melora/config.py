"""Configuration of MELoRA adapters."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from peft.config import PeftConfig

from loldu.methods.peft_registry import peft_type

MELORA = peft_type("MELORA")


@dataclass
class MELoRAConfig(PeftConfig):
    """MELoRA (Ren et al., ACL 2024, arXiv 2402.17263): ``n_mini`` mini LoRAs side by side on the diagonal.

    The input of an adapted ``out x in`` layer is cut into ``n_mini`` equal slices and so is its output; mini LoRA
    ``i`` maps input slice ``i`` to output slice ``i``, so the update is block diagonal::

        delta W = scaling * blockdiag(B_1 A_1, ..., B_n A_n),  A_i: (r/n) x (in/n),  B_i: (out/n) x (r/n)

    Naming: ``r`` is the total (equivalent) rank of the update, ``n * (r/n)``; each mini LoRA has rank ``r / n_mini``
    (the paper's "r" is this per-mini rank, its "equivalent rank" our ``r``). An adapted layer trains
    ``(r / n_mini) * (in + out)`` numbers: a LoRA of the same rank ``r`` trains ``n_mini`` times as many.
    ``n_mini = 1`` is LoRA.

    ``scaling = alpha / (r / n_mini)``: each mini LoRA is scaled as a LoRA of its own rank, as in the authors' code
    (``lora_alpha / rank`` per mini LoRA). A is initialised as LoRA's (Kaiming uniform, ``a = sqrt(5)``, fan-in
    ``in / n_mini``), B to zero, so the model starts exactly at the pre-trained one.

    The authors' settings: RoBERTa-base GLUE ``target_modules=["query", "value"]``, 2 mini LoRAs of rank 8
    (``r = 16, n_mini = 2``), ``alpha = 16``, dropout 0.05, lr 4e-4 to 5e-4; Llama-2-7B instruction tuning
    ``["q_proj", "v_proj"]``, 8 mini LoRAs of rank 1 (``r = 8, n_mini = 8``), ``alpha = 16``, lr 3e-4.
    """

    r: int = field(
        default=16,
        metadata={"help": "Total rank of the block-diagonal update (n_mini mini LoRAs of rank r / n_mini each)."},
    )
    n_mini: int = field(
        default=2,
        metadata={"help": "Number of mini LoRAs; must divide r and the in and out features of every target."},
    )
    alpha: float | None = field(
        default=None,
        metadata={"help": "scaling = alpha / (r / n_mini). None means alpha = r / n_mini (scaling 1)."},
    )
    dropout: float = field(default=0.0, metadata={"help": "Dropout on the input of the mini LoRAs (0 <= p < 1)."})
    target_modules: list[str] | str | None = field(
        default=None,
        metadata={"help": "Module names or a regex to adapt; None uses the model family's default (query/value)."},
    )
    exclude_modules: list[str] | str | None = field(
        default=None, metadata={"help": "Module names or a regex to leave alone."}
    )
    bias: str = field(default="none", metadata={"help": "Bias training is not part of the method: 'none'."})
    modules_to_save: list[str] | None = field(
        default=None, metadata={"help": "Modules trained and saved in full besides the adapter, e.g. a new classifier."}
    )
    layers_to_transform: list[int] | int | None = field(
        default=None, metadata={"help": "Only adapt these layer indices."}
    )
    layers_pattern: list[str] | str | None = field(
        default=None, metadata={"help": "Name of the layer list, used with layers_to_transform."}
    )

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = MELORA
        if isinstance(self.target_modules, list):
            self.target_modules = set(self.target_modules)
        if isinstance(self.exclude_modules, list):
            self.exclude_modules = set(self.exclude_modules)
        if self.bias != "none":
            raise ValueError(f"bias must be 'none' for MELoRA, got {self.bias!r}; use method=bitfit to train biases")
        for name in ("r", "n_mini"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MELoRA's {name} must be a positive integer, got {value!r}")
        if self.r % self.n_mini:
            up = -(-self.r // self.n_mini) * self.n_mini
            raise ValueError(
                f"MELoRA's r={self.r} (the total rank) must be divisible by n_mini={self.n_mini}: each of the "
                f"n_mini mini LoRAs has rank r / n_mini. Choose e.g. r={up}, or an n_mini that divides {self.r}"
            )
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"MELoRA's dropout must be in [0, 1), got {self.dropout!r}")
        if self.layers_pattern and self.layers_to_transform is None:
            raise ValueError("layers_pattern is used with layers_to_transform: set layers_to_transform too")

    @property
    def mini_rank(self) -> int:
        """The rank of each mini LoRA, ``r / n_mini``."""
        return self.r // self.n_mini

    @property
    def scaling(self) -> float:
        """``alpha / (r / n_mini)``; 1 when alpha is None."""
        return 1.0 if self.alpha is None else float(self.alpha) / self.mini_rank

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str, subfolder: str | None = None, **kwargs):
        """PEFT's config loader, after the checks of a folder written by :func:`loldu.methods.save_adapter`.

        As for LoLDU (:meth:`loldu.methods.diagonal.DiagonalConfig.from_pretrained`): where the folder holds a
        ``method.json``, the tensors' and ``adapter_config.json``'s content hashes are checked before any layer is
        built (:func:`loldu.methods.files.digests.check_saved_folder`); other folders and hub ids load as in PEFT.

        Raises:
            ValueError: the tensors or ``adapter_config.json`` were modified after saving.
            FileNotFoundError: the folder's tensor file is missing.
        """
        # Deferred: importing loldu.methods.files runs its package, which imports the method configs.
        from loldu.methods.files.digests import check_saved_folder

        folder = Path(pretrained_model_name_or_path, subfolder or "")
        if folder.is_dir():
            check_saved_folder(folder)
        return super().from_pretrained(pretrained_model_name_or_path, subfolder=subfolder, **kwargs)
