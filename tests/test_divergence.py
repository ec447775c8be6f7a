"""A run that diverged (finite but blown-up training loss) or ended at chance is reported: DivergenceCheck's rules on
synthetic loss sequences, and tiny real fits of a two-class linear model."""

from __future__ import annotations

import csv
import logging
import math

import lightning as L
import pytest
import torch
import torchmetrics
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from loldu.run.divergence import MIN_BATCHES, DivergenceCheck, chance_verdict, divergence, window_size


def _checked(losses, val=None, num_labels=None) -> dict:
    """The summary of a DivergenceCheck fed ``losses`` (one per batch) and final validation metrics ``val``."""
    check = DivergenceCheck()
    for loss in losses:
        check.record(loss)
    check.judge_validation(val or {}, num_labels)
    return check.summary()


# -- the rules on synthetic sequences ------------------------------------------------------------------------------
def test_a_decreasing_loss_has_not_diverged():
    health = _checked([0.7 * 0.97**i for i in range(100)])
    assert health["diverged"] is False and health["reason"] is None
    assert health["window"] == 20 and health["train_batches"] == 100
    assert health["train_loss_first"] == pytest.approx(sum(0.7 * 0.97**i for i in range(20)) / 20)
    assert health["train_loss_last"] < health["train_loss_first"]


def test_an_exploding_loss_has_diverged():
    health = _checked([0.69, 0.7, 5.0, 3e2, 8e4, 8e5, 7e5, 9e5])
    assert health["diverged"] is True
    assert health["window"] == 2 and health["train_loss_first"] == pytest.approx(0.695)
    assert health["train_loss_first_batch"] == pytest.approx(0.69) and health["train_loss_last"] == pytest.approx(8e5)
    assert health["reason"] == (
        "training diverged: the training loss rose from 0.695 (the mean of the first batches) to 8e+05 (the mean of "
        "the last 2 of 8 batches)"
    )


def test_a_loss_that_blew_up_from_the_first_update_has_diverged():
    health = _checked([0.69] + [4e5 + 1e4 * i for i in range(23)])  # the first window is already blown up
    assert health["diverged"] is True and health["train_loss_first"] > 1e5
    assert "rose from 0.69 (the first batch, before any update)" in health["reason"]


def test_a_lucky_first_batch_is_not_where_a_flat_run_started():
    assert _checked([0.05] + [0.7] * 23)["diverged"] is False  # 14 times the first batch: noise, not a blow-up
    assert _checked([1.2] + [2.5] * 23)["diverged"] is False  # a language model's noisy batches of one sample


def test_a_non_finite_last_window_has_diverged():
    assert _checked([0.7, 0.6, 0.5, math.inf])["diverged"] is True
    assert divergence(0.7, math.nan) is not None


def test_too_few_batches_make_no_claim():
    health = _checked([0.1, 1e6, 1e7][: MIN_BATCHES - 1])
    assert health["diverged"] is None and health["train_loss_first"] is None and health["reason"] is None
    assert window_size(0) == 0 and window_size(MIN_BATCHES) == 1 and window_size(10_000) == 20


@pytest.mark.parametrize(
    "first,last,diverged",
    [
        (0.69, 1.5, True),  # twice the start and 0.8 above it
        (0.69, 1.1, False),  # above the start, but not twice
        (0.02, 0.3, False),  # 15 times the start, but within the noise margin of a short run
        (3.0, 5.0, False),  # a language model's loss that rose by two thirds: not a blow-up
        (3.0, 6.5, True),
    ],
)
def test_the_rule_needs_both_the_ratio_and_the_margin(first, last, diverged):
    assert (divergence(first, last, first_batch=first) is not None) is diverged


def test_noise_in_a_short_flat_run_is_not_divergence():
    health = _checked([0.05, 0.4, 0.02, 0.3, 0.1, 0.45, 0.03, 0.5])  # diffusion-like batch losses, no trend
    assert health["diverged"] is False


def test_accuracy_at_chance_for_two_classes():
    assert chance_verdict({"val/acc": 0.5}, 2)[0] is True
    assert chance_verdict({"val/acc": 0.515}, 2)[0] is True  # within the margin of 1/2
    assert chance_verdict({"val/acc": 0.6}, 2) == (False, None)
    health = _checked([0.7] * 8, {"val/acc": torch.tensor(0.5), "val/loss": torch.tensor(0.69)}, num_labels=2)
    assert health["at_chance"] is True and health["diverged"] is False
    assert health["reason"] == "val/acc = 0.5000 is at chance for 2 classes (1/2 = 0.5000)"


