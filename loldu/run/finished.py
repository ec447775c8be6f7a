"""Working with finished run folders: rebuild the trained model from ``config.yaml`` and ``adapter/`` (a run
folder is data: only the project's own builders are instantiated), and write its merged model once.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from loldu.config import register_resolvers
from loldu.methods import load_adapter
from loldu.run.exports import save_merged
from loldu.tasks import get_family

#: The nodes of a saved config that are ever instantiated, and the package their ``_target_``s must come from:
#: rebuilding a run calls the project's own model builders and data modules, nothing a run folder names elsewhere.
TRUSTED_TARGETS = {"model": "loldu.models", "task": "loldu.data"}


def load_config(run_dir: str | Path) -> DictConfig:
    """The resolved config a run saved.

    Raises:
        FileNotFoundError: ``run_dir`` is not a run folder (no ``config.yaml``).
    """
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder: it has no config.yaml (written by train.py)")
    register_resolvers()  # read outside Hydra: a saved config may still name them
    cfg = OmegaConf.load(path)
    check_targets(cfg, path)
    return cfg


def check_targets(cfg: DictConfig, source: str | Path = "config.yaml") -> None:
    """Refuse a saved config whose model or task nodes name a ``_target_`` outside the project's own builders
    (:data:`TRUSTED_TARGETS`), before anything is instantiated: a shared run folder must not run code.

    Raises:
        ValueError: naming the node, the target and the package it must come from.
    """
    for node, package in TRUSTED_TARGETS.items():
        container = OmegaConf.to_container(cfg[node], resolve=False) if node in cfg else None
        for where, target in _targets(container, node):
            if not _trusted(target, package):
                raise ValueError(
                    f"{source}: {where}._target_ = {target!r} is not one of this project's builders (a callable "
                    f"defined in {package}); refusing to rebuild the run. Only load run folders you trust, and "
                    f"point {where}._target_ at a {package} function"
                )


def _targets(node: Any, where: str):
    """``(path, _target_)`` of every node below ``node`` that Hydra would instantiate."""
    if isinstance(node, dict):
        if "_target_" in node:
            yield where, node["_target_"]
        for key, value in node.items():
            yield from _targets(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _targets(value, f"{where}[{i}]")


def _trusted(target: Any, package: str) -> bool:
    """Whether ``target`` names a public callable defined in ``package`` (found without leaving it)."""
    if not isinstance(target, str) or not target.startswith(package + "."):
        return False
    obj: Any = importlib.import_module(package)
    for part in target[len(package) + 1 :].split("."):
        if not part.isidentifier() or part.startswith("_"):
            return False
        if isinstance(obj, ModuleType) and not hasattr(obj, part):
            try:
                importlib.import_module(f"{obj.__name__}.{part}")  # a submodule of the package
            except ImportError:
                return False
        obj = getattr(obj, part, None)
        if isinstance(obj, ModuleType) and not obj.__name__.startswith(package + "."):
            return False
    defined_in = getattr(obj, "__module__", None) or ""
    in_package = defined_in == package or defined_in.startswith(package + ".")
    return callable(obj) and not isinstance(obj, ModuleType) and in_package


def load_run(run_dir: str | Path) -> tuple[DictConfig, Any, Any]:
    """Rebuild a finished run's model: the base from its builder, then its saved adapter.

    Returns:
        ``(config, bundle, adapted model)``; for diffusion runs the adapted model is the UNet.

    Raises:
        FileNotFoundError: no config.yaml or no adapter/ in ``run_dir``.
    """
    run_dir = Path(run_dir)
    cfg = load_config(run_dir)
    adapter = run_dir / "adapter"
    if not adapter.is_dir():
        raise FileNotFoundError(f"{run_dir} has no adapter/ folder: the run did not finish training")
    bundle = instantiate(cfg.model.builder, _convert_="all")
    return cfg, bundle, load_adapter(get_family(cfg.task.family).base_model(bundle), adapter)


def ensure_merged(run_dir: str | Path) -> Path:
    """``run_dir/merged``: the run's model with the method merged in, written once (with the tokenizer).

    For diffusion runs the merged UNet goes to ``merged/unet``. An existing ``merged/`` is reused.
    """
    run_dir = Path(run_dir)
    out = run_dir / "merged"
    if (out / "config.json").is_file() or (out / "unet" / "config.json").is_file():
        return out
    cfg, bundle, model = load_run(run_dir)
    save_merged(model, out, bundle.tokenizer, get_family(cfg.task.family).merged_subdir)
    return out
