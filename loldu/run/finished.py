"""Working with finished run folders: rebuild the trained model from ``config.yaml`` and ``adapter/`` (a run
folder is data: read by :mod:`loldu.config.saved`, only allowed builders are instantiated), and write its merged
model once.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from loldu.config.saved import TARGET_PACKAGES, UnsafeRunFolder, allowed_target, node_of, read_run_config, targets
from loldu.methods import load_adapter
from loldu.run.exports import save_merged
from loldu.tasks import get_family


def load_config(run_dir: str | Path) -> DictConfig:
    """The config a run saved, read as data (:func:`loldu.config.saved.read_run_config`: no interpolation, every
    ``_target_`` within :data:`~loldu.config.saved.TARGET_PACKAGES`) and each ``_target_`` then checked to be a
    public callable defined in that package (:func:`check_targets`).

    Raises:
        FileNotFoundError: ``run_dir`` is not a run folder (no ``config.yaml``).
        UnsafeRunFolder: (a ValueError) the file is damaged, holds an interpolation or names a foreign target.
    """
    path = Path(run_dir) / "config.yaml"
    data = read_run_config(run_dir)
    check_targets(data, path)
    return OmegaConf.create(data)  # no interpolation left to resolve


def check_targets(config: dict | DictConfig, source: str | Path = "config.yaml") -> None:
    """Refuse a config any of whose ``_target_``s, at any depth, is not a public callable defined in a package
    :data:`~loldu.config.saved.TARGET_PACKAGES` allows for its node: a shared run folder must not run code, nor can
    a resumed run's command line make it.

    Raises:
        UnsafeRunFolder: naming the node, the target and the packages it must come from.
    """
    data = OmegaConf.to_container(config, resolve=False) if isinstance(config, DictConfig) else config
    for where, target in targets(data):
        node = node_of(where)
        packages = TARGET_PACKAGES.get(node, ())
        if not (allowed_target(where, target) and _trusted(str(target), packages, _kind(node))):
            what = _WHAT.get(node, "nothing: no _target_ belongs there")
            shown = " or ".join(p.rstrip(".") for p in packages)
            raise UnsafeRunFolder(
                f"{source}: {where}._target_ = {target!r} is not allowed: a {node} node may name {what}"
                + (f" defined in {shown}" if shown else "")
                + f"; refusing to build from it. Only load run folders you trust, and point {where}._target_ at one"
            )


#: What each instantiated node of a run's config may name (checked by :func:`_kind`).
_WHAT = {
    "model": "one of this project's builders (a public callable)",
    "task": "a LightningDataModule class",
    "optimizer": "a torch optimizer class",
    "trainer": "the Lightning Trainer or a strategy class",
    "callbacks": "a Lightning callback class",
    "logger": "a Lightning logger class",
}


def _kind(node: str) -> tuple[type, ...] | None:
    """The classes a ``_target_`` in top-level ``node`` must be (a subclass of); None: any callable (builders)."""
    import lightning as L
    import torch
    from lightning.pytorch.loggers import Logger
    from lightning.pytorch.strategies import Strategy

    return {
        "task": (L.LightningDataModule,),
        "optimizer": (torch.optim.Optimizer,),
        "trainer": (L.Trainer, Strategy),
        "callbacks": (L.Callback,),
        "logger": (Logger,),
    }.get(node)


def _trusted(target: str, packages: tuple[str, ...], kind: tuple[type, ...] | None = None) -> bool:
    """Whether ``target`` names a public callable defined in one of ``packages`` (found without leaving it), and
    a subclass of ``kind`` where given: a saved callback node can only build a callback, not call a function."""
    for prefix in packages:
        package = prefix.rstrip(".")
        if prefix.endswith(".") and target.startswith(prefix):
            head, rest = package, target[len(prefix) :].split(".")
        elif target == prefix:  # a class named in full (lightning.Trainer)
            head, rest = target.rsplit(".", 1)[0], [target.rsplit(".", 1)[1]]
            package = head
        else:
            continue
        obj = _defined_in(head, rest, package)
        if obj is not None and (kind is None or (isinstance(obj, type) and issubclass(obj, kind))):
            return True
    return False


def _defined_in(head: str, parts: list[str], package: str) -> Any:
    """What ``head.parts...`` names if it resolves, through ``package``'s own modules only, to a callable defined
    in the package's distribution; None otherwise."""
    try:
        obj: Any = importlib.import_module(head)
    except ImportError:
        return None
    for part in parts:
        if not part.isidentifier() or part.startswith("_"):
            return None
        if isinstance(obj, ModuleType) and not hasattr(obj, part):
            try:
                importlib.import_module(f"{obj.__name__}.{part}")  # a submodule of the package
            except ImportError:
                return None
        obj = getattr(obj, part, None)
        if isinstance(obj, ModuleType) and not (obj.__name__ == package or obj.__name__.startswith(package + ".")):
            return None
    defined_in = getattr(obj, "__module__", None) or ""
    top = package.split(".")[0]
    in_package = defined_in == top or defined_in.startswith(top + ".")
    return obj if callable(obj) and not isinstance(obj, ModuleType) and in_package else None


def load_run(run_dir: str | Path) -> tuple[DictConfig, Any, Any]:
    """Rebuild a finished run's model: the base from its builder, then its saved adapter.

    Returns:
        ``(config, bundle, adapted model)``; for diffusion runs the adapted model is the UNet, or for textual
        inversion the text encoder (with the new word's tokens in ``bundle.tokenizer``).

    Raises:
        FileNotFoundError: no config.yaml or no adapter/ in ``run_dir``.
    """
    run_dir = Path(run_dir)
    cfg = load_config(run_dir)
    bundle, model = _rebuild(run_dir, cfg)
    return cfg, bundle, model


def _rebuild(run_dir: Path, cfg: DictConfig) -> tuple[Any, Any]:
    """``(bundle, adapted model)`` of the run in ``run_dir`` whose checked config is ``cfg`` (:func:`load_run`)."""
    adapter = run_dir / "adapter"
    if not adapter.is_dir():
        raise FileNotFoundError(f"{run_dir} has no adapter/ folder: the run did not finish training")
    family = get_family(cfg.task.family)
    bundle = instantiate(cfg.model.builder, _convert_="all")
    family.extend_bundle(cfg, bundle)  # what training added before the method (textual inversion's tokens)
    return bundle, load_adapter(family.base_model(bundle), adapter)


def ensure_merged(run_dir: str | Path) -> Path:
    """``run_dir/merged``: the run's model with the method merged in, written once (with the tokenizer).

    For diffusion runs the merged UNet goes to ``merged/unet``. An existing ``merged/`` is reused.

    Raises:
        ValueError: the run's method has no merged model (textual inversion: its export is the learned embedding);
            nothing is written.
    """
    run_dir = Path(run_dir)
    out = run_dir / "merged"
    if (out / "config.json").is_file() or (out / "unet" / "config.json").is_file():
        return out
    cfg = load_config(run_dir)
    family = get_family(cfg.task.family)
    refusal = family.merge_refusal(cfg)
    if refusal:
        raise ValueError(f"{run_dir}: {refusal}")
    bundle, model = _rebuild(run_dir, cfg)
    save_merged(model, out, bundle.tokenizer, family.merged_subdir)
    return out
