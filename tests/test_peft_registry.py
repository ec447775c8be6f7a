"""What loldu relies on inside PEFT: checked so that an upgrade fails here, loudly."""

from __future__ import annotations

import importlib.metadata
import json

import pytest
import torch
from peft import PeftConfig, PeftModel, get_peft_model
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_PREFIX_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer
from peft.utils.peft_types import PeftType

from loldu.methods import LoLDUConfig, LoLDUModel, SVFitConfig, SVFitModel
from loldu.methods.peft_registry import PEFT_VERSION_TESTED, peft_type, register_with_peft
from loldu.models.tiny import TinyMLP


def test_peft_is_the_pinned_version():
    assert importlib.metadata.version("peft") == PEFT_VERSION_TESTED, (
        "peft changed: re-check loldu/methods/peft_registry.py and diagonal*.py against it, then update the pin"
    )


def test_methods_are_registered_as_peft_types():
    assert PeftType.LOLDU.value == "LOLDU" and PeftType("SVFIT") is PeftType.SVFIT
    assert PeftType.LOLDU in list(PeftType)
    assert PEFT_TYPE_TO_CONFIG_MAPPING[PeftType.LOLDU] is LoLDUConfig
    assert PEFT_TYPE_TO_TUNER_MAPPING[PeftType.SVFIT] is SVFitModel
    assert PEFT_TYPE_TO_PREFIX_MAPPING[PeftType.LOLDU] == "loldu_"
    register_with_peft(PeftType.LOLDU, LoLDUConfig, LoLDUModel)  # idempotent
    assert PEFT_TYPE_TO_TUNER_MAPPING[PeftType.LOLDU] is LoLDUModel


def test_peft_type_adds_a_real_enum_member_once():
    # The one place that relies on the private layout of PEFT's str-enum.
    member = peft_type("LOLDU_TEST_ONLY")
    try:
        assert peft_type("LOLDU_TEST_ONLY") is member is PeftType("LOLDU_TEST_ONLY") is PeftType.LOLDU_TEST_ONLY
        assert isinstance(member, PeftType) and member == "LOLDU_TEST_ONLY" and member.name == "LOLDU_TEST_ONLY"
        assert member in list(PeftType) and "LOLDU_TEST_ONLY" in PeftType.__members__
    finally:  # leave PEFT's enum as the package has it
        del PeftType._member_map_["LOLDU_TEST_ONLY"], PeftType._value2member_map_["LOLDU_TEST_ONLY"]
        PeftType._member_names_.remove("LOLDU_TEST_ONLY")
        type.__delattr__(PeftType, "LOLDU_TEST_ONLY")
    with pytest.raises(ValueError, match="upper case"):
        peft_type("loldu")


def test_registering_another_model_under_a_taken_type_is_refused():
    class Other(LoLDUModel):
        pass

    with pytest.raises(KeyError, match="already"):
        register_with_peft(PeftType.LOLDU, LoLDUConfig, Other)


def test_private_hooks_we_override_still_exist():
    for hook in (
        "_pre_injection_hook",
        "_create_and_replace",
        "_prepare_adapter_config",
        "_check_target_module_exists",
    ):
        assert hasattr(BaseTuner, hook), hook
    for attr in ("adapter_layer_names", "other_param_names", "frozen_peft_weight_names", "merged_adapters"):
        assert hasattr(BaseTunerLayer, attr), attr
    from peft.tuners._buffer_dict import BufferDict  # noqa: F401  (persistent per-adapter state)


def test_config_round_trips_through_adapter_config_json(tmp_path):
    torch.manual_seed(0)
    pm = get_peft_model(TinyMLP(), LoLDUConfig(r=3, target_modules=["fc1"], init="normal", decompose_dtype="float64"))
    pm.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "adapter_config.json").read_text())
    assert data["peft_type"] == "LOLDU" and data["init"] == "normal" and data["r"] == 3
    config = PeftConfig.from_pretrained(tmp_path)
    assert isinstance(config, LoLDUConfig) and config.decompose_dtype == "float64"
    torch.manual_seed(0)
    assert isinstance(PeftModel.from_pretrained(TinyMLP(), tmp_path).peft_config["default"], LoLDUConfig)


