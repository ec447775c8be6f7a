"""Compose time, torch-free: the resolvers ``conf/`` uses, short names, the run folder a config picks, and the
checks a composed config passes before anything loads.

Nothing here imports torch, Lightning, transformers or the rest of this package (an import-linter contract in
pyproject.toml holds it to that), so ``python train.py ... --cfg job`` answers in about a second.
"""

from loldu.config.checks import check_config, check_rank_fits
from loldu.config.names import ALIASES, EXAMPLE_MODEL, RANKED_METHODS, SPANNING_METHODS, canonical, choice, unescape
from loldu.config.resolvers import register as register_resolvers

register_resolvers()

__all__ = [
    "ALIASES",
    "EXAMPLE_MODEL",
    "RANKED_METHODS",
    "SPANNING_METHODS",
    "canonical",
    "check_config",
    "check_rank_fits",
    "choice",
    "register_resolvers",
    "unescape",
]
