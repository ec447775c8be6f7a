"""Stop a diverged run: a non-finite loss, gradient or trained weight ends training with a clear error.

The run skeleton (:func:`loldu.train.build_trainer`) adds :class:`NonFiniteGuard` to every trainer, so a run whose
training blew up raises :class:`NonFiniteError` (``train.py`` exits non-zero, the run folder is marked failed and
no adapter or metrics are written) instead of reporting nan, or a chance accuracy, as a result.
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

    Checked: the training loss of every batch (before its backward); the total gradient norm before every
    optimizer step (not under fp16 loss scaling, whose scaler skips steps with inf gradients by design); every
    logged loss after each validation and test; the trainable weights when training ends (no later loss checks
    the last step's update). Under several processes the decision is shared, so every rank stops together.
    """

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        value = _value(loss)
        where = f"at step {trainer.global_step} (epoch {trainer.current_epoch})"
        self._check(trainer, pl_module, value, f"the training loss is {value} {where}")

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        if getattr(trainer.precision_plugin, "scaler", None) is not None:
            return
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return
        norm = _value(torch.nn.utils.get_total_norm(grads))
        self._check(trainer, pl_module, norm, f"the gradient norm is {norm} at step {trainer.global_step}")

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