@pytest.mark.parametrize("config_cls", [LoLDUConfig, SVFitConfig])
def test_init_weights_is_peft_switch_between_identity_and_a_moved_start(tmp_path, config_cls):
    # PEFT's generic tests build every tuner with init_weights=False and expect the output to move at once
    x = torch.randn(5, 12, dtype=torch.float64)
    torch.manual_seed(0)
    base = TinyMLP().double()
    expected = base(x)
    outputs = {}
    for flag in (True, False):
        model = get_peft_model(
            base_copy(base),
            config_cls(r=4, target_modules=["fc1", "fc2"], init_weights=flag),
        )
        outputs[flag] = model(x)
        config = model.peft_config["default"]
        assert (config.init, config.init_residual) == (("lu", "z0") if flag else ("s_normal", "d"))
    torch.testing.assert_close(outputs[True], expected, rtol=0, atol=1e-12)
    assert (outputs[False] - expected).abs().max() > 1e-3
    # an explicit init other than lu is kept; the saved config reloads to the same settings
    config = config_cls(r=4, target_modules=["fc1"], init="uniform", init_weights=False)
    assert (config.init, config.init_residual) == ("uniform", "d")
    get_peft_model(base_copy(base), config).save_pretrained(tmp_path)
    loaded = PeftConfig.from_pretrained(tmp_path)
    assert (loaded.init, loaded.init_residual, loaded.init_weights) == ("uniform", "d", False)


def base_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A fresh TinyMLP with ``model``'s weights (get_peft_model adapts its argument in place)."""
    copy = TinyMLP().to(next(model.parameters()).dtype)
    copy.load_state_dict(model.state_dict())
    return copy


def test_half_precision_base_keeps_factors_in_its_dtype():
    # PEFT upcasts adapter BufferDicts to float32; the frozen factors must not
    # be among them (memory), while z and sigma are float32 as PEFT intends.
    pm = get_peft_model(TinyMLP().to(torch.bfloat16), SVFitConfig(r=4, target_modules=["fc1"]))
    layer = pm.base_model.model.fc1
    assert layer.svfit_left["default"].dtype == torch.bfloat16
    assert layer.svfit_z["default"].dtype == torch.float32


def test_saved_file_holds_only_small_tensors(tmp_path):
    pm = get_peft_model(TinyMLP(), LoLDUConfig(r=12, target_modules=["fc1", "fc2"]))
    pm.save_pretrained(tmp_path)
    from safetensors.torch import load_file

    tensors = load_file(tmp_path / "adapter_model.safetensors")
    names = {k.rsplit(".", 1)[-1] for k in tensors}
    assert names == {
        "loldu_z",
        "loldu_sigma",
        "loldu_ref",
        "loldu_d",
        "loldu_fingerprint",
        "loldu_row_order",
        "loldu_col_order",
    }
    assert max(t.numel() for t in tensors.values()) <= 16  # vectors only: no factor matrices


def test_peft_merge_fails_for_vera_with_a_kept_roberta_head_and_ours_does_not():
    # Known PEFT 0.21.2 limitation that merge_method works around; if this starts
    # passing in PEFT, merge_method can defer to merge_and_unload for VeRA/FourierFT.
    from helpers import build, output

    from loldu.methods import apply_method, merge_method

    model, targets, heads, inputs = build("roberta")
    adapted = apply_method(model, {"name": "vera", "r": 8, "target_modules": targets, "head_modules": heads})
    with torch.no_grad():
        want = output(adapted, inputs)
    with pytest.raises(AttributeError, match="RobertaClassificationHead"):
        adapted.merge_and_unload()
    plain = merge_method(adapted)
    with torch.no_grad():
        torch.testing.assert_close(output(plain, inputs), want, rtol=1e-4, atol=1e-5)
