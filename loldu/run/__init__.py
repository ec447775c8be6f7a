"""One run: the skeleton every task family shares (:func:`train`), its run folder (claimed, status, atomic files),
resuming, checkpoints, the divergence guard, the perf callback, logging, W&B fields and several processes.

``train.py`` calls :func:`train`; the rest of this package is what that one call needs. ``train`` is imported on
first use: Hydra's job logging imports :mod:`loldu.run.logs` while composing, which must load no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["check_run", "fit_to_machine", "resolve_defaults", "skip_unfit_rank", "train"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("loldu.run.skeleton"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
