"""Pieces of :mod:`loldu.methods.diagonal` that need no layer: option values and checks, the initial z, factor storage.

Every name here is re-exported from :mod:`loldu.methods.diagonal`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

FORWARD_PATHS = ("auto", "activation", "weight", "fused")
RECOMPUTE = ("auto", "always", "never")


class FactorStore(nn.Module):
    """Non-persistent per-adapter buffers, kept in the base layer's dtype.

    Not a PEFT ``BufferDict`` on purpose: PEFT upcasts those to float32 for
    half-precision bases, which would double the memory of the frozen factors
    (the largest thing LoLDU adds). ``Module.to`` still moves them.
    """

    def __init__(self):
        super().__init__()
        self._names: list[str] = []

    def __setitem__(self, name: str, value: torch.Tensor) -> None:
        self.register_buffer(f"f_{name}", value, persistent=False)
        if name not in self._names:
            self._names.append(name)

    def __getitem__(self, name: str) -> torch.Tensor:
        return getattr(self, f"f_{name}")

    def __delitem__(self, name: str) -> None:
        delattr(self, f"f_{name}")
        self._names.remove(name)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def keys(self) -> list[str]:
        return list(self._names)


def initial_z(init: str, d: torch.Tensor) -> torch.Tensor:
    """Initial value of z for the paper's ablation (method.md), from the kept pivots d.

    Random variants draw from torch's global generator (seeded by the caller).
    """
    r = d.numel()
    m = d.mean()
    s = d.std(unbiased=False)
    if init == "lu":
        return d.clone()
    if init == "uniform":
        half = m.abs() / 2
        return (torch.rand(r) * 2 - 1).to(d) * half
    if init == "normal":
        return torch.randn(r).to(d) * s + m
    if init == "constant":
        return torch.full_like(d, float(m))
    if init == "ones":
        return torch.ones_like(d)
    if init == "zeros":
        return torch.zeros_like(d)
    if init == "s_uniform":
        return (torch.rand(r) * 2 - 1).to(d)
    if init == "s_normal":
        return torch.randn(r).to(d)
    raise ValueError(f"unknown init {init!r}; choose one of {INITS}")


INITS = ("lu", "uniform", "normal", "constant", "ones", "zeros", "s_uniform", "s_normal")
INIT_RESIDUALS = ("z0", "d")


def validate_common(config) -> None:
    """Checks shared by LoLDUConfig and SVFitConfig (called from __post_init__)."""
    if not isinstance(config.r, int) or isinstance(config.r, bool) or config.r < 1:
        raise ValueError(f"r must be a positive integer, got {config.r!r}")
    if config.alpha is not None and not (isinstance(config.alpha, (int, float)) and math.isfinite(config.alpha)):
        raise ValueError(f"alpha must be a finite number or None (meaning alpha = r), got {config.alpha!r}")
    if config.init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {config.init!r}")
    if config.init_residual not in INIT_RESIDUALS:
        raise ValueError(f"init_residual must be one of {INIT_RESIDUALS}, got {config.init_residual!r}")
    if config.forward_path not in FORWARD_PATHS:
        raise ValueError(f"forward_path must be one of {FORWARD_PATHS}, got {config.forward_path!r}")
    if config.recompute not in RECOMPUTE:
        raise ValueError(
            f"recompute must be one of {RECOMPUTE}, got {config.recompute!r}: 'always' rebuilds the merged weight "
            "in the fused backward (least memory), 'never' keeps it, 'auto' decides per call"
        )
