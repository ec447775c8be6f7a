"""Working with finished run folders: rebuild the trained model from ``config.yaml`` and ``adapter/``, and
export the merged model that evaluation tools (lm-evaluation-harness, diffusers) load without this package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import loldu.config  # noqa: F401  (registers the resolvers a saved config may still name)
from loldu.methods import load_adapter, merge_method
from loldu.tasks import get_family


def load_config(run_dir: str | Path) -> DictConfig:
    """The resolved config a run saved.

    Raises:
        FileNotFoundError: ``run_dir`` is not a run folder (no ``config.yaml``).
    """
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder: it has no config.yaml (written by train.py)")
    return OmegaConf.load(path)


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


def save_merged(model: Any, family: str, path: str | Path, tokenizer: Any = None) -> Path | None:
    """Merge the method into the base (in place) and ``save_pretrained`` the result: ``path`` (with the
    tokenizer), or the family's subfolder (``path/unet`` for a diffusion run's UNet). It loads with
    transformers/diffusers alone.

    Returns:
        ``path``, or None for a model without ``save_pretrained`` (e.g. a timm classifier).
    """
    path = Path(path)
    merged = merge_method(model)
    if not hasattr(merged, "save_pretrained"):
        return None
    subdir = get_family(family).merged_subdir
    merged.save_pretrained(path / subdir)
    if subdir:
        return path
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path


def ensure_merged(run_dir: str | Path) -> Path:
    """``run_dir/merged``: the run's model with the method merged in, written once (with the tokenizer).

    For diffusion runs the merged UNet goes to ``merged/unet``. An existing ``merged/`` is reused.
    """
    run_dir = Path(run_dir)
    out = run_dir / "merged"
    if (out / "config.json").is_file() or (out / "unet" / "config.json").is_file():
        return out
    cfg, bundle, model = load_run(run_dir)
    save_merged(model, cfg.task.family, out, bundle.tokenizer)
    return out
