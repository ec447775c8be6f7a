"""The SVFit tuner: injects :class:`SVFitLayer` into a model (PEFT BaseTuner)."""

from __future__ import annotations

from loldu.methods.diagonal.model import DiagonalModel
from loldu.methods.svfit.layer import SVFitLayer


class SVFitModel(DiagonalModel):
    """PEFT tuner for SVFit; use through ``peft.get_peft_model(model, SVFitConfig(...))``."""

    prefix = "svfit_"
    tuner_layer_cls = SVFitLayer
