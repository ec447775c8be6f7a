"""Fields shared by the LoLDU and SVFit adapter configs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from peft.config import PeftConfig

from loldu.methods.diagonal.parts import validate_common


@dataclass
class DiagonalConfig(PeftConfig):
    """Common settings of adapters that train a diagonal between frozen factors.

    ``W_eff = W + left diag(sigma z - sigma0 ref) right`` with ``sigma0 = alpha / r``.
    """

    r: int = field(
        default=64,
        metadata={
            "help": "Kept rank per adapted matrix (1 <= r <= min(out, in) of the matrix factorised: a "
            "convolution's kernel reads as out x in/groups*kernel, an embedding as num_embeddings x dim)."
        },
    )
    alpha: float | None = field(
        default=None,
        metadata={"help": "sigma0 = alpha / r. None means alpha = r (sigma0 = 1), as in the paper's scripts."},
    )
    target_modules: list[str] | str | None = field(
        default=None,
        metadata={"help": "Module names or a regex to adapt; None uses the model family's default (query/value)."},
    )
    exclude_modules: list[str] | str | None = field(
        default=None, metadata={"help": "Module names or a regex to leave alone."}
    )
    init: str = field(
        default="lu",
        metadata={
            "help": "Initial z: lu (the kept diagonal itself), uniform, normal, constant, ones, zeros, "
            "s_uniform, s_normal (the paper's ablation)."
        },
    )
    init_residual: str = field(
        default="z0",
        metadata={
            "help": "What the update subtracts: z0 (z's initial value: the model starts exactly at the "
            "pre-trained one) or d (the kept diagonal, as the authors' experiment code did)."
        },
    )
    init_weights: bool = field(
        default=True,
        metadata={
            "help": "PEFT's switch for where an adapter starts. True: init and init_residual as given (by default "
            "the model starts exactly at the pre-trained one). False: start away from it, as PEFT's tests ask of "
            "every tuner: init_residual becomes d, and init lu (which would then cancel) becomes s_normal."
        },
    )
    train_sigma: bool = field(
        default=False,
        metadata={
            "help": "Train the scale sigma as well as z. Off by default: the authors' code trains z only, and "
            "experiments/sigma_fidelity found no difference it could measure (+0.3 points [-0.5, +1.1])."
        },
    )
    forward_path: str = field(
        default="auto",
        metadata={
            "help": "auto (cheaper of activation/fused by shape per call), activation, weight "
            "(autograd through the merged weight) or fused (merged-weight forward, rank-r gradient)."
        },
    )
    recompute: str = field(
        default="auto",
        metadata={
            "help": "Fused path only: whether the backward rebuilds the merged weight W_eff (out x in) instead of "
            "keeping it from the forward. always (least memory: only the layer input is kept, at out*r*in more "
            "multiply-adds per step), never (keep it: fastest), auto (rebuild when training and W_eff would be "
            "larger than the layer input kept anyway, i.e. out_features > tokens in the call)."
        },
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
        if isinstance(self.target_modules, list):
            self.target_modules = set(self.target_modules)
        if isinstance(self.exclude_modules, list):
            self.exclude_modules = set(self.exclude_modules)
        if self.bias != "none":
            # A TypeError, as for PEFT configs without a bias argument (PEFT's tests skip bias cases on it).
            raise TypeError(
                f"{type(self).__name__} does not support bias={self.bias!r}: bias training is not part of the "
                "method, only bias='none' is accepted; use method=bitfit to train biases"
            )
        if not self.init_weights:
            self.init_residual = "d"
            if self.init == "lu":
                self.init = "s_normal"
        validate_common(self)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str, subfolder: str | None = None, **kwargs):
        """PEFT's config loader, after the checks of a folder written by :func:`loldu.methods.save_adapter`.

        ``PeftModel.from_pretrained(base, folder)`` and ``PeftModel.load_adapter`` read the config through this
        before any layer is built or weight loaded: where the folder holds a ``method.json``, the tensors' and
        ``adapter_config.json``'s content hashes from its ``"saved"`` record and the config's rank are checked as
        :func:`~loldu.methods.load_adapter` does (:func:`loldu.methods.files.digests.check_saved_folder`; a folder
        saved before the hashes existed loads with a warning). A folder
        written by ``save_pretrained`` (no ``method.json``) or a hub id loads as in PEFT. A config passed to
        ``PeftModel.from_pretrained(..., config=...)`` skips this loader, and with it these checks.

        Raises:
            ValueError: the tensors or ``adapter_config.json`` were modified after saving, or the config's rank
                disagrees with the tensors.
            FileNotFoundError: the folder's tensor file is missing.
        """
        # Deferred: importing loldu.methods.files runs its package, which imports the method configs.
        from loldu.methods.files.digests import check_saved_folder

        folder = Path(pretrained_model_name_or_path, subfolder or "")
        if folder.is_dir():
            check_saved_folder(folder)
        return super().from_pretrained(pretrained_model_name_or_path, subfolder=subfolder, **kwargs)
