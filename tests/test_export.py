"""LoLDU/SVFit adapters exported as plain LoRA: PEFT and diffusers load them and give the same outputs."""

from __future__ import annotations

import copy
import json
import os

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors import safe_open
from safetensors.torch import load_file

from loldu.methods import LoLDUConfig, apply_method, merge_method
from loldu.methods.diagonal import DiagonalLayer
from loldu.methods.files.export import diagonal_to_lora, save_as_diffusers_lora, save_as_peft_lora
from loldu.models.tiny import tiny_bert, tiny_llama, tiny_unet

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _perturb(model, seed: int = 1) -> None:
    """Move every trainable parameter (z, sigma, heads) away from its initial value."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))


def _adapted(builder, spec: dict):
    """(adapted model, a state dict of the untouched base) with fixed weights."""
    torch.manual_seed(0)
    base = builder().eval()
    weights = copy.deepcopy(base.state_dict())
    model = apply_method(base, spec).eval()
    _perturb(model)
    return model, weights


def _fresh(builder, weights):
    model = builder().eval()
    model.load_state_dict(weights)
    return model


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


# -- PEFT -------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["loldu", "svfit"])
def test_peft_lora_export_gives_the_same_logits(tmp_path, method):
    model, weights = _adapted(tiny_llama, {"name": method, "r": 8, "target_modules": ["q_proj", "v_proj"]})
    ids = torch.randint(3, 99, (2, 9), generator=torch.Generator().manual_seed(3))
    expected = _logits(model, ids)

    out = save_as_peft_lora(model, tmp_path / "lora")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
    assert config["r"] == 8 and config["lora_alpha"] == 8
    assert sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    keys = load_file(str(out / "adapter_model.safetensors"))
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in keys
    assert len(keys) == 2 * 2 * 2  # 2 layers x (q, v) x (A, B)

    fresh = _fresh(tiny_llama, weights)
    base_logits = _logits(fresh, ids)
    loaded = PeftModel.from_pretrained(fresh, str(out)).eval()
    assert type(loaded.base_model).__name__ == "LoraModel"
    got = _logits(loaded, ids)
    assert not torch.allclose(base_logits, expected, atol=1e-3)  # the adapter does change the model
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_lora_factors_reproduce_the_update_and_honour_dtype():
    model, _ = _adapted(tiny_llama, {"name": "loldu", "r": 8, "target_modules": ["q_proj", "v_proj"]})
    tensors, info = diagonal_to_lora(model)
    assert info["r"] == 8 and info["lora_alpha"] == 8 and info["method"] == "loldu"
    assert info["rank_pattern"] == {} and info["modules_to_save"] == []
    layers = {n: m for n, m in model.get_base_model().named_modules() if isinstance(m, DiagonalLayer)}
    assert sorted(info["layers"]) == sorted(layers)
    for path, layer in layers.items():
        a, b = tensors[f"{path}.lora_A.weight"], tensors[f"{path}.lora_B.weight"]
        assert a.dtype == torch.float32 and a.shape == (8, layer.in_features) and b.shape == (layer.out_features, 8)
        torch.testing.assert_close(b @ a, layer.get_delta_weight("default").detach(), atol=1e-6, rtol=1e-5)
    half, _ = diagonal_to_lora(model, dtype=torch.bfloat16)
    assert {t.dtype for t in half.values()} == {torch.bfloat16}
    base, _ = diagonal_to_lora(model, dtype="base")
    assert {t.dtype for t in base.values()} == {torch.float32}


def test_peft_lora_export_keeps_heads_and_per_layer_ranks(tmp_path):
    spec = {"name": "loldu", "r": 8, "target_modules": ["query", "value"], "head_modules": ["classifier"]}
    torch.manual_seed(0)
    base = tiny_bert().eval()
    weights = copy.deepcopy(base.state_dict())
    model = apply_method(base, spec).eval()
    # Re-create one layer's adapter at rank 4: ranks now differ per layer.
    odd = model.get_base_model().bert.encoder.layer[1].attention.self.value
    odd.update_layer("default", LoLDUConfig(r=4, target_modules=["value"]))
    _perturb(model)
    ids = torch.randint(3, 99, (2, 9), generator=torch.Generator().manual_seed(3))
    expected = _logits(model, ids)

    out = save_as_peft_lora(model, tmp_path / "lora")
    config = json.loads((out / "adapter_config.json").read_text())
    path = "bert.encoder.layer.1.attention.self.value"
    assert config["r"] == 8 and config["rank_pattern"] == {path: 4} and config["alpha_pattern"] == {path: 4}
    assert config["modules_to_save"] == ["classifier"]
    keys = load_file(str(out / "adapter_model.safetensors"))
    assert {"base_model.model.classifier.weight", "base_model.model.classifier.bias"} <= set(keys)

    loaded = PeftModel.from_pretrained(_fresh(tiny_bert, weights), str(out)).eval()
    lora_value = loaded.get_base_model().bert.encoder.layer[1].attention.self.value
    assert lora_value.r["default"] == 4 and lora_value.scaling["default"] == 1.0
    torch.testing.assert_close(_logits(loaded, ids), expected, atol=1e-5, rtol=1e-5)


def test_export_refusals(tmp_path):
    model, _ = _adapted(tiny_llama, {"name": "loldu", "r": 4, "target_modules": ["q_proj"]})
    with pytest.raises(ValueError, match="not a LoLDU/SVFit adapter.*'default'"):
        diagonal_to_lora(model, adapter_name="other")
    model.merge_adapter()
    with pytest.raises(ValueError, match="unmerge"):
        save_as_peft_lora(model, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()
    model.unmerge_adapter()
    assert diagonal_to_lora(model)[1]["layers"]  # fine again once unmerged

    with pytest.raises(ValueError, match="no LoLDU or SVFit layers"):
        diagonal_to_lora(tiny_llama())
    lora = get_peft_model(tiny_llama(), LoraConfig(r=2, target_modules=["q_proj"]))
    with pytest.raises(ValueError, match="no LoLDU or SVFit layers"):
        save_as_peft_lora(lora, tmp_path / "lora")

    spec = {"name": "loldu", "r": 4, "target_modules": ["query"], "head_modules": ["classifier"]}
    headed, _ = _adapted(tiny_bert, spec)
    with pytest.raises(ValueError, match="modules_to_save"):
        save_as_diffusers_lora(headed, tmp_path / "diffusers")


# -- diffusers ------------------------------------------------------------------------
def _unet_inputs():
    gen = torch.Generator().manual_seed(2)
    return torch.randn(2, 4, 8, 8, generator=gen), torch.tensor([3, 500]), torch.randn(2, 5, 32, generator=gen)


def _denoise(unet, inputs):
    sample, steps, text = inputs
    with torch.no_grad():
        return unet(sample, steps, encoder_hidden_states=text).sample


@pytest.fixture(scope="module")
def adapted_unet():
    model, weights = _adapted(tiny_unet, {"name": "loldu", "r": 8, "target_modules": UNET_TARGETS})
    inputs = _unet_inputs()
    return model, weights, inputs, _denoise(model, inputs)


def test_diffusers_lora_export_loads_in_plain_diffusers(tmp_path, adapted_unet):
    from diffusers import StableDiffusionPipeline

    model, weights, inputs, expected = adapted_unet
    name = "pytorch_lora_weights.safetensors"
    out = save_as_diffusers_lora(model, tmp_path / "lora")
    assert (out / name).is_file()
    tensors = load_file(str(out / name))
    assert all(k.startswith("unet.") and (".lora_A." in k or ".lora_B." in k) for k in tensors)
    assert len(tensors) == 2 * 32  # 8 attention modules x 4 projections, A and B each
    with safe_open(str(out / name), "pt") as f:
        meta = json.loads(f.metadata()["lora_adapter_metadata"])
    assert meta["unet.r"] == 8 and meta["unet.lora_alpha"] == 8
    assert sorted(meta["unet.target_modules"]) == sorted(UNET_TARGETS)

    # The model-level loader, as the brief's users call it.
    unet = _fresh(tiny_unet, weights)
    assert not torch.allclose(_denoise(unet, inputs), expected, atol=1e-3)
    unet.load_lora_adapter(str(out), weight_name=name, prefix="unet")
    assert any(isinstance(m, BaseTunerLayer) for m in unet.modules())
    torch.testing.assert_close(_denoise(unet, inputs), expected, atol=1e-5, rtol=1e-5)

    # The pipeline's loader (load_lora_weights = lora_state_dict + load_lora_into_unet for the UNet part).
    unet = _fresh(tiny_unet, weights)
    state, alphas, metadata = StableDiffusionPipeline.lora_state_dict(str(out), return_lora_metadata=True)
    assert alphas is None and all("lora" in k for k in state)
    StableDiffusionPipeline.load_lora_into_unet(state, alphas, unet=unet, metadata=metadata)
    torch.testing.assert_close(_denoise(unet, inputs), expected, atol=1e-5, rtol=1e-5)

    # Without the metadata diffusers infers lora_alpha = r from the shapes: still scale 1, still exact.
    unet = _fresh(tiny_unet, weights)
    unet.load_lora_adapter(tensors, prefix="unet")
    torch.testing.assert_close(_denoise(unet, inputs), expected, atol=1e-5, rtol=1e-5)


def test_merged_unet_saves_as_a_plain_diffusers_model(tmp_path, adapted_unet):
    from diffusers import UNet2DConditionModel

    model, _, inputs, expected = adapted_unet
    merged = merge_method(copy.deepcopy(model))
    assert type(merged) is UNet2DConditionModel
    assert not any(isinstance(m, BaseTunerLayer) for m in merged.modules())
    merged.save_pretrained(tmp_path / "unet")
    reloaded = UNet2DConditionModel.from_pretrained(tmp_path / "unet").eval()
    torch.testing.assert_close(_denoise(reloaded, inputs), expected, atol=1e-5, rtol=1e-5)
