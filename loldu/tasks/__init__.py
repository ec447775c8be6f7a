"""LightningModules, one per task family (never per method)."""

from .classification import ClassificationModule

__all__ = ["ClassificationModule"]
