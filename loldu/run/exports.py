"""What a finished run writes besides its metrics: ``adapter/``, the family's own exports, and with
``save_merged`` the merged model that evaluation tools (lm-evaluation-harness, diffusers) load without this package.
Each folder appears complete or not at all (:func:`loldu.run.folder.atomic_dir`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from loldu.methods import merge_method, save_adapter
from loldu.run.folder import atomic_dir
from loldu.tasks import TaskFamily


def export_run(cfg: DictConfig, family: TaskFamily, model: Any, bundle: Any, out: Path) -> None:
    """Write ``adapter/``, the family's :meth:`~loldu.tasks.TaskFamily.extra_exports`, and, with ``save_merged``,
    ``merged/`` (last: merging folds the method into the model in place)."""
    with atomic_dir(out / "adapter") as tmp:  # written as adapter.tmp-<pid>-<random>, then renamed
        save_adapter(model, tmp)
    family.extra_exports(cfg, model, out)
    if cfg.save_merged:
        with atomic_dir(out / "merged") as tmp:
            save_merged(model, tmp, getattr(bundle, "tokenizer", None), family.merged_subdir)


def save_merged(model: Any, path: str | Path, tokenizer: Any = None, subdir: str = "") -> Path | None:
    """Merge the method into the base (in place) and ``save_pretrained`` the result: ``path`` (with the
    tokenizer), or its ``subdir`` (a task family's ``merged_subdir``: ``unet`` for a diffusion run's UNet). It
    loads with transformers/diffusers alone.

    Returns:
        ``path``, or None for a model without ``save_pretrained`` (e.g. a timm classifier).
    """
    path = Path(path)
    merged = merge_method(model)
    if not hasattr(merged, "save_pretrained"):
        return None
    merged.save_pretrained(path / subdir)
    if subdir:
        return path
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path
