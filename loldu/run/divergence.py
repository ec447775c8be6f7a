"""Say when a run that finished learned nothing: a training loss that blew up but stayed finite, or a validation
metric at chance.

:class:`loldu.run.guards.NonFiniteGuard` stops a run whose loss or weights became inf/nan. A run can also diverge and
stay finite (``lr=1e6``: a training loss of 8e5) and end like any other; :class:`DivergenceCheck` watches for that and
for a classifier that ends no better than guessing. It never stops a run: at the end of training it logs a warning
line naming what it found and what to try, logs ``health/diverged`` and ``health/at_chance`` (0/1) to the trainer's
loggers (CSV, W&B), and keeps :meth:`DivergenceCheck.summary` for ``metrics.json``.

The rules (constants below):

* **diverged**: the mean training loss of the last ``k`` batches is not finite, or is more than :data:`RATIO` (2)
  times the mean of the first ``k``, or more than :data:`BLOWUP` (100) times the first batch's loss, and in either
  case more than :data:`MARGIN` (0.5) above it; ``k`` is a quarter of the batches trained, at most :data:`WINDOW`
  (20). The first window is the steady reference; the first batch (the untrained model's loss, the only one before
  any update) catches a loss that blew up from the first update on (an absurd lr), which puts the first window
  itself in the blown-up range; being one noisy batch, it needs the much larger factor. The margin keeps the
  per-batch noise of short runs (a diffusion batch's loss moves between about 0.01 and 0.5 with its noise level)
  from counting as divergence; a blown-up loss is orders of magnitude above its start. With fewer than
  :data:`MIN_BATCHES` (4) batches no claim is made (None).
* **at chance**: a validation metric that was logged, at the end of training, is no better than guessing:
  ``val/acc`` at most ``1/num_labels +`` :data:`CHANCE_MARGIN` (0.02), with ``num_labels`` (2 or more) from the
  LightningModule (:class:`loldu.tasks.classification.ClassificationModule` has it); ``val/mcc``, ``val/pearson``
  or ``val/spearman`` at most :data:`CHANCE_MARGIN` above 0, or not a number (constant predictions). F1 is not
  judged: its chance level depends on the class balance, which the metric does not know. Accuracy at ``1/n`` is
  chance for balanced classes; on imbalanced ones a model that predicts the majority class scores above it, which
  the MCC (0 for any constant prediction) catches where it is logged. No such metric: None.

The loss judged is what ``training_step`` returned (times ``accumulate_grad_batches``, which Lightning divided it
by), kept on the device with no host sync per batch and read once when training ends. After a resume the first
window is the first batches after it. Under several processes each judges its own batches; rank 0 warns and logs.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_only

log = logging.getLogger(__name__)

#: Fewer training batches than this: no claim about divergence.
MIN_BATCHES = 4
#: The most batches in each of the first and the last window.
WINDOW = 20
#: Diverged: the last window's mean loss is more than RATIO times the first window's ...
RATIO = 2.0
#: ... or more than BLOWUP times the first batch's loss ...
BLOWUP = 100.0
#: ... and more than MARGIN above it.
MARGIN = 0.5
#: At chance: a metric at most this far above its chance level.
CHANCE_MARGIN = 0.02
#: Validation metrics whose chance level is 0 whatever the labels (correlations): at chance when at most
#: CHANCE_MARGIN, or nan (constant predictions).
ZERO_CHANCE = ("val/mcc", "val/pearson", "val/spearman")


def window_size(batches: int) -> int:
    """The batches in each window: a quarter of ``batches``, at least 1 and at most :data:`WINDOW`; 0 below
    :data:`MIN_BATCHES` (no claim)."""
    return 0 if batches < MIN_BATCHES else max(1, min(WINDOW, batches // 4))


def _far_above(last: float, start: float, factor: float) -> bool:
    return last > factor * start and last > start + MARGIN


def divergence(first: float, last: float, first_batch: float | None = None) -> str | None:
    """The divergence rule (see the module): None when the last window's mean loss ``last`` has not diverged from
    the first window's mean ``first`` and the first batch's loss ``first_batch``, else where it started from."""
    if not math.isfinite(last) or _far_above(last, first, RATIO):
        return f"{first:.4g} (the mean of the first batches)"
    if first_batch is not None and _far_above(last, first_batch, BLOWUP):
        return f"{first_batch:.4g} (the first batch, before any update)"
    return None


def chance_verdict(metrics: Mapping[str, float], num_labels: int | None) -> tuple[bool | None, str | None]:
    """Whether the validation ``metrics`` (name -> value) are at chance: ``(at_chance, what)``, with ``what`` the
    sentence naming the metric and its chance level when at chance; ``(None, None)`` when no metric can be judged
    (see the module's rules)."""
    judged = False
    if isinstance(num_labels, int) and num_labels >= 2 and "val/acc" in metrics:
        judged = True
        value, chance = metrics["val/acc"], 1.0 / num_labels
        if value <= chance + CHANCE_MARGIN:
            return True, f"val/acc = {value:.4f} is at chance for {num_labels} classes (1/{num_labels} = {chance:.4f})"
    for name in ZERO_CHANCE:
        if name in metrics:
            judged = True
            value = metrics[name]
            if not math.isfinite(value) or value <= CHANCE_MARGIN:
                return True, f"{name} = {value:.4f} is at chance (0: no better than a constant prediction)"
    return (False, None) if judged else (None, None)


def _value(x: Any) -> float:
    return float(x.detach().float().item()) if isinstance(x, torch.Tensor) else float(x)


class DivergenceCheck(L.Callback):
    """Records the training loss of every batch and, when training ends, judges whether the run diverged or ended
    at chance (the rules of :mod:`loldu.run.divergence`); warns, logs ``health/diverged`` and ``health/at_chance``
    to the loggers, and keeps :meth:`summary`. It never stops the run."""

    def __init__(self):
        super().__init__()
        self.reset()

    def reset(self) -> None:
        """Forget what was recorded (each ``trainer.fit`` starts afresh)."""
        self._first: list[torch.Tensor] = []  # the first WINDOW batch losses, on the device
        self._last: deque[torch.Tensor] = deque(maxlen=WINDOW)  # the latest WINDOW batch losses
        self._batches = 0
        self._at_chance: bool | None = None
        self._chance_reason: str | None = None
        self._summary: dict[str, Any] | None = None  # set when training ends

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.reset()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, torch.Tensor):  # None: a skipped batch
            self.record(loss.detach().float().reshape(-1)[:1] * trainer.accumulate_grad_batches)

    def record(self, loss: torch.Tensor | float) -> None:
        """Add one training batch's loss (a one-element tensor, left on its device, or a number)."""
        loss = loss if isinstance(loss, torch.Tensor) else torch.tensor([float(loss)])
        if len(self._first) < WINDOW:
            self._first.append(loss)
        self._last.append(loss)
        self._batches += 1

    def judge_validation(self, metrics: Mapping[str, Any], num_labels: int | None) -> None:
        """Judge the final validation ``metrics`` (``trainer.callback_metrics``; only ``val/*`` are read) for a task
        of ``num_labels`` classes (None: unknown, accuracy is not judged)."""
        values = {k: _value(v) for k, v in metrics.items() if k.startswith("val/")}
        self._at_chance, self._chance_reason = chance_verdict(values, num_labels)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        num_labels = getattr(pl_module, "num_labels", None)
        self.judge_validation(trainer.callback_metrics, num_labels)
        health = self.summary()
        self._summary = health
        if health["reason"]:
            self._warn(health, pl_module)
        logged = {f"health/{k}": float(health[k]) for k in ("diverged", "at_chance") if health[k] is not None}
        if logged:
            for logger in trainer.loggers:  # self.log is not allowed in on_train_end
                logger.log_metrics(logged, step=trainer.global_step)

    def summary(self) -> dict[str, Any]:
        """``{"diverged": bool | None, "at_chance": bool | None, "train_loss_first": float | None,
        "train_loss_first_batch": float | None, "train_loss_last": float | None, "train_batches": int,
        "window": int, "reason": str | None}``: the mean training loss of the first and the last window and the
        first batch's, the verdicts (None: no claim: too few batches, or no metric to judge) and the sentence(s)
        saying what was found (None when nothing was)."""
        if self._summary is not None:
            return dict(self._summary)
        k = window_size(self._batches)
        first = first_batch = last = diverged = None
        reasons = []
        if k:
            kept = self._first[:k] + list(self._last)[-k:]
            values = torch.cat([t.to(kept[0].device) for t in kept]).tolist()  # one host sync
            first_batch, first, last = values[0], sum(values[:k]) / k, sum(values[k:]) / k
            start = divergence(first, last, first_batch)
            diverged = start is not None
            if diverged:
                reasons.append(
                    f"training diverged: the training loss rose from {start} to {last:.4g} (the mean of the last "
                    f"{k} of {self._batches} batches)"
                )
        if self._at_chance:
            reasons.append(self._chance_reason)
        return {
            "diverged": diverged,
            "at_chance": self._at_chance,
            "train_loss_first": first,
            "train_loss_first_batch": first_batch,
            "train_loss_last": last,
            "train_batches": self._batches,
            "window": k,
            "reason": "; ".join(reasons) or None,
        }

    @staticmethod
    @rank_zero_only
    def _warn(health: dict[str, Any], pl_module: L.LightningModule) -> None:
        settings = getattr(pl_module, "optim_settings", None) or {}
        lr = f" (lr={settings['lr']:g})" if "lr" in settings else ""
        if health["diverged"]:
            todo = f"lower the learning rate{lr} or check the data for extreme values"
        else:
            todo = f"check the learning rate{lr}, the labels and the number of training steps"
        log.warning("%s: this run's metrics are not a result; %s", health["reason"], todo)
