"""What LoLDU and SVFit share, in PEFT's tuner shape: the config base (:mod:`.config`), the layer with its frozen
factor pair around a trained diagonal (:mod:`.layer`), the tuner (:mod:`.model`), weighted combinations
(:mod:`.combine`), mixed-adapter batches (:mod:`.mixed`), the fused autograd (:mod:`.fused`), option values and the
initial z (:mod:`.parts`) and the compact saved state (:mod:`.saved_state`).
"""

from loldu.methods.diagonal.config import DiagonalConfig
from loldu.methods.diagonal.layer import DiagonalLayer, dz_grad_costs
from loldu.methods.diagonal.model import DiagonalModel
from loldu.methods.diagonal.parts import (
    FORWARD_PATHS,
    INIT_RESIDUALS,
    INITS,
    RECOMPUTE,
    FactorStore,
    initial_z,
    validate_common,
)

__all__ = [
    "FORWARD_PATHS",
    "INITS",
    "INIT_RESIDUALS",
    "RECOMPUTE",
    "DiagonalConfig",
    "DiagonalLayer",
    "DiagonalModel",
    "FactorStore",
    "dz_grad_costs",
    "initial_z",
    "validate_common",
]
