"""Training checkpoints keep what each method declares as its adapter state, and restore it exactly."""

from __future__ import annotations

import io

import pytest
import torch
from helpers import METHOD_TABLE, build, method_spec, train_a_few_steps
from peft import PeftModel, get_peft_model_state_dict
from peft.tuners._buffer_dict import BufferDict

from loldu.methods import apply_method
from loldu.tasks import FineTuneModule

pytestmark = pytest.mark.usefixtures("one_thread")


class _Module(FineTuneModule):
    def __init__(self, model):
        super().__init__(lr=1e-3)
        self.model = model


def _checkpoint(module: _Module) -> dict:
    """What Lightning writes: the module's state dict through ``on_save_checkpoint``, serialised and read back."""
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)["state_dict"]


def _adapted(method):
    model, targets, heads, inputs = build("bert")
    return apply_method(model, method_spec(method, targets, heads)), inputs


@pytest.mark.parametrize("method", list(METHOD_TABLE))
def test_checkpoint_restores_exactly_the_adapter(method):
    adapted, inputs = _adapted(method)
    train_a_few_steps(adapted, inputs, steps=1)
    trained = _Module(adapted)
    saved = _checkpoint(trained)

    fresh = _Module(_adapted(method)[0])
    with torch.no_grad():  # so that restoring them from the checkpoint shows
        for p in fresh.parameters():
            if p.requires_grad:
                p.add_(0.5)
    assert fresh.strict_loading is False
    fresh.load_state_dict(saved, strict=fresh.strict_loading)
    want = trained.state_dict()
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, want[key]), f"{method}: {key} not restored"
    trainable = {n for n, p in trained.named_parameters() if p.requires_grad}
    assert trainable <= set(saved)

    if isinstance(adapted, PeftModel):
        assert not any(".base_layer." in k or ".original_module." in k for k in saved), "frozen base kept"
        # Everything PEFT itself writes to an adapter file is in the checkpoint too.
        # (PEFT drops the adapter name, "modules_to_save." from kept heads and ".weight" from DoRA's magnitude.)
        ours = {k.removeprefix("model.").replace(".default", "").replace(".modules_to_save", "") for k in saved}
        ours = {k.replace("lora_magnitude_vector.weight", "lora_magnitude_vector") for k in ours}
        peft_keys = {k.replace(".default", "") for k in get_peft_model_state_dict(adapted)}
        assert peft_keys <= ours, sorted(peft_keys - ours)[:5]


def test_checkpoint_keeps_a_declared_buffer_whatever_its_name_and_no_lookalike():
    model, targets, heads, _ = build("mlp")
    adapted = apply_method(model, {"name": "loldu", "r": 4, "target_modules": targets, "head_modules": heads})
    layer = adapted.base_model.model.fc1
    # A method may keep state under any name: what counts is that its layer declares it.
    layer.other_param_names = (*layer.other_param_names, "pivot_cache")
    layer.pivot_cache = BufferDict({"default": torch.arange(4.0)}, persistent=True)
    # A name that looks like an adapter's is not enough.
    adapted.base_model.model.register_buffer("lora_lookalike", torch.zeros(3))
    saved = _checkpoint(_Module(adapted))
    assert torch.equal(saved["model.base_model.model.fc1.pivot_cache.default"], torch.arange(4.0))
    assert "model.base_model.model.lora_lookalike" not in saved
    assert "model.base_model.model.fc1.loldu_fingerprint.default" in saved
    assert not any("base_layer" in k for k in saved)
