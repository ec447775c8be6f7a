"""The contract between the run skeleton (:func:`loldu.train.train`) and a task family.

The skeleton builds the model bundle from ``cfg.model.builder``, the data module from ``cfg.task.data`` (plus
:meth:`TaskFamily.data_kwargs`), applies the method to :meth:`TaskFamily.base_model`, and builds the trainer
from ``cfg.trainer``/``cfg.logger``/``cfg.callbacks``; the family supplies everything else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig


def stage_metrics(metrics: dict, prefix: str) -> dict[str, float]:
    """``{name: float}`` of the entries of ``metrics`` (e.g. ``trainer.callback_metrics``) under ``prefix``."""
    return {k: float(v) for k, v in metrics.items() if k.startswith(prefix)}


def best_checkpoint(trainer: L.Trainer) -> str | None:
    """The best epoch's checkpoint when a checkpoint callback saved one (what to test), else None (the last
    weights). The resumable checkpoint (``last.ckpt``) is not a best one."""
    from loldu.checkpointing import ResumableCheckpoint

    best = [cb for cb in trainer.checkpoint_callbacks if not isinstance(cb, ResumableCheckpoint)]
    return best[0].best_model_path or None if best else None


class TaskFamily:
    """What one task family adds to the run skeleton; subclasses override what differs.

    Attributes:
        adapted: the bundle attribute holding the model the method adapts (``model``; a diffusion run's ``unet``).
        merged_subdir: where :func:`loldu.runs.save_merged` writes inside ``merged/`` ("" for ``merged/`` itself).
    """

    adapted = "model"
    merged_subdir = ""

    def base_model(self, bundle: Any) -> Any:
        """The model of ``bundle`` that the method adapts (:func:`loldu.runs.load_run` uses it too)."""
        return getattr(bundle, self.adapted)

    def data_kwargs(self, bundle: Any) -> dict:
        """Constructor arguments of the data module that come from the model bundle."""
        return {"tokenizer": bundle.tokenizer}

    def prepare(self, cfg: DictConfig, bundle: Any, datamodule: Any) -> None:
        """Read and check the data (and anything else that can fail) before any model work."""
        datamodule.setup("fit")

    def module(self, cfg: DictConfig, model: Any, bundle: Any, datamodule: Any, out: Path, **optim: Any):
        """The LightningModule that trains ``model`` (``optim``: see :class:`~loldu.tasks.common.FineTuneModule`)."""
        raise NotImplementedError

    def callbacks(self, cfg: DictConfig, bundle: Any, datamodule: Any, out: Path) -> list[L.Callback]:
        """Callbacks of this family, added to those of ``cfg.callbacks``."""
        return []

    def trainer_overrides(self, cfg: DictConfig) -> dict:
        """Trainer arguments this family sets (e.g. training by steps)."""
        return {}

    def fit(
        self, cfg: DictConfig, trainer: L.Trainer, module: Any, datamodule: Any, ckpt_path: str | None = None
    ) -> dict:
        """Train (and test); returns this family's part of ``metrics.json``.

        ``ckpt_path``: the resumable checkpoint to continue from (``resume=``; :mod:`loldu.resume`), passed to
        ``trainer.fit``; None starts from the beginning.
        """
        raise NotImplementedError

    def export(self, cfg: DictConfig, model: Any, bundle: Any, out: Path) -> None:
        """Write ``adapter/``, this family's :meth:`extra_exports`, and, with ``save_merged``, ``merged/``."""
        from loldu.methods import save_adapter
        from loldu.runs import save_merged

        save_adapter(model, out / "adapter")
        self.extra_exports(cfg, model, out)
        if cfg.save_merged:  # last: merging folds the method into the model in place
            save_merged(model, cfg.task.family, out / "merged", getattr(bundle, "tokenizer", None))

    def extra_exports(self, cfg: DictConfig, model: Any, out: Path) -> None:
        """Other files the family writes from the trained (unmerged) model; none by default."""

    def monitored(self, cfg: DictConfig, metrics: dict) -> float | None:
        """The value a sweep optimises (``train.py`` returns it)."""
        return metrics["val"].get(cfg.task.monitor)

    def headline(self, cfg: DictConfig, metrics: dict, out: Path) -> str:
        """The first line of the printed summary."""
        raise NotImplementedError
