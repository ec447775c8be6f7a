"""Tiny models built from configs (no downloads) shared by the tests."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")


class TinyMLP(nn.Module):
    """Two linear layers and a head, for fast method-level checks."""

    def __init__(self, dim: int = 12, out: int = 3):
        super().__init__()
        self.fc1 = nn.Linear(dim, 16)
        self.fc2 = nn.Linear(16, dim)
        self.classifier = nn.Linear(dim, out)

    def forward(self, x):
        return self.classifier(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        vocab_size=99,
        max_position_embeddings=64,
        num_labels=3,
    )
    return BertForSequenceClassification(cfg)


def tiny_roberta():
    from transformers import RobertaConfig, RobertaForSequenceClassification

    cfg = RobertaConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        vocab_size=99,
        max_position_embeddings=70,
        num_labels=2,
    )
    return RobertaForSequenceClassification(cfg)


def tiny_vit():
    from transformers import ViTConfig, ViTForImageClassification

    cfg = ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        image_size=16,
        patch_size=4,
        num_labels=5,
    )
    return ViTForImageClassification(cfg)


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=48,
        vocab_size=99,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(cfg)


# name -> (builder, targets, head modules, input maker, output getter)
def _text_inputs(gen):
    return {"input_ids": torch.randint(3, 99, (2, 9), generator=gen)}


def _image_inputs(gen):
    return {"pixel_values": torch.randn(2, 3, 16, 16, generator=gen)}


def _mlp_inputs(gen):
    return {"x": torch.randn(5, 12, generator=gen)}


MODELS = {
    "mlp": (TinyMLP, ["fc1", "fc2"], ["classifier"], _mlp_inputs),
    "bert": (tiny_bert, ["query", "value"], ["classifier"], _text_inputs),
    "roberta": (tiny_roberta, ["query", "value"], ["classifier"], _text_inputs),
    "vit": (tiny_vit, ["q_proj", "v_proj"], ["classifier"], _image_inputs),
    "llama": (tiny_llama, ["q_proj", "v_proj"], [], _text_inputs),
}


def build(name: str, seed: int = 0):
    """A tiny model in eval mode with fixed weights, its targets, heads and inputs."""
    builder, targets, heads, make_inputs = MODELS[name]
    torch.manual_seed(seed)
    model = builder().eval()
    return model, list(targets), list(heads), make_inputs(torch.Generator().manual_seed(seed + 1))


def output(model, inputs):
    out = model(**inputs)
    return out if isinstance(out, torch.Tensor) else out.logits


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for tests of tiny models: on a busy two-core machine two threads make each small op far
    slower. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tmp_dir(tmp_path):
    return tmp_path
