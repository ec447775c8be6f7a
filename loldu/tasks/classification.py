"""Text and image classification and regression as one LightningModule.

The module receives a model with the method already applied. It owns the loss,
the metrics (torchmetrics), the logging names (``train/loss``, ``val/<metric>``,
``test/<metric>``) and the optimizer, built from trainable parameters only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchmetrics
from omegaconf import DictConfig
from torch import nn

from loldu.tasks.base import TaskFamily, best_checkpoint, stage_metrics
from loldu.tasks.common import FineTuneModule

METRICS = {
    "acc": lambda n: torchmetrics.Accuracy(task="multiclass", num_classes=n),
    "f1": lambda n: (
        torchmetrics.F1Score(task="binary")
        if n == 2
        else torchmetrics.F1Score(task="multiclass", num_classes=n, average="macro")
    ),
    "mcc": lambda n: torchmetrics.MatthewsCorrCoef(task="multiclass", num_classes=n),
    "pearson": lambda n: torchmetrics.PearsonCorrCoef(),
    "spearman": lambda n: torchmetrics.SpearmanCorrCoef(),
    "mse": lambda n: torchmetrics.MeanSquaredError(),
}


class ClassificationModule(FineTuneModule):
    """Fine-tunes a classifier (or a regressor when ``num_labels == 1``).

    Args:
        model: the adapted model; called as ``model(**batch_without_labels).logits``.
        num_labels: classes, or 1 for regression.
        metrics: names from :data:`METRICS` (the first is the one to monitor).
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
        decay_diagonal: also decay LoLDU/SVFit z and sigma (off by default).
        scheduler: ``linear`` (warmup then linear decay) or ``constant`` (warmup then flat).
        warmup_ratio: warmup as a fraction of all steps (used when ``warmup_steps`` is 0).
        warmup_steps: warmup steps (overrides ``warmup_ratio``).
        optimizer: ``optimizer(param_groups, lr=lr)`` builds the optimizer (None: AdamW).
    """

    def __init__(
        self,
        model: nn.Module,
        num_labels: int,
        metrics: list[str],
        lr: float,
        weight_decay: float = 0.0,
        decay_diagonal: bool = False,
        scheduler: str = "linear",
        warmup_ratio: float = 0.0,
        warmup_steps: int = 0,
        optimizer: Callable | None = None,
        head_lr: float | None = None,
    ):
        super().__init__(lr, weight_decay, decay_diagonal, scheduler, warmup_ratio, warmup_steps, optimizer, head_lr)
        unknown = [m for m in metrics if m not in METRICS]
        if unknown or not metrics:
            raise ValueError(f"unknown metrics {unknown}; choose from {sorted(METRICS)}")
        self.model = model
        self.num_labels = num_labels
        self.regression = num_labels == 1
        self.metric_names = list(metrics)
        self.save_hyperparameters(ignore=["model", "optimizer"])
        self.val_metrics = nn.ModuleDict({m: METRICS[m](num_labels) for m in metrics})
        self.test_metrics = nn.ModuleDict({m: METRICS[m](num_labels) for m in metrics})

    def forward(self, batch: dict) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return self.model(**inputs).logits

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.regression:
            return nn.functional.mse_loss(logits.squeeze(-1).float(), labels.float())
        return nn.functional.cross_entropy(logits.float(), labels)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self(batch)
        loss = self._loss(logits, batch["labels"])
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch["labels"]))
        return loss

    def _eval_step(self, batch: dict, stage: str, metrics: nn.ModuleDict) -> None:
        logits = self(batch)
        labels = batch["labels"]
        self.log(f"{stage}/loss", self._loss(logits, labels), batch_size=len(labels), sync_dist=True)
        preds = logits.squeeze(-1).float() if self.regression else logits.argmax(-1)
        for name, metric in metrics.items():
            metric.update(preds, labels.float() if self.regression else labels)
            self.log(f"{stage}/{name}", metric, batch_size=len(labels), prog_bar=name == self.metric_names[0])

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val", self.val_metrics)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test", self.test_metrics)


REGRESSION_METRICS = ("pearson", "spearman", "mse")


def check_metrics(metrics: list[str], regression: bool) -> None:
    """Refuses class metrics on regression data and regression metrics on classes, naming the keys to set.

    Raises:
        ValueError: A metric that does not fit the kind of labels.
    """
    wrong = [m for m in metrics if (m in REGRESSION_METRICS) != regression]
    if not wrong:
        return
    if regression:
        raise ValueError(
            f"task.metrics {wrong} are class metrics but the labels are regression targets; set "
            "task.metrics=[pearson,spearman] task.monitor=val/pearson"
        )
    raise ValueError(
        f"task.metrics {wrong} are regression metrics but the labels are classes; set task.metrics=[acc,f1] "
        "task.monitor=val/acc (or task.data.source_args.regression=true for numeric targets)"
    )


def save_label_names(names: list[str], model: Any, out: Path) -> None:
    """Writes ``labels.json`` (class index -> name) into the run folder ``out`` and, for a transformers model, the
    names into its config's ``id2label``/``label2id``, so that a saved or merged model predicts names.

    Args:
        names: Class names, index i naming class i.
        model: The classifier (its ``config`` is updated when it has ``id2label``).
        out: The run folder.
    """
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    id2label = dict(enumerate(names))
    if getattr(rank_zero_only, "rank", 0) == 0:  # one writer under DDP; every rank names its model's classes
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / "labels.json.tmp"
        tmp.write_text(json.dumps({str(i): name for i, name in id2label.items()}, indent=2))
        tmp.replace(out / "labels.json")
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "id2label"):
        config.id2label, config.label2id = id2label, {name: i for i, name in id2label.items()}


class ClassificationFamily(TaskFamily):
    """Text and image classification (and regression): tokens or pixels in, one label (or value) out.

    The input kind only changes what the data module takes from the model bundle.
    """

    def data_kwargs(self, bundle: Any) -> dict:
        if bundle.family == "text":
            return {"tokenizer": bundle.tokenizer}
        return {"image_size": bundle.image_size, "mean": bundle.mean, "std": bundle.std}

    def check_data(self, cfg: DictConfig) -> Any:
        """Reads and checks the data, then writes the data's label count into a null ``task.num_labels`` (the model
        builder reads it) or refuses a set one that differs, naming both."""
        datamodule = super().check_data(cfg)
        given, found = cfg.task.num_labels, datamodule.num_labels
        if given is None:
            cfg.task.num_labels = found
        elif given != found:
            raise ValueError(
                f"task.num_labels={given} but the data ({datamodule.where()}) has {found} labels "
                f"({datamodule.label_names}); set task.num_labels={found}, or task.num_labels=null to take it "
                "from the data"
            )
        check_metrics(list(cfg.task.metrics), datamodule.is_regression)
        return datamodule

    def prepare(self, cfg: DictConfig, bundle: Any, datamodule: Any) -> None:
        super().prepare(cfg, bundle, datamodule)
        if not datamodule.is_regression:
            save_label_names(datamodule.label_names, bundle.model, Path(cfg.output_dir))

    def module(self, cfg: DictConfig, model: Any, bundle: Any, datamodule: Any, out: Path, **optim: Any):
        return ClassificationModule(
            model=model, num_labels=cfg.task.num_labels, metrics=list(cfg.task.metrics), **optim
        )

    def fit(self, cfg: DictConfig, trainer: Any, module: Any, datamodule: Any, ckpt_path: str | None = None) -> dict:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        val = stage_metrics(trainer.callback_metrics, "val/")
        test = trainer.test(module, datamodule=datamodule, ckpt_path=best_checkpoint(trainer), verbose=False)
        return {"test": stage_metrics(test[0] if test else {}, ""), "val": val}

    def headline(self, cfg: DictConfig, metrics: dict, out: Path) -> str:
        first = f"test/{cfg.task.metrics[0]}"
        return f"{first} = {metrics['test'].get(first, float('nan')):.4f}"


FAMILY = ClassificationFamily()
