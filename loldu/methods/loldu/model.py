"""The LoLDU tuner: injects :class:`LoLDULayer` into a model (PEFT BaseTuner)."""

from __future__ import annotations

from loldu.methods.diagonal.model import DiagonalModel
from loldu.methods.loldu.layer import LoLDULayer


class LoLDUModel(DiagonalModel):
    """PEFT tuner for LoLDU; use through ``peft.get_peft_model(model, LoLDUConfig(...))``."""

    prefix = "loldu_"
    tuner_layer_cls = LoLDULayer
