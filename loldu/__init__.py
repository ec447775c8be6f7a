"""LoLDU: parameter-efficient fine-tuning by training the diagonal of an LDU factorisation.

The method library's names (``loldu.LoLDUConfig``, ``loldu.apply_method``...) are imported on first use, so that
``import loldu.config`` (compose time) loads no torch. Touching any of them imports :mod:`loldu.methods`, which
registers LoLDU and SVFit with PEFT. Where torch is already loaded (a library user's ``import torch, loldu``), the
import registers them at once, so ``PeftModel.from_pretrained`` of a LoLDU adapter works right after
``import loldu``. The packages and their layers: docs/architecture.md.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

__version__ = "0.1.0"
#: The package's parts: ``loldu.sweeps`` (as Hydra's ``_locate`` of ``loldu.sweeps.SweepCallback`` asks for it)
#: imports that part alone, not the method library.
PARTS = ("config", "methods", "models", "data", "tasks", "run", "sweeps", "eval", "report")


def __getattr__(name: str) -> Any:
    if name.startswith("__") and name != "__all__":
        raise AttributeError(name)
    if name in PARTS:
        return importlib.import_module(f".{name}", __name__)
    methods = importlib.import_module(".methods", __name__)
    if name == "__all__":
        return list(methods.__all__)
    try:
        return getattr(methods, name)
    except AttributeError:
        raise AttributeError(f"module 'loldu' has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted([*globals(), *importlib.import_module(".methods", __name__).__all__])


if "torch" in sys.modules:  # importing the method library costs nothing more then; PEFT learns LoLDU/SVFit
    importlib.import_module(".methods", __name__)