def test_chance_is_claimed_only_where_it_is_known():
    assert chance_verdict({"val/acc": 0.5}, None) == (None, None)  # classes unknown: accuracy not judged
    assert chance_verdict({"val/acc": 0.5}, 1) == (None, None)  # regression
    assert chance_verdict({"val/f1": 0.0}, 2) == (None, None)  # F1's chance level depends on the class balance
    assert chance_verdict({"val/acc": 0.3}, 3)[0] is True  # below 1/3
    assert chance_verdict({"val/acc": 0.4}, 3)[0] is False  # above 1/3 + margin
    assert chance_verdict({"val/acc": 0.9, "val/mcc": 0.0}, 2)[0] is True  # the majority class of imbalanced data
    assert chance_verdict({"val/pearson": math.nan}, 1)[0] is True  # constant predictions
    assert chance_verdict({"val/spearman": 0.4}, 1) == (False, None)
    assert _checked([0.7] * 8)["at_chance"] is None  # no validation


def test_the_loss_is_read_from_the_training_step_output_and_undone_from_accumulation():
    class Trainer:
        accumulate_grad_batches = 4

    check = DivergenceCheck()
    for loss in (0.25, 0.25, 0.25, 0.25):  # Lightning divides by accumulate_grad_batches
        check.on_train_batch_end(Trainer(), None, {"loss": torch.tensor(loss)}, None, 0)
    check.on_train_batch_end(Trainer(), None, None, None, 0)  # a skipped batch
    assert check.summary()["train_loss_first"] == pytest.approx(1.0) and check.summary()["train_batches"] == 4


# -- tiny real fits --------------------------------------------------------------------------------------------------
class TwoClassLinear(L.LightningModule):
    """A linear two-class classifier (10 parameters) trained by SGD, logging like ClassificationModule."""

    def __init__(self, lr: float):
        super().__init__()
        self.net = nn.Linear(4, 2)
        self.num_labels = 2
        self.optim_settings = {"lr": lr}
        self.acc = torchmetrics.Accuracy(task="multiclass", num_classes=2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train/loss", loss, on_step=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.acc.update(self.net(x).argmax(-1), y)
        self.log("val/acc", self.acc)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.optim_settings["lr"])


def _fit(tmp_path, lr: float, random_labels: bool) -> DivergenceCheck:
    """Three epochs of 8 batches; labels from the first feature, or random (no classifier fits them)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=gen)
    y = torch.randint(0, 2, (64,), generator=gen) if random_labels else (x[:, 0] > 0).long()
    data = DataLoader(TensorDataset(x, y), batch_size=8)
    torch.manual_seed(0)
    check = DivergenceCheck()
    trainer = L.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=L.pytorch.loggers.CSVLogger(tmp_path, name="csv", version=""),
        callbacks=[check],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=1,
    )
    trainer.fit(TwoClassLinear(lr), train_dataloaders=data, val_dataloaders=data)
    return check


def _logged(tmp_path, name: str) -> list[float]:
    with open(tmp_path / "csv" / "metrics.csv") as fh:
        return [float(row[name]) for row in csv.DictReader(fh) if row.get(name)]


def test_a_normal_fit_is_healthy(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="loldu.run.divergence"):
        health = _fit(tmp_path, lr=0.5, random_labels=False).summary()
    assert health["diverged"] is False and health["at_chance"] is False, health
    assert health["train_loss_last"] < health["train_loss_first"] and health["reason"] is None
    assert not caplog.records
    assert _logged(tmp_path, "health/diverged") == [0.0] and _logged(tmp_path, "health/at_chance") == [0.0]


def test_a_fit_with_an_absurd_lr_is_flagged(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="loldu.run.divergence"):
        health = _fit(tmp_path, lr=1e6, random_labels=True).summary()
    assert health["diverged"] is True, health
    assert health["train_loss_last"] > 1e3 and health["train_batches"] == 24 and health["window"] == 6
    (record,) = caplog.records
    assert record.getMessage().startswith("training diverged: the training loss rose from ")
    assert "lower the learning rate (lr=1e+06)" in record.getMessage()
    assert _logged(tmp_path, "health/diverged") == [1.0]  # in the CSV log (and so in W&B's)
