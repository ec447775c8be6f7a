"""Stop a diverged run: a non-finite loss, gradient or trained weight ends training with a clear error.

The run skeleton (:func:`loldu.run.skeleton.build_trainer`) adds :class:`NonFiniteGuard` to every trainer, so a
run whose training blew up raises :class:`NonFiniteError` (``train.py`` exits non-zero, the run folder is marked
failed and no adapter or metrics are written) instead of reporting nan, or a chance accuracy, as a result. A run that
diverged and stayed finite (a loss of 8e5) is reported, not stopped, by :mod:`loldu.run.divergence`.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch

HINT = "lower the learning rate{lr} or check the data for bad values (inf/nan inputs, empty or extreme targets)"


class NonFiniteError(FloatingPointError):
    """Training produced a non-finite loss, gradient norm or weight."""


def _is_loss(name: str) -> bool:
    return "loss" in name.rsplit("/", 1)[-1]


def _value(x: Any) -> float:
    return float(x.detach().float().item()) if isinstance(x, torch.Tensor) else float(x)


class NonFiniteGuard(L.Callback):
    """Raises :class:`NonFiniteError` when training diverges, naming where, the value and what to try.

    Checked before every optimizer step: the training loss of each of its batches and the total gradient norm
    (not under fp16 loss scaling, whose scaler skips steps with inf gradients by design), read with one host sync
    per step; every logged loss after each validation and test; the trainable weights when training ends (no later
    loss checks the last step's update). Under several processes the decision is shared, so every rank stops
    together.
    """

    def __init__(self):
        super().__init__()
        self._losses: list[torch.Tensor] = []  # this optimizer step's batch losses, kept on device (no sync)

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        self._losses.append(loss.detach().float().reshape(-1)[:1])

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        """The step's batch losses and its gradient norm, read with one host sync and decided across ranks once."""
        checked, self._losses = self._losses, []
        where = f"at step {trainer.global_step}"
        labels = [f"the training loss is {{}} {where} (epoch {trainer.current_epoch})"] * len(checked)
        if getattr(trainer.precision_plugin, "scaler", None) is None:  # fp16 scaling skips inf-gradient steps itself
            grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            if grads:
                checked.append(torch.nn.utils.get_total_norm(grads).detach().float().reshape(1))
                labels.append(f"the gradient norm is {{}} {where}")
        if not checked:
            return
        values = torch.cat([v.to(checked[0].device) for v in checked]).tolist()
        value, label = next(((v, w) for v, w in zip(values, labels) if not math.isfinite(v)), (0.0, ""))
        self._check(trainer, pl_module, value, label.format(value))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check_logged(trainer, pl_module, "val/")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check_logged(trainer, pl_module, "test/")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        bad = next((n for n, p in pl_module.named_parameters() if p.requires_grad and not p.isfinite().all()), None)
        self._check(
            trainer,
            pl_module,
            math.nan if bad else 0.0,
            f"the trained weight {bad} holds inf/nan after step {trainer.global_step}",
        )

    def _check_logged(self, trainer: L.Trainer, pl_module: L.LightningModule, prefix: str) -> None:
        logged = {k: _value(v) for k, v in trainer.callback_metrics.items() if k.startswith(prefix) and _is_loss(k)}
        bad = {k: v for k, v in logged.items() if not math.isfinite(v)}
        name, value = next(iter(bad.items()), (None, 0.0))
        self._check(trainer, pl_module, value, f"{name} is {value} after step {trainer.global_step}")

    @staticmethod
    def _check(trainer: L.Trainer, pl_module: L.LightningModule, value: float, what: str) -> None:
        if not trainer.strategy.reduce_boolean_decision(not math.isfinite(value), all=False):
            return
        settings = getattr(pl_module, "optim_settings", None) or {}
        lr = f" (lr={settings['lr']:g})" if "lr" in settings else ""
        if math.isfinite(value):  # another rank diverged
            what = f"another process diverged at step {trainer.global_step}"
        raise NonFiniteError(f"training diverged: {what}; {HINT.format(lr=lr)}")
