"""LightningModules, one per task family (never per method)."""

from .causal_lm import CausalLMModule, masked_lm_loss
from .classification import ClassificationModule
from .common import FineTuneModule

__all__ = ["CausalLMModule", "ClassificationModule", "FineTuneModule", "masked_lm_loss"]
