"""Tiny transformers (bare modules and training bundles for text, images and causal LMs), built from configs with
random weights. Import them from :mod:`loldu.models.tiny`."""

from __future__ import annotations

import torch
from torch import nn

from loldu.models.builders import MINILM_PACKAGE, ModelBundle, offline_package_path, problem_type
from loldu.models.causal_lm import smollm2_tokenizer

# Width of every bare test transformer: hidden 32, 2 layers, 4 heads, MLP 48.
_TEST_SHAPE = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 48}


# -- bare modules for tests ------------------------------------------------------------------------------------------
class TinyMLP(nn.Module):
    """Two linear layers and a head, for fast method-level checks."""

    def __init__(self, dim: int = 12, out: int = 3):
        super().__init__()
        self.fc1 = nn.Linear(dim, 16)
        self.fc2 = nn.Linear(16, dim)
        self.classifier = nn.Linear(dim, out)

    def forward(self, x):
        return self.classifier(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def tiny_bert() -> nn.Module:
    """A random 2-layer BERT sequence classifier (vocabulary 99, 3 labels)."""
    from transformers import BertConfig, BertForSequenceClassification

    return BertForSequenceClassification(
        BertConfig(**_TEST_SHAPE, vocab_size=99, max_position_embeddings=64, num_labels=3)
    )


def tiny_roberta() -> nn.Module:
    """A random 2-layer RoBERTa sequence classifier (vocabulary 99, 2 labels)."""
    from transformers import RobertaConfig, RobertaForSequenceClassification

    return RobertaForSequenceClassification(
        RobertaConfig(**_TEST_SHAPE, vocab_size=99, max_position_embeddings=70, num_labels=2)
    )


def tiny_vit() -> nn.Module:
    """A random 2-layer ViT image classifier (16 px, patch 4, 5 labels)."""
    from transformers import ViTConfig, ViTForImageClassification

    return ViTForImageClassification(ViTConfig(**_TEST_SHAPE, image_size=16, patch_size=4, num_labels=5))


def tiny_llama() -> nn.Module:
    """A random 2-layer LLaMA causal LM (vocabulary 99, 2 key/value heads)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(
        LlamaConfig(**_TEST_SHAPE, num_key_value_heads=2, vocab_size=99, max_position_embeddings=64)
    )


# -- bundles for training runs -------------------------------------------------------------------------------------
def _seeded(build, seed: int):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build()


def tiny_text_classifier(
    num_labels: int, arch: str = "bert", hidden_size: int = 32, layers: int = 2, heads: int = 4, seed: int = 0
) -> ModelBundle:
    """A small random BERT/RoBERTa classifier with MiniLM's (offline) tokenizer (``num_labels=1``: regression).

    Raises:
        ValueError: Unknown ``arch``.
    """
    from transformers import (
        AutoTokenizer,
        BertConfig,
        BertForSequenceClassification,
        RobertaConfig,
        RobertaForSequenceClassification,
    )

    classes = {
        "bert": (BertConfig, BertForSequenceClassification),
        "roberta": (RobertaConfig, RobertaForSequenceClassification),
    }
    if arch not in classes:
        raise ValueError(f"tiny text arch must be one of {sorted(classes)}, got {arch!r}")
    tokenizer = AutoTokenizer.from_pretrained(str(offline_package_path(MINILM_PACKAGE, "model")))
    config_cls, model_cls = classes[arch]
    config = config_cls(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=520,
        num_labels=num_labels,
        problem_type=problem_type(num_labels),
        pad_token_id=tokenizer.pad_token_id,
    )
    return ModelBundle(model=_seeded(lambda: model_cls(config), seed), family="text", tokenizer=tokenizer)


def tiny_image_classifier(
    num_labels: int,
    image_size: int = 32,
    patch_size: int = 8,
    hidden_size: int = 32,
    layers: int = 2,
    heads: int = 4,
    seed: int = 0,
) -> ModelBundle:
    """A small random ViT classifier."""
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(
        image_size=image_size,
        patch_size=patch_size,
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * hidden_size,
        num_labels=num_labels,
    )
    model = _seeded(lambda: ViTForImageClassification(config), seed)
    return ModelBundle(model=model, family="image", image_size=image_size)


def tiny_causal_lm(
    hidden_size: int = 32, layers: int = 2, heads: int = 4, kv_heads: int = 2, seed: int = 0
) -> ModelBundle:
    """A small random LLaMA with SmolLM2's offline tokenizer (vocabulary 49,152)."""
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
    model = _seeded(lambda: LlamaForCausalLM(config), seed)
    return ModelBundle(model=model.eval(), family="causal_lm", tokenizer=tokenizer)
