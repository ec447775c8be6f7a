"""The method library: LoLDU and SVFit adapters, PEFT baselines, one entry point.

Plain PyTorch + PEFT; no Lightning, Hydra, OmegaConf or W&B imports here.
Importing this package registers LoLDU and SVFit with PEFT, so
``peft.get_peft_model(model, LoLDUConfig(...))`` works.
"""

from . import peft_registry
from .apply import (
    METHODS,
    MethodSpec,
    apply_method,
    check_targets,
    count_parameters,
    frozen_buffer_count,
    optimizer_param_groups,
)
from .decompose import Factors, fingerprint, lu_factors, svd_factors
from .export import diagonal_to_lora, save_as_diffusers_lora, save_as_peft_lora
from .io import load_adapter, merge_method, save_adapter
from .loldu import LoLDUConfig, LoLDULayer, LoLDUModel
from .svfit import SVFitConfig, SVFitLayer, SVFitModel

peft_registry.register()

__all__ = [
    "METHODS",
    "Factors",
    "LoLDUConfig",
    "LoLDULayer",
    "LoLDUModel",
    "MethodSpec",
    "SVFitConfig",
    "SVFitLayer",
    "SVFitModel",
    "apply_method",
    "check_targets",
    "count_parameters",
    "diagonal_to_lora",
    "fingerprint",
    "frozen_buffer_count",
    "load_adapter",
    "lu_factors",
    "merge_method",
    "optimizer_param_groups",
    "save_adapter",
    "save_as_diffusers_lora",
    "save_as_peft_lora",
    "svd_factors",
]
