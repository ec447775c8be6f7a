"""Task families: one module each, holding the family's LightningModule and its :class:`TaskFamily`.

A task config names its family (``task.family``); :func:`get_family` is the only place that maps that name to
code. Adding a family is one module here (a ``FAMILY`` object, a :class:`~loldu.tasks.base.TaskFamily`), one
line in :data:`FAMILIES`, and its task YAML files. Everything loads on first use, so ``import loldu.tasks``
imports no torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loldu.tasks.base import TaskFamily

# task.family -> the module under loldu/tasks/ whose FAMILY runs it (text and image share classification).
FAMILIES = {
    "text": "classification",
    "image": "classification",
    "causal_lm": "causal_lm",
    "diffusion": "diffusion",
}
_EXPORTS = {
    "CausalLMModule": "causal_lm",
    "ClassificationModule": "classification",
    "DiffusionModule": "diffusion",
    "FineTuneModule": "common",
    "TaskFamily": "base",
    "masked_lm_loss": "causal_lm",
}
__all__ = ["FAMILIES", "get_family", *_EXPORTS]


def get_family(name: str) -> TaskFamily:
    """The :class:`~loldu.tasks.base.TaskFamily` that runs tasks of family ``name``.

    Raises:
        ValueError: ``name`` is not a known family (listing them).
    """
    if name not in FAMILIES:
        raise ValueError(f"task family {name!r} is not one of {', '.join(FAMILIES)}")
    return importlib.import_module(f".{FAMILIES[name]}", __name__).FAMILY


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
