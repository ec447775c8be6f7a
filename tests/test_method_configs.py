"""conf/method/*.yaml and the method table agree: a method is one registered entry plus one YAML, and its defaults
live in its config class only (the YAML states none)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import build
from omegaconf import OmegaConf

from loldu.methods import METHODS, MethodEntry, apply_method, get_method, register_method
from loldu.methods.registry import _REGISTRY

CONF = Path(__file__).resolve().parents[1] / "conf"
YAMLS = sorted((CONF / "method").glob("*.yaml"))
# A value that refers to a top-level knob or to the model, with no literal fallback: ${rank},
# ${model.target_modules}, ${pick:${rank},${model.full_rank}}.
REFERENCE = re.compile(r"\$\{[\w.]+\}|\$\{pick:\$\{[\w.]+\}(,\s*\$\{[\w.]+\})*\}")


def _raw(path: Path) -> dict:
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)


def _literal_defaults(node: dict) -> dict:
    """The method settings of a raw method YAML that state a value instead of null or a reference."""
    values = {"r": node.get("r"), "alpha": node.get("alpha"), **(node.get("options") or {})}
    return {k: v for k, v in values.items() if v is not None and not (isinstance(v, str) and REFERENCE.fullmatch(v))}


def test_every_method_has_one_yaml_and_every_yaml_one_method():
    assert {p.stem for p in YAMLS} == set(METHODS)
    for path in YAMLS:
        assert _raw(path)["name"] == path.stem


@pytest.mark.parametrize("path", YAMLS, ids=[p.stem for p in YAMLS])
def test_method_yaml_states_no_default(path):
    node = _raw(path)
    entry = METHODS[node["name"]]
    if entry.members is not None:  # a family (method=peft): its member's config class is known once a run names one
        assert node.get("peft_type") is None and not node.get("config") and not node.get("options"), path.name
        return
    fields = entry.defaults()
    unknown = sorted(set(node.get("options") or {}) - set(fields))
    assert not unknown, f"{path.name}: options {unknown} are not fields of {entry.config_cls}"
    literal = _literal_defaults(node)
    assert not literal, (
        f"{path.name} states {literal}: defaults live in {getattr(entry.config_cls, '__name__', 'the code')}; "
        "write null (or a ${{...}} reference to a top-level knob) instead"
    )
    if entry.rank_field is None:
        assert node.get("r") is None, f"{path.name}: {entry.name} takes no rank"
        takes_options = entry.options_cls or entry.is_peft  # IA3, RoAd, OFT: no rank, PEFT options
        assert takes_options or not node.get("options"), f"{path.name}: {entry.name} takes no options"
    if entry.alpha_field is None:
        assert node.get("alpha") is None, f"{path.name}: {entry.name} takes no alpha"


def test_reference_pattern():
    assert _literal_defaults({"r": "${pick:${rank},8}", "alpha": "${alpha}", "options": {"a": "z0", "b": None}}) == {
        "r": "${pick:${rank},8}",
        "a": "z0",
    }
    assert _literal_defaults({"r": "${pick:${rank},${model.full_rank}}", "options": {"init": "${init}"}}) == {}


def test_top_level_knobs_that_methods_read_agree_with_the_code():
    # ${init} and friends resolve to train.yaml's values: those must be null or the config class's default.
    train = OmegaConf.to_container(OmegaConf.load(CONF / "train.yaml"), resolve=False)
    for path in YAMLS:
        node = _raw(path)
        fields = METHODS[node["name"]].defaults()
        for key, value in (node.get("options") or {}).items():
            match = re.fullmatch(r"\$\{(\w+)\}", str(value))
            if match and match.group(1) in train and train[match.group(1)] is not None:
                assert train[match.group(1)] == fields[key], f"train.yaml {match.group(1)} vs {node['name']}.{key}"


def test_unset_values_take_the_config_class_defaults():
    loldu = get_method("loldu").peft_config(
        None, None, {"init_residual": None, "train_sigma": None}, target_modules=["a"]
    )
    assert (loldu.r, loldu.alpha, loldu.init_residual, loldu.train_sigma) == (64, None, "z0", False)
    lora = get_method("lora").peft_config(None, None, {})
    assert (lora.r, lora.lora_alpha, lora.lora_dropout) == (8, 8, 0.0)  # alpha = rank
    assert get_method("lora").peft_config(4, None, {}).lora_alpha == 4
    fourier = get_method("fourierft").peft_config(None, None, {})
    assert (fourier.n_frequency, fourier.scaling) == (1000, 150.0)
    pissa = get_method("pissa")
    assert pissa.peft_config(None, None, {}).init_lora_weights == "pissa"
    assert pissa.peft_config(None, None, {"init_lora_weights": "pissa_niter_4"}).init_lora_weights == "pissa_niter_4"


def test_values_a_method_does_not_take_are_refused():
    with pytest.raises(ValueError, match="vera takes no alpha"):
        get_method("vera").peft_config(8, 2.0, {})
    with pytest.raises(ValueError, match=r"loldu has no option\(s\) \['lora_dropout'\]"):
        get_method("loldu").peft_config(4, None, {"lora_dropout": 0.1})
    with pytest.raises(ValueError, match="bitfit takes no rank"):
        apply_method(build("mlp")[0], {"name": "bitfit", "r": 4})


def test_a_method_registers_itself_and_apply_method_finds_it():
    entry = MethodEntry("first_layer_only", rank_field=None, trainable=lambda name, spec: name.startswith("fc1."))
    register_method(entry)
    try:
        assert register_method(entry) is entry  # idempotent
        with pytest.raises(ValueError, match="already registered"):
            register_method(MethodEntry("first_layer_only"))
        model = apply_method(build("mlp")[0], {"name": "first_layer_only"})
        assert {n for n, p in model.named_parameters() if p.requires_grad} == {"fc1.weight", "fc1.bias"}
    finally:
        del _REGISTRY["first_layer_only"]
    with pytest.raises(ValueError, match="unknown method 'first_layer_only'"):
        apply_method(build("mlp")[0], {"name": "first_layer_only"})
