"""OmegaConf resolvers used by conf/ (registered on import, idempotent)."""

from __future__ import annotations

from omegaconf import OmegaConf


def _pick(*values):
    """The first value that is not null: ``${pick:${rank},${model.full_rank}}``."""
    return next((v for v in values if v is not None), None)


if not OmegaConf.has_resolver("pick"):
    OmegaConf.register_new_resolver("pick", _pick)
