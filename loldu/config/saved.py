"""Reading what a run folder saved, as data: ``config.yaml`` (resolved when the run wrote it) and Hydra's
``.hydra/overrides.yaml``. Torch-free, so resuming and reporting can use it before anything heavy loads.

A run folder is shared, copied and downloaded; whatever it holds must never run code or read this machine. So a
saved config is read with a YAML loader that builds only plain data, and refused when any value is still an
interpolation (``${...}``: an OmegaConf resolver such as ``oc.env`` would read the environment, and an
interpolation can point an instantiated node at another node). ``train.py`` writes config.yaml resolved, so a
``${`` in it means the file was edited. Every ``_target_``, at every depth, must then name one of the callables
:data:`TARGET_PACKAGES` allows for its top-level node: the project's own model builders and data modules, and the
optimizer, trainer, callback and logger classes of torch and Lightning. Nodes outside that map may name none.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

#: Top-level node of a run's config -> the dotted prefixes its ``_target_``s may start with.
TARGET_PACKAGES: dict[str, tuple[str, ...]] = {
    "model": ("loldu.models.",),
    "task": ("loldu.data.",),
    "optimizer": ("torch.optim.",),
    "trainer": ("lightning.Trainer", "lightning.pytorch.Trainer", "lightning.pytorch.strategies.", "loldu.run."),
    "callbacks": ("lightning.pytorch.callbacks.", "loldu.run.", "loldu.tasks."),
    "logger": ("lightning.pytorch.loggers.",),
}
_NOT_DATA = "a run folder is data: only load run folders you trust, and rerun the run rather than edit its files"


class UnsafeRunFolder(ValueError):
    """A run folder's file would run code or read the environment if used, or is not the data it should be."""


def read_yaml(path: str | Path) -> Any:
    """The plain data (dicts, lists, strings, numbers) in a YAML file; no Python object tags.

    Raises:
        FileNotFoundError: no such file.
        UnsafeRunFolder: not valid YAML (a truncated or edited file), naming the line.
    """
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise UnsafeRunFolder(
            f"{path} is not valid YAML{where}: the file was truncated or edited; {_NOT_DATA}"
        ) from None
    except UnicodeDecodeError:
        raise UnsafeRunFolder(f"{path} is not UTF-8 text: the file is damaged; {_NOT_DATA}") from None


def interpolations(node: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """``(dotted key, value)`` of every string below ``node`` that OmegaConf would resolve (holds ``${``)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from interpolations(value, f"{where}.{key}" if where else str(key))
            if isinstance(key, str) and "${" in key:
                yield where or "<top>", key
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from interpolations(value, f"{where}[{i}]")
    elif isinstance(node, str) and "${" in node:
        yield where, node


def targets(node: Any, where: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted key of the node, _target_)`` of every node below ``node`` that Hydra would instantiate."""
    if isinstance(node, dict):
        if "_target_" in node:
            yield where or "<top>", node["_target_"]
        for key, value in node.items():
            yield from targets(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from targets(value, f"{where}[{i}]")


def node_of(where: str) -> str:
    """The top-level node of a dotted key (``callbacks.lr._target_`` -> ``callbacks``, ``x[0]`` -> ``x``)."""
    return where.split(".")[0].split("[")[0]


def allowed_target(where: str, target: Any) -> bool:
    """Whether ``target`` (found at dotted key ``where``) names a public dotted path under one of the packages
    :data:`TARGET_PACKAGES` allows for the top-level node of ``where`` (a string check; the run layer also
    checks that it is a callable defined there)."""
    prefixes = TARGET_PACKAGES.get(node_of(where), ())
    if not isinstance(target, str) or not any(target == p or target.startswith(p) for p in prefixes):
        return False
    return all(part.isidentifier() and not part.startswith("_") for part in target.split("."))


def check_saved_config(data: Any, source: str | Path, check_targets: bool = True) -> dict:
    """Refuse a saved config that is not a mapping, holds an interpolation, or (``check_targets``) names a
    ``_target_`` outside :data:`TARGET_PACKAGES`; returns it.

    Raises:
        UnsafeRunFolder: naming the key, the value and why.
    """
    if not isinstance(data, dict):
        raise UnsafeRunFolder(f"{source} does not hold a config (a mapping of settings); {_NOT_DATA}")
    for where, value in interpolations(data):
        raise UnsafeRunFolder(
            f"{source}: {where} = {value!r} is an interpolation, and a run's config.yaml holds resolved values only "
            f"(it was edited): refusing to resolve it, as it could read the environment or pick another node; "
            f"{_NOT_DATA}"
        )
    for where, target in targets(data) if check_targets else ():
        if not allowed_target(where, target):
            node = node_of(where)
            allowed = " or ".join(p.rstrip(".") for p in TARGET_PACKAGES.get(node, ()))
            hint = f"only a public callable of {allowed}" if allowed else "nothing: no _target_ belongs there"
            raise UnsafeRunFolder(
                f"{source}: {where}._target_ = {target!r} is not allowed: a {node} node may name {hint}; "
                f"refusing to use the run folder; {_NOT_DATA}"
            )
    return data


def read_run_config(run_dir: str | Path, check_targets: bool = True) -> dict:
    """A run folder's ``config.yaml`` as plain checked data (:func:`check_saved_config`): the one way every entry
    point (``load_run``, ``resume=``, the eval commands, the report) reads it. The report, which builds nothing
    from it, passes ``check_targets=False``: runs of older versions name builders that have moved since.

    Raises:
        FileNotFoundError: ``run_dir`` is not a run folder (no ``config.yaml``).
        UnsafeRunFolder: the file is damaged, holds an interpolation or names a foreign ``_target_``.
    """
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder: it has no config.yaml (written by train.py)")
    return check_saved_config(read_yaml(path), path, check_targets)


def read_saved_overrides(run_dir: str | Path) -> list[str]:
    """The command-line overrides Hydra recorded for a run (``.hydra/overrides.yaml``), checked as data: a list of
    ``key=value`` strings with no interpolation; [] when the file is missing.

    Raises:
        UnsafeRunFolder: the file is damaged or holds anything else.
    """
    path = Path(run_dir) / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    items = read_yaml(path) or []
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise UnsafeRunFolder(f"{path} does not hold a list of overrides (key=value strings); {_NOT_DATA}")
    for item in items:
        if "${" in item:
            raise UnsafeRunFolder(f"{path}: the override {item!r} holds an interpolation; {_NOT_DATA}")
    return items
