"""Bad input is refused with a message that names the fix, before any work is done."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import build, output
from peft import PeftModel, get_peft_model
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import load_file, save_file

from loldu.methods import LoLDUConfig, MethodSpec, SVFitConfig, apply_method, load_adapter, save_adapter
from loldu.models.tiny import TinyMLP


def _untouched(model):
    return not any(isinstance(m, BaseTunerLayer) for m in model.modules())


def test_rank_larger_than_a_layer_is_refused_before_any_layer_changes():
    model, targets, heads, _ = build("bert")  # query/value are 32 x 32
    with pytest.raises(ValueError, match=r"r=33 does not fit .*query.*32x32.*min\(out, in\)"):
        apply_method(model, {"name": "loldu", "r": 33, "target_modules": targets})
    assert _untouched(model)
    with pytest.raises(ValueError, match="does not fit"):
        get_peft_model(model, SVFitConfig(r=40, target_modules=["query"]))
    assert _untouched(model)


def test_rank_is_checked_against_the_smaller_side():
    model = TinyMLP()  # fc1: 16 x 12
    with pytest.raises(ValueError, match=r"\[1, 12\]"):
        get_peft_model(model, LoLDUConfig(r=13, target_modules=["fc1"]))


def test_targets_that_match_nothing_list_what_exists():
    model, *_ = build("vit")
    with pytest.raises(ValueError, match=r"\['query'\] match no Linear layer.*q_proj"):
        apply_method(model, {"name": "loldu", "r": 4, "target_modules": ["query", "q_proj"]})
    assert _untouched(model)
    with pytest.raises(ValueError, match="not found in the base model"):  # PEFT's own check
        get_peft_model(model, LoLDUConfig(r=4, target_modules=["nothing_here"]))


def test_unknown_method_and_options():
    model, *_ = build("mlp")
    with pytest.raises(ValueError, match="unknown method 'lodu'; choose one of loldu, .*svfit"):
        apply_method(model, {"name": "lodu"})
    with pytest.raises(ValueError, match="init must be one of"):
        LoLDUConfig(init="gaussian")
    with pytest.raises(ValueError, match="init_residual must be one of"):
        LoLDUConfig(init_residual="w")
    with pytest.raises(ValueError, match="forward_path must be one of"):
        LoLDUConfig(forward_path="fast")
    with pytest.raises(ValueError, match="r must be a positive integer"):
        LoLDUConfig(r=0)
    with pytest.raises(ValueError, match="head modules \\['head'\\]"):
        apply_method(model, {"name": "lora", "r": 2, "target_modules": ["fc1"], "head_modules": ["head"]})
    with pytest.raises(ValueError, match="linear_probe trains the head only"):
        apply_method(model, MethodSpec(name="linear_probe"))
    with pytest.raises(ValueError, match="Target module LayerNorm.* is not supported. Currently, only the following"):
        get_peft_model(build("bert")[0], LoLDUConfig(r=2, target_modules=["LayerNorm"]))


@pytest.mark.parametrize("method", ["loldu", "svfit"])
def test_adapter_reloaded_onto_a_changed_base_is_refused(method, tmp_path):
    model, targets, heads, inputs = build("bert", seed=0)
    adapted = apply_method(model, {"name": method, "r": 8, "target_modules": targets, "head_modules": heads})
    save_adapter(adapted, tmp_path)
    other, *_ = build("bert", seed=1)  # same architecture, other weights
    with pytest.raises(ValueError, match="different base weight.*Load it onto the exact base model"):
        load_adapter(other, tmp_path)
    # The right base still loads, and a bf16 copy of it (a dtype cast, same base) too.
    same, *_ = build("bert", seed=0)
    load_adapter(same, tmp_path)
    same_bf16, *_ = build("bert", seed=0)
    output(load_adapter(same_bf16.to(torch.bfloat16), tmp_path), inputs)


def test_damaged_pivot_order_is_refused(tmp_path):
    model, targets, heads, _ = build("mlp")
    adapted = apply_method(model, {"name": "loldu", "r": 8, "target_modules": targets})
    save_adapter(adapted, tmp_path)
    path = tmp_path / "adapter_model.safetensors"
    tensors = load_file(path)
    key = next(k for k in tensors if k.endswith("loldu_row_order"))
    tensors[key] = torch.zeros_like(tensors[key])
    save_file(tensors, path)
    with pytest.raises(ValueError, match="modified or damaged"):  # the content hash in method.json
        load_adapter(build("mlp")[0], tmp_path)
    with pytest.raises(ValueError, match="modified or damaged"):  # PEFT's own loader checks the hash too
        PeftModel.from_pretrained(build("mlp")[0], tmp_path)
    (tmp_path / "method.json").unlink()  # as save_pretrained writes it: no hash, the layer checks
    with pytest.raises(ValueError, match="not a permutation"):
        PeftModel.from_pretrained(build("mlp")[0], tmp_path)


def test_pivot_order_from_another_machine_is_replayed(tmp_path):
    """A different (valid) pivot order in the file rebuilds the factors it names."""
    torch.manual_seed(0)
    model = TinyMLP()
    x = torch.randn(3, 12)
    pm = get_peft_model(model, LoLDUConfig(r=12, target_modules=["fc2"]))
    layer = pm.base_model.model.fc2
    with torch.no_grad():
        layer.loldu_z["default"].mul_(1.1)
        want = pm(x)
    pm.save_pretrained(tmp_path)
    # Rewrite the file as if the LU had picked rows in another order: redo the
    # factorisation with that order and store its pivots, keeping z's meaning.
    from loldu.methods import lu_factors

    path = tmp_path / "adapter_model.safetensors"
    tensors = load_file(path)
    rows = layer.loldu_row_order["default"].long()
    swapped = rows.clone()
    swapped[[0, 1]] = swapped[[1, 0]]
    f = lu_factors(layer.base_layer.weight, 12, row_order=swapped, col_order=layer.loldu_col_order["default"])
    prefix = "base_model.model.fc2."
    tensors[prefix + "loldu_row_order"] = swapped.to(torch.int32)
    tensors[prefix + "loldu_d"] = f.d.float()
    save_file(tensors, path)
    torch.manual_seed(0)
    loaded = PeftModel.from_pretrained(TinyMLP(), tmp_path)
    lay = loaded.base_model.model.fc2
    assert torch.equal(lay.loldu_row_order["default"].long(), swapped)
    torch.testing.assert_close(lay.loldu_left["default"], f.left.float())
    assert not torch.allclose(loaded(x), want)  # same z on other factors is another model: so it must be replayed


def test_missing_adapter_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder written by save_adapter"):
        load_adapter(build("mlp")[0], tmp_path / "nope")


def test_plain_method_file_for_another_architecture(tmp_path):
    model, targets, heads, _ = build("bert")
    save_adapter(apply_method(model, {"name": "bitfit", "head_modules": heads}), tmp_path)
    spec = json.loads((tmp_path / "method.json").read_text())
    assert spec["name"] == "bitfit"
    with pytest.raises(ValueError, match="do not fit this model"):
        load_adapter(build("roberta")[0], tmp_path)


def test_bitfit_on_a_model_without_biases_is_refused():
    model, *_ = build("llama")
    with pytest.raises(ValueError, match="no bias"):
        apply_method(model, {"name": "bitfit"})
