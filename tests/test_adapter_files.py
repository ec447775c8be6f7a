"""Saved adapter files: tamper-evident, tied to their base, small, and older files still load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import build, output
from peft import PeftModel
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import load_file, save_file

from loldu.methods import apply_method, load_adapter, save_adapter
from loldu.models.tiny import TinyMLP

FIXTURES = Path(__file__).parent / "fixtures" / "adapters_ad962e4"
PEFT_FILE = "adapter_model.safetensors"


def _untouched(model) -> bool:
    return not any(isinstance(m, BaseTunerLayer) for m in model.modules())


def _flip_byte(path: Path, suffix: str) -> str:
    """Flip one bit in the middle of the data of the first tensor whose name ends with ``suffix``."""
    data = bytearray(path.read_bytes())
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    name = next(k for k in sorted(header) if k.endswith(suffix))
    start, end = header[name]["data_offsets"]
    data[8 + size + (start + end) // 2] ^= 0x40
    path.write_bytes(bytes(data))
    return name


PLAIN = ("bitfit", "full", "linear_probe")  # no rank, targets or options


def _mlp_spec(method: str, **options) -> dict:
    if method in PLAIN:
        return {"name": method, "head_modules": ["classifier"]}
    return {
        "name": method,
        "r": 4,
        "target_modules": ["fc1", "fc2"],
        "head_modules": ["classifier"],
        "options": options,
    }


def _saved_mlp(tmp_path: Path, method: str = "loldu", **options) -> Path:
    torch.manual_seed(0)
    adapted = apply_method(TinyMLP(), _mlp_spec(method, **options))
    with torch.no_grad():
        for p in adapted.parameters():
            if p.requires_grad:
                p.add_(0.05)
    save_adapter(adapted, tmp_path / "a")
    return tmp_path / "a"


def _fresh_mlp():
    torch.manual_seed(0)
    return TinyMLP()


@pytest.mark.parametrize("method", ["loldu", "svfit"])
def test_sigma_is_one_dimensional(method):
    adapted = apply_method(_fresh_mlp(), _mlp_spec(method))
    for name, p in adapted.named_parameters():
        if p.requires_grad:
            assert p.dim() >= 1, name  # FSDP refuses 0-dim parameters


@pytest.mark.parametrize("method", ["loldu", "svfit"])
def test_files_saved_before_these_checks_still_load(method, tmp_path):
    """Written by tests/fixtures/make_old_adapters.py at ad962e4: 0-dim sigma, int32 orders, ref and d, no hash."""
    folder = tmp_path / method
    shutil.copytree(FIXTURES / method, folder)
    old = load_file(folder / PEFT_FILE)
    assert any(k.endswith("_sigma") and v.dim() == 0 for k, v in old.items())
    expected = load_file(folder / "expected.safetensors")
    with pytest.warns(UserWarning, match="cannot be verified"):
        loaded = load_adapter(_fresh_mlp(), folder)
    with torch.no_grad():
        torch.testing.assert_close(loaded(expected["probe"]), expected["output"])
    assert loaded.base_model.model.fc1.get_parameter(f"{method}_sigma.default").shape == (1,)
    save_adapter(loaded, tmp_path / "resaved")  # and re-saving writes the current format
    again = load_adapter(_fresh_mlp(), tmp_path / "resaved")
    with torch.no_grad():
        torch.testing.assert_close(again(expected["probe"]), expected["output"])


@pytest.mark.parametrize("suffix", ["loldu_z", "loldu_sigma", "loldu_ref", "loldu_d", "classifier.weight"])
def test_flipped_byte_is_refused_before_anything_is_applied(suffix, tmp_path):
    folder = _saved_mlp(tmp_path, init="normal")  # ref = z0 differs from d, so both are stored
    _flip_byte(folder / PEFT_FILE, suffix)
    base = _fresh_mlp()
    with pytest.raises(ValueError, match=rf"{PEFT_FILE}: .*modified or damaged; re-save it"):
        load_adapter(base, folder)
    assert _untouched(base)


@pytest.mark.parametrize("method", ["full", "bitfit", "linear_probe"])
def test_plain_file_with_missing_or_extra_tensors_is_refused(method, tmp_path):
    model, _, heads, _ = build("bert")
    save_adapter(apply_method(model, {"name": method, "head_modules": heads}), tmp_path)
    path = tmp_path / "trainable.safetensors"
    original = load_file(path)
    tensors = dict(original)
    dropped = sorted(tensors)[0]
    del tensors[dropped]
    save_file(tensors, path)
    from loldu.methods.files.integrity import tensor_digest

    spec = json.loads((tmp_path / "method.json").read_text())
    spec["saved"]["tensors_sha256"] = tensor_digest(path)  # a consistent but incomplete file
    (tmp_path / "method.json").write_text(json.dumps(spec))
    base, *_ = build("bert")
    with pytest.raises(ValueError, match=rf"trainable.safetensors does not hold exactly .*missing \['{dropped}'\]"):
        load_adapter(base, tmp_path)
    assert all(p.requires_grad for p in base.parameters())  # nothing applied
    if method == "full":
        return  # every parameter is trained: nothing can be extra
    tensors[dropped] = original[dropped]
    tensors["bert.embeddings.word_embeddings.weight"] = base.bert.embeddings.word_embeddings.weight.detach()
    save_file(tensors, path)
    del spec["saved"]  # an older file: no hash, so only the listing catches it
    (tmp_path / "method.json").write_text(json.dumps(spec))
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"missing \[\], unexpected \['bert.embeddings"):
        load_adapter(build("bert")[0], tmp_path)


@pytest.mark.parametrize("method", ["loldu", "svfit", "lora", "pissa", "vera", "fourierft", "bitfit", "linear_probe"])
def test_adapter_onto_another_base_is_refused_naming_the_base(method, tmp_path):
    model, targets, heads, _ = build("bert", seed=0)
    model.config._name_or_path = "org/bert-tiny"
    spec = {"name": method, "r": 4, "target_modules": targets, "head_modules": heads}
    if method in PLAIN:
        spec = {"name": method, "head_modules": heads}
    count = len(list(model.parameters()))
    save_adapter(apply_method(model, spec), tmp_path)
    saved = json.loads((tmp_path / "method.json").read_text())["saved"]
    assert saved["tensors_sha256"] and saved["base_architecture"]["parameters"] == count
    assert bool(saved["base_fingerprints"]) == (method not in ("loldu", "svfit"))  # theirs are in the tensor file
    other, *_ = build("bert", seed=1)
    with pytest.raises(ValueError, match=r"different base weight.*trained from: org/bert-tiny"):
        load_adapter(other, tmp_path)
    assert _untouched(other) and all(p.requires_grad for p in other.parameters())
    load_adapter(build("bert", seed=0)[0], tmp_path)  # the right base loads


def test_full_checks_the_architecture(tmp_path):
    model, _, heads, _ = build("bert")
    save_adapter(apply_method(model, {"name": "full"}), tmp_path)
    with pytest.raises(ValueError, match=r"trainable.safetensors: its tensors do not fit this model.*architecture"):
        load_adapter(build("roberta")[0], tmp_path)


@pytest.mark.parametrize("method", ["loldu", "lora"])
def test_edited_rank_in_the_config_is_refused_as_a_disagreement(method, tmp_path):
    folder = _saved_mlp(tmp_path, method)
    config_file = folder / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["r"] = 2
    config_file.write_text(json.dumps(config))
    base = _fresh_mlp()
    with pytest.raises(ValueError, match=r"adapter_config.json: r=2 in the config, but the tensors .* have r=4"):
        load_adapter(base, folder)
    assert _untouched(base)
    if method == "loldu":  # PEFT's own loader runs the same check on a folder of save_adapter
        base = _fresh_mlp()
        with pytest.raises(ValueError, match=r"adapter_config.json: r=2 in the config, but the tensors .* have r=4"):
            PeftModel.from_pretrained(base, folder)
        assert _untouched(base)
        (folder / "method.json").unlink()  # as written by save_pretrained: the layer says the same
        with pytest.raises(ValueError, match="says r=2 but the saved loldu_z has shape \\(4,\\): the config and"):
            PeftModel.from_pretrained(_fresh_mlp(), folder)


def _edit_config(folder: Path, **changes) -> None:
    config_file = folder / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config.update(changes)
    config_file.write_text(json.dumps(config, indent=2))


EDITS = {
    "alpha": {"alpha": 8.0},
    "target_modules": {"target_modules": ["fc1"]},
    "init": {"init": "zeros"},
}


@pytest.mark.parametrize("method", ["loldu", "svfit"])
@pytest.mark.parametrize("edit", sorted(EDITS))
def test_config_edited_after_saving_is_refused_by_both_loaders(method, edit, tmp_path):
    folder = _saved_mlp(tmp_path, method)
    _edit_config(folder, **EDITS[edit])
    refused = r"adapter_config.json was modified after the adapter was saved: .*hash stored in method.json .*"
    refused += r"Put the original file back, or re-save the adapter from the run"
    base = _fresh_mlp()
    with pytest.raises(ValueError, match=refused):
        load_adapter(base, folder)
    assert _untouched(base)
    base = _fresh_mlp()
    with pytest.raises(ValueError, match=refused):
        PeftModel.from_pretrained(base, folder)
    assert _untouched(base)


def test_flipped_tensor_byte_is_refused_by_peft_loader_too(tmp_path):
    folder = _saved_mlp(tmp_path)
    _flip_byte(folder / PEFT_FILE, "loldu_z")
    base = _fresh_mlp()
    with pytest.raises(ValueError, match=rf"{PEFT_FILE}: .*modified or damaged; re-save it"):
        PeftModel.from_pretrained(base, folder)
    assert _untouched(base)


def test_config_reformatted_without_changing_a_value_still_loads(tmp_path):
    folder = _saved_mlp(tmp_path)
    want = load_adapter(_fresh_mlp(), folder)(torch.ones(2, 12))
    config_file = folder / "adapter_config.json"
    config = json.loads(config_file.read_text())
    reordered = dict(reversed(list(config.items())))
    config_file.write_text(json.dumps(reordered, indent=7) + "\n\n")
    torch.testing.assert_close(load_adapter(_fresh_mlp(), folder)(torch.ones(2, 12)), want)
    torch.testing.assert_close(PeftModel.from_pretrained(_fresh_mlp(), folder)(torch.ones(2, 12)), want)


def test_folder_saved_before_the_config_hash_warns_and_loads(tmp_path):
    folder = _saved_mlp(tmp_path)
    spec = json.loads((folder / "method.json").read_text())
    del spec["saved"]["config_sha256"]
    (folder / "method.json").write_text(json.dumps(spec))
    with pytest.warns(UserWarning, match="adapter_config.json was saved without a content hash"):
        load_adapter(_fresh_mlp(), folder)
    with pytest.warns(UserWarning, match="adapter_config.json was saved without a content hash"):
        PeftModel.from_pretrained(_fresh_mlp(), folder)


def test_folder_of_save_pretrained_loads_as_in_peft(tmp_path):
    folder = _saved_mlp(tmp_path)
    (folder / "method.json").unlink()
    _edit_config(folder, alpha=8.0)  # nothing to compare with: PEFT's loader takes it as it is
    assert PeftModel.from_pretrained(_fresh_mlp(), folder).peft_config["default"].alpha == 8.0


@pytest.mark.parametrize("edit", [{"lora_alpha": 64}, {"target_modules": ["fc1"]}, {"lora_dropout": 0.5}])
def test_lora_config_edited_after_saving_is_refused(edit, tmp_path):
    folder = _saved_mlp(tmp_path, "lora")
    _edit_config(folder, **edit)
    base = _fresh_mlp()
    with pytest.raises(ValueError, match=r"adapter_config.json was modified after the adapter was saved"):
        load_adapter(base, folder)
    assert _untouched(base)


def test_plain_methods_record_no_config_hash(tmp_path):
    folder = _saved_mlp(tmp_path, "bitfit")
    assert json.loads((folder / "method.json").read_text())["saved"]["config_sha256"] is None
    load_adapter(_fresh_mlp(), folder)


def test_orders_are_small_integers_and_a_reference_equal_to_the_pivots_is_stored_once(tmp_path):
    model, targets, heads, inputs = build("bert")
    adapted = apply_method(model, {"name": "loldu", "r": 8, "target_modules": targets, "head_modules": heads})
    with torch.no_grad():
        for p in adapted.parameters():
            if p.requires_grad:
                p.mul_(1.01)
        want = output(adapted, inputs)
    save_adapter(adapted, tmp_path)
    tensors = load_file(tmp_path / PEFT_FILE)
    orders = [v for k, v in tensors.items() if k.endswith("_order")]
    assert orders and all(v.dtype == torch.uint8 for v in orders)  # 32 rows fit in a byte
    refs = [v for k, v in tensors.items() if k.endswith("loldu_ref")]
    assert refs and all(v.numel() == 0 for v in refs)  # "same as d"
    loaded = load_adapter(build("bert")[0], tmp_path)
    torch.testing.assert_close(output(loaded, inputs), want)
    layer = loaded.base_model.model.bert.encoder.layer[0].attention.self.query
    torch.testing.assert_close(layer.loldu_ref["default"], layer.loldu_d["default"])


@pytest.mark.parametrize("method", ["loldu", "lora"])
def test_saved_while_merged_is_tied_to_the_unmerged_base(method, tmp_path):
    model, targets, heads, inputs = build("bert")
    adapted = apply_method(model, {"name": method, "r": 4, "target_modules": targets, "head_modules": heads})
    with torch.no_grad():
        for p in adapted.parameters():
            if p.requires_grad:
                p.add_(0.05)
        want = output(adapted, inputs)
    adapted.merge_adapter()
    save_adapter(adapted, tmp_path)
    loaded = load_adapter(build("bert")[0], tmp_path)  # the fingerprints are of the base, not the merged weights
    torch.testing.assert_close(output(loaded, inputs), want, rtol=1e-4, atol=1e-5)
