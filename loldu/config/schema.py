"""Types of settings, checked while composing (torch-free), so that ``lr=abc``, ``task.max_length=abc``,
``trainer.deterministic=maybe`` or ``method.options.train_sigma=maybe`` is refused in about the time of
``--cfg job``.

Two sources of types, neither a copy of the configs:

* the configs themselves: every value a command line overrides must have the kind of the value it replaces in the
  same composition without the command line's values (:func:`check_override_types`: a bool stays a bool, an int an
  int, a list a list), so each group's YAML file is its own schema;
* :data:`OPTION_SCHEMA`: the options of this project's own methods (LoLDU, SVFit, MELoRA), whose defaults the
  method YAML files leave null (one source of defaults: the config classes). ``tests/test_config_schema.py`` checks
  it against ``LoLDUConfig``, ``SVFitConfig`` and ``MELoRAConfig`` so they cannot drift apart. Options of PEFT's
  methods are checked against their config classes when the run starts (:func:`loldu.methods.check_spec`).
"""

from __future__ import annotations

import difflib
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

_MISSING = object()


class Choices(tuple):
    """The values an option takes (strings)."""


#: LoLDU's and SVFit's options: name -> the values it takes (:class:`Choices`) or the kinds it takes.
_DIAGONAL_OPTIONS: dict[str, Choices | tuple[str, ...]] = {
    "init": Choices(("lu", "uniform", "normal", "constant", "ones", "zeros", "s_uniform", "s_normal")),
    "init_residual": Choices(("z0", "d")),
    "init_weights": ("bool",),
    "train_sigma": ("bool",),
    "forward_path": Choices(("auto", "activation", "weight", "fused")),
    "recompute": Choices(("auto", "always", "never")),
    "layers_to_transform": ("list", "int"),
    "layers_pattern": ("list", "str"),
    "exclude_modules": ("list", "str"),
}
OPTION_SCHEMA: dict[str, dict[str, Choices | tuple[str, ...]]] = {
    "loldu": {**_DIAGONAL_OPTIONS, "decompose_dtype": Choices(("float32", "float64"))},
    "svfit": {**_DIAGONAL_OPTIONS, "svd": Choices(("full", "lowrank")), "svd_niter": ("int",), "svd_seed": ("int",)},
    "melora": {
        "n_mini": ("int",),
        "dropout": ("float", "int"),  # dropout=0 is a number too
        "layers_to_transform": ("list", "int"),
        "layers_pattern": ("list", "str"),
        "exclude_modules": ("list", "str"),
    },
}


def kind(value: Any) -> str | None:
    """``bool``, ``int``, ``float``, ``str``, ``list`` or ``dict`` (None for null)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, (list, tuple, ListConfig)):
        return "list"
    if isinstance(value, (dict, DictConfig)):
        return "dict"
    return "str"


#: The kinds a value may take where its default has a kind (a null given, or a null default, is not checked).
ACCEPTS = {
    "bool": ("bool",),
    "int": ("int", "float"),  # limit_val_batches=1.0 (a share) where the default is a count; epochs: VALUE_RULES
    "float": ("float", "int"),
    "str": ("str", "int", "float"),  # a path or name that looks like a number; precision=16
    "list": ("list",),
    "dict": ("dict",),
}
EXAMPLES = {"bool": "true or false", "int": "a number", "float": "a number", "list": "a list [a, b]"}


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (DictConfig, ListConfig)):
        return str(OmegaConf.to_container(value, resolve=False))
    return repr(value) if isinstance(value, str) else str(value)


def check_value_kind(key: str, value: Any, default: Any, source: str = "") -> None:
    """Refuse ``value`` for ``key`` when its kind differs from ``default``'s (:data:`ACCEPTS`).

    Raises:
        ValueError: naming the key, the value given and the kind expected.
    """
    want, have = kind(default), kind(value)
    if want is None or have is None or have in ACCEPTS[want]:
        return
    expected = EXAMPLES.get(want, f"a {want}")
    raise ValueError(
        f"{key} must be {expected}, like its default {_shown(default)}{source} (got {key}={_shown(value)})"
    )


def check_override_types(cfg: DictConfig, defaults: DictConfig, overrides: list) -> None:
    """Refuse a command-line value whose kind differs from the value it replaced (``defaults``: the same
    composition with only the command line's group choices).

    Args:
        cfg: the composed config.
        defaults: the config composed from the same groups without the command line's values.
        overrides: the command line's parsed overrides (Hydra ``Override`` objects).

    Raises:
        ValueError: the first mismatch, naming the key, the value and the expected kind.
    """
    for override in overrides:
        key = override.key_or_group
        if override.is_delete() or key.split(".")[0].split("/")[0] == "hydra":
            continue
        default = OmegaConf.select(defaults, key, default=_MISSING, throw_on_resolution_failure=False)
        if default is _MISSING:  # a group choice, or a key the command line added (checked elsewhere)
            continue
        value = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
        check_value_kind(key, value, default, " in the config")


def check_method_options(cfg: DictConfig) -> None:
    """Refuse an option LoLDU or SVFit does not have (with the closest name), or a value it does not take.

    Raises:
        ValueError: naming ``method.options.<key>``, the value and what it takes.
    """
    name = cfg.method.get("name")
    schema = OPTION_SCHEMA.get(name)
    options = cfg.method.get("options")
    if schema is None or not options:
        return
    for key in options:
        value = options[key]
        if key not in schema:
            close = difflib.get_close_matches(str(key), list(schema), n=1, cutoff=0.6)
            hint = f"did you mean method.options.{close[0]}? " if close else ""
            raise ValueError(f"{name} has no option {key!r}: {hint}its options are {', '.join(sorted(schema))}")
        if value is None:
            continue
        allowed = schema[key]
        if isinstance(allowed, Choices):
            if value not in allowed:
                close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1, cutoff=0.6)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise ValueError(
                    f"method={name}: {key}={_shown(value)} (method.options.{key}) is not one of "
                    f"{', '.join(allowed)}{hint}; e.g. method.options.{key}={allowed[0]}"
                )
        elif kind(value) not in allowed:
            expected = " or ".join(EXAMPLES.get(k, f"a {k}") for k in allowed)
            raise ValueError(
                f"method.options.{key} must be {expected} for {name} (got method.options.{key}={_shown(value)})"
            )
