"""The contract between the run skeleton (:func:`loldu.run.train`) and a task family.

The skeleton reads and checks the data (:meth:`TaskFamily.check_data`, the data module of ``cfg.task.data``), builds
the model bundle from ``cfg.model.builder``, attaches its parts to the data module (:meth:`TaskFamily.prepare`,
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
    weights). A checkpoint callback with ``resumable = True`` (the run's ``last.ckpt``) is not a best one."""
    best = [cb for cb in trainer.checkpoint_callbacks if not getattr(cb, "resumable", False)]
    return best[0].best_model_path or None if best else None


class TaskFamily:
    """What one task family adds to the run skeleton; subclasses override what differs.

    Attributes:
        adapted: the bundle attribute holding the model the method adapts (``model``; a diffusion run's ``unet``).
        merged_subdir: where :func:`loldu.run.exports.save_merged` writes inside ``merged/`` ("": ``merged/``).
    """

    adapted = "model"
    merged_subdir = ""

    def base_model(self, bundle: Any) -> Any:
        """The model of ``bundle`` that the method adapts (:func:`loldu.run.finished.load_run` uses it too)."""
        return getattr(bundle, self.adapted)

    def data_kwargs(self, bundle: Any) -> dict:
        """What the data module takes from the model bundle (:meth:`prepare` attaches it before setup)."""
        return {"tokenizer": bundle.tokenizer}

    def check_data(self, cfg: DictConfig) -> Any:
        """The data module of ``cfg.task.data``, built without the model's parts, with its data read and checked and
        its splits planned: runs before the model builder, so bad data fails in seconds. A family may also fill in
        what the data determines (e.g. ``task.num_labels``).

        Raises:
            ValueError, FileNotFoundError, RuntimeError: Bad or unreachable data; the message names the fix.
        """
        from hydra.utils import instantiate

        datamodule = instantiate(cfg.task.data, _convert_="all")
        datamodule.check()
        return datamodule

    def extend_bundle(self, cfg: DictConfig, bundle: Any) -> None:
        """Give ``bundle`` what the run's method needs before it is applied or its saved adapter is loaded (a new
        word's tokens for textual inversion); nothing by default. :meth:`prepare` and
        :func:`loldu.run.finished.load_run` call it, so a rebuilt run has the parts its adapter was saved from."""

    def merge_refusal(self, cfg: DictConfig) -> str | None:
        """Why the run's method has no merged model to write (``save_merged``,
        :func:`loldu.run.finished.ensure_merged`), or None where it has one."""
        return None

    def prepare(self, cfg: DictConfig, bundle: Any, datamodule: Any) -> None:
        """Attach the model bundle's parts (:meth:`data_kwargs`) to the checked data module and build its inputs."""
        datamodule.attach(**self.data_kwargs(bundle))
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

        ``ckpt_path``: the resumable checkpoint to continue from (``resume=``; :mod:`loldu.run.resume`), passed to
        ``trainer.fit``; None starts from the beginning.
        """
        raise NotImplementedError

    def extra_exports(self, cfg: DictConfig, model: Any, out: Path) -> None:
        """Other files the family writes from the trained (unmerged) model, after ``adapter/`` and before the merge
        (:func:`loldu.run.exports.export_run`); none by default."""

    def monitored(self, cfg: DictConfig, metrics: dict) -> float | None:
        """The value a sweep optimises (``train.py`` returns it)."""
        return metrics["val"].get(cfg.task.monitor)

    def headline(self, cfg: DictConfig, metrics: dict, out: Path) -> str:
        """The first line of the printed summary."""
        raise NotImplementedError
