"""Every tiny model, built from configs with random weights (offline, no download): one home for tests,
benchmarks and the ``conf/model/tiny_*`` configs.

* Bare modules for method-level tests (``tests/conftest.py``): :class:`TinyMLP`, :func:`tiny_bert`,
  :func:`tiny_roberta`, :func:`tiny_vit`, :func:`tiny_llama`, :func:`tiny_unet` (from :mod:`.diffusion`). They draw
  from the global RNG (the caller seeds it).
* Bundles for training runs (``conf/model/tiny_*.yaml``): :func:`tiny_text_classifier`,
  :func:`tiny_image_classifier`, :func:`tiny_causal_lm` (real offline tokenizers) and :func:`tiny_sd` (in
  :mod:`.diffusion`, with its tokenizer). They take a
  ``seed`` and leave the global RNG as it was.

transformers and diffusers are imported inside the functions, so importing this module stays cheap.
"""

from loldu.models.tiny.classifiers import (
    TinyMLP,
    tiny_bert,
    tiny_causal_lm,
    tiny_image_classifier,
    tiny_llama,
    tiny_roberta,
    tiny_text_classifier,
    tiny_vit,
)
from loldu.models.tiny.diffusion import tiny_clip_text_config, tiny_clip_tokenizer, tiny_sd, tiny_unet

__all__ = [
    "TinyMLP",
    "tiny_bert",
    "tiny_causal_lm",
    "tiny_clip_text_config",
    "tiny_clip_tokenizer",
    "tiny_image_classifier",
    "tiny_llama",
    "tiny_roberta",
    "tiny_sd",
    "tiny_text_classifier",
    "tiny_unet",
    "tiny_vit",
]
