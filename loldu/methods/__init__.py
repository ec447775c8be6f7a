"""The method library: LoLDU and SVFit adapters, PEFT baselines, one entry point.

Plain PyTorch + PEFT; no Lightning, Hydra, OmegaConf or W&B imports here.
Each method registers itself when its module is imported (below): LoLDU and
SVFit with PEFT, so ``peft.get_peft_model(model, LoLDUConfig(...))`` works, and
every method in :data:`METHODS`, the table :func:`apply_method` reads.
"""

from loldu.methods import loldu, melora, svfit  # noqa: F401  (importing a method registers it; .apply: baselines)
from loldu.methods.apply import (
    MethodSpec,
    apply_method,
    check_spec,
    check_targets,
    count_parameters,
    frozen_buffer_count,
    optimizer_param_groups,
)
from loldu.methods.decompose import Factors, fingerprint, lu_factors, svd_factors
from loldu.methods.files.adapter import load_adapter, merge_method, save_adapter
from loldu.methods.files.export import diagonal_to_lora, save_as_diffusers_lora, save_as_peft_lora
from loldu.methods.loldu import LoLDUConfig, LoLDULayer, LoLDUModel
from loldu.methods.registry import METHODS, MethodEntry, get_method, register_method
from loldu.methods.state import adapter_state_dict
from loldu.methods.svfit import SVFitConfig, SVFitLayer, SVFitModel
from loldu.methods.training import (
    after_optimizer_step,
    check_mergeable,
    load_training_state,
    start_training,
    training_penalty,
    training_state,
)

__all__ = [
    "METHODS",
    "Factors",
    "LoLDUConfig",
    "LoLDULayer",
    "LoLDUModel",
    "MethodEntry",
    "MethodSpec",
    "SVFitConfig",
    "SVFitLayer",
    "SVFitModel",
    "adapter_state_dict",
    "after_optimizer_step",
    "load_training_state",
    "training_state",
    "apply_method",
    "check_mergeable",
    "check_spec",
    "check_targets",
    "count_parameters",
    "diagonal_to_lora",
    "fingerprint",
    "frozen_buffer_count",
    "get_method",
    "load_adapter",
    "lu_factors",
    "merge_method",
    "optimizer_param_groups",
    "register_method",
    "save_adapter",
    "save_as_diffusers_lora",
    "save_as_peft_lora",
    "start_training",
    "svd_factors",
    "training_penalty",
]
