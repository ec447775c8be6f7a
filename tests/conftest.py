"""Tiny models (from :mod:`loldu.models.tiny`, their one home) with inputs, and fixtures shared by the tests."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before anything imports huggingface_hub
os.environ.setdefault("WANDB_MODE", "disabled")

from loldu.models.tiny import TinyMLP, tiny_bert, tiny_llama, tiny_roberta, tiny_unet, tiny_vit  # noqa: E402

__all__ = ["MODELS", "TinyMLP", "build", "output", "tiny_bert", "tiny_llama", "tiny_roberta", "tiny_unet", "tiny_vit"]


# name -> (builder, targets, head modules, input maker)
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
