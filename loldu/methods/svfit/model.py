"""The SVFit tuner: injects :class:`SVFitLayer` into a model (PEFT BaseTuner)."""

from __future__ import annotations

from ..diagonal_model import DiagonalModel
from .layer import SVFitLayer


class SVFitModel(DiagonalModel):
    """PEFT tuner for SVFit; use through ``peft.get_peft_model(model, SVFitConfig(...))``."""

    prefix = "svfit_"
    tuner_layer_cls = SVFitLayer
