"""Compose time, torch-free: the resolvers ``conf/`` uses, short names, the run folder a config picks, and the
checks a composed config passes before anything loads.

Nothing here imports torch, Lightning, transformers or the rest of this package (an import-linter contract in
pyproject.toml holds it to that), so ``python train.py ... --cfg job`` answers in about a second. Importing it
registers nothing: Hydra's plugin scan registers the resolvers (``hydra_plugins/loldu_resolvers.py``), and code
that reads a config outside Hydra calls :func:`register_resolvers`.
"""

from loldu.config.checks import check_config, check_rank_fits
from loldu.config.names import ALIASES, EXAMPLE_MODEL, RANKED_METHODS, SPANNING_METHODS, canonical, choice, unescape
from loldu.config.refusal import is_refusal, mark_refusal, refuse
from loldu.config.resolvers import register as register_resolvers

__all__ = [
    "ALIASES",
    "EXAMPLE_MODEL",
    "RANKED_METHODS",
    "SPANNING_METHODS",
    "canonical",
    "check_config",
    "check_rank_fits",
    "choice",
    "is_refusal",
    "mark_refusal",
    "refuse",
    "register_resolvers",
    "unescape",
]
