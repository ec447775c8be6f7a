"""The compose-time schema cannot drift from the method config classes, and typed checks refuse what they should."""

from __future__ import annotations

import dataclasses
import typing

import pytest
from omegaconf import OmegaConf

from loldu.config.schema import (
    OPTION_SCHEMA,
    Choices,
    check_method_options,
    check_override_types,
    check_value_kind,
    kind,
)
from loldu.methods.diagonal import parts
from loldu.methods.loldu import LoLDUConfig
from loldu.methods.melora import MELoRAConfig
from loldu.methods.svfit import SVFitConfig

#: Fields of the config classes that are not options (the spec's own keys, PEFT's bookkeeping).
NOT_OPTIONS = {"r", "alpha", "target_modules", "modules_to_save", "bias"}


@pytest.mark.parametrize("name, config_cls", [("loldu", LoLDUConfig), ("svfit", SVFitConfig), ("melora", MELoRAConfig)])
def test_the_option_schema_names_every_option_of_the_config_class_with_its_type(name, config_cls):
    own = {
        f
        for cls in config_cls.__mro__
        if cls.__module__.startswith("loldu.")
        for f in vars(cls).get("__annotations__", {})
    }
    fields = {f.name: f for f in dataclasses.fields(config_cls) if f.name in own and f.name not in NOT_OPTIONS}
    assert set(OPTION_SCHEMA[name]) == set(fields)
    hints = typing.get_type_hints(config_cls)
    for key, allowed in OPTION_SCHEMA[name].items():
        default = fields[key].default
        if isinstance(allowed, Choices):
            assert hints[key] is str and default in allowed, key
            continue
        kinds = {kind(t()) for t in typing.get_args(hints[key]) or (hints[key],) if t is not type(None)}
        kinds = {"list" if k == "list" else k for k in kinds}
        if "float" in kinds:
            kinds.add("int")  # a float option takes a whole number too (dropout=0)
        assert kinds == set(allowed), (key, kinds)


def test_the_option_choices_are_the_ones_the_layers_accept():
    schema = OPTION_SCHEMA["loldu"]
    assert schema["init"] == parts.INITS and schema["init_residual"] == parts.INIT_RESIDUALS
    assert schema["forward_path"] == parts.FORWARD_PATHS and schema["recompute"] == parts.RECOMPUTE


@pytest.mark.parametrize(
    "options, match",
    [
        ({"train_sigma": "maybe"}, r"method.options.train_sigma must be true or false for loldu"),
        ({"forward_pth": "auto"}, r"loldu has no option 'forward_pth': did you mean method.options.forward_path\?"),
        (
            {"forward_path": "fusd"},
            r"forward_path='fusd' \(method.options.forward_path\) is not one of auto, activation, weight, fused "
            r"\(did you mean fused\?\)",
        ),
        (
            {"decompose_dtype": 64},
            r"decompose_dtype=64 \(method.options.decompose_dtype\) is not one of float32, float64",
        ),
    ],
)
def test_method_options_are_refused_by_the_schema(options, match):
    cfg = OmegaConf.create({"method": {"name": "loldu", "options": options}})
    with pytest.raises(ValueError, match=match):
        check_method_options(cfg)


def test_good_options_pass_and_other_methods_are_left_to_check_spec():
    check_method_options(OmegaConf.create({"method": {"name": "loldu", "options": {"train_sigma": False}}}))
    check_method_options(OmegaConf.create({"method": {"name": "svfit", "options": {"svd": "lowrank", "init": None}}}))
    check_method_options(OmegaConf.create({"method": {"name": "lora", "options": {"anything": 1}}}))


@pytest.mark.parametrize(
    "value, default, ok",
    [
        (True, False, True),
        ("maybe", False, False),
        (3, 1.5, True),
        (2.5, 3, True),
        ("abc", 3, False),
        (16, "32-true", True),
        ([1], "x", False),
        ("x", [1], False),
        (None, 3, True),
        ("anything", None, True),
    ],
)
def test_a_value_keeps_the_kind_of_its_default(value, default, ok):
    if ok:
        check_value_kind("k", value, default)
    else:
        with pytest.raises(ValueError, match=r"^k must be"):
            check_value_kind("k", value, default)


def test_override_types_compare_against_the_composition_without_the_values():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    defaults = OmegaConf.create({"trainer": {"deterministic": False, "devices": 1}, "task": {"max_length": 128}})
    given = OverridesParser.create().parse_overrides(["trainer.deterministic=maybe", "task.max_length=64"])
    cfg = OmegaConf.create({"trainer": {"deterministic": "maybe", "devices": 1}, "task": {"max_length": 64}})
    with pytest.raises(ValueError, match=r"trainer.deterministic must be true or false, like its default false"):
        check_override_types(cfg, defaults, given)
