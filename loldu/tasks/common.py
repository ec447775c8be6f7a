"""What every task family's LightningModule shares: the optimizer and schedule, and checkpoints that hold only
what training changes.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import lightning as L
import torch

from loldu.config import mark_refusal
from loldu.methods import (
    adapter_state_dict,
    after_optimizer_step,
    count_parameters,
    load_training_state,
    optimizer_param_groups,
    start_training,
    training_penalty,
    training_state,
)

SCHEDULERS = ("linear", "constant")


def warmup_schedule(
    optimizer: torch.optim.Optimizer, scheduler: str, total_steps: int, warmup_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """transformers' warmup schedule, with optimizer step ``k`` at factor ``(k + 1) / (warmup + 1)`` in warmup.

    The first step thus trains at a non-zero lr (as this project always has): transformers' schedule for
    ``warmup + 1`` warmup steps over ``total + 1`` steps, started one step in. After warmup the factor is
    ``(total - k) / (total - warmup)`` (``linear``) or 1 (``constant``).

    Args:
        optimizer: its groups' ``lr`` is the peak lr.
        scheduler: ``linear`` or ``constant``.
        total_steps: optimizer steps of the whole run.
        warmup_steps: warmup optimizer steps.
    """
    from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

    for group in optimizer.param_groups:  # a schedule that starts at step 1 needs the peak lr recorded
        group.setdefault("initial_lr", group["lr"])
    if scheduler == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup_steps + 1, last_epoch=0)
    return get_linear_schedule_with_warmup(optimizer, warmup_steps + 1, total_steps + 1, last_epoch=0)


class FineTuneModule(L.LightningModule):
    """Base class: ``self.model`` is the adapted model; subclasses add the loss, metrics and logging.

    Checkpoints keep the trainable parameters and the adapters' saved buffers only (a LLaMA-7B checkpoint is
    then megabytes, not 13 GB); the frozen base is rebuilt from its source when a checkpoint is loaded, so
    loading is not strict about the frozen entries.

    Args:
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
        decay_diagonal: also decay LoLDU/SVFit z and sigma (off by default).
        scheduler: ``linear`` (warmup then linear decay to 0) or ``constant`` (warmup then flat).
        warmup_ratio: warmup as a fraction of all steps (used when ``warmup_steps`` is 0).
        warmup_steps: warmup steps (overrides ``warmup_ratio``).
        optimizer: called as ``optimizer(param_groups, lr=lr)`` (conf/optimizer/, a Hydra partial); None: AdamW.
        head_lr: peak lr of the method's head modules (a new classifier); None: ``lr``.
    """

    def __init__(
        self,
        lr: float,
        weight_decay: float = 0.0,
        decay_diagonal: bool = False,
        scheduler: str = "linear",
        warmup_ratio: float = 0.0,
        warmup_steps: int = 0,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        head_lr: float | None = None,
    ):
        super().__init__()
        if scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {scheduler!r}")
        self.optim_settings = {
            "lr": float(lr),
            "weight_decay": float(weight_decay),
            "decay_diagonal": bool(decay_diagonal),
            "scheduler": scheduler,
            "warmup_ratio": float(warmup_ratio),
            "warmup_steps": int(warmup_steps),
            "head_lr": None if head_lr is None else float(head_lr),
        }
        self.optimizer_factory = optimizer or torch.optim.AdamW
        self.strict_loading = False

    # -- parameters and checkpoints ------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        # transformers' from_pretrained returns models in eval mode and Lightning keeps submodule modes:
        # train with dropout as the paper's scripts did.
        self.model.train()
        try:  # AdaLoRA's total_step: the run's optimizer steps; a schedule that does not fit them is refused
            start_training(self.model, max(int(self.trainer.estimated_stepping_batches), 1))
        except ValueError as error:
            raise mark_refusal(error) from None
        counts = {f"params/{k}": float(v) for k, v in count_parameters(self.model).items()}
        for logger in self.loggers:
            logger.log_metrics(counts, step=0)
            logger.log_hyperparams(counts)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # what the method declares as its adapter state (z0/ref, pivots, fingerprints, shared projections...)
        keep = {f"model.{k}" for k in adapter_state_dict(self.model)}
        keep |= {name for name, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        state = training_state(self.model)  # AdaLoRA's rank allocator: outside the state dict, needed to resume
        if state is not None:
            checkpoint["method_state"] = state

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "method_state" in checkpoint:
            load_training_state(self.model, checkpoint["method_state"])

    # -- the method's part in each step (AdaLoRA: orthogonality in the loss, rank reallocation after the step) ---
    def backward(self, loss: torch.Tensor, *args, **kwargs) -> None:
        penalty = training_penalty(self.model)
        if penalty is not None:  # ``loss`` arrives divided by the accumulation and multiplied by AMP's loss scale
            scaler = getattr(self.trainer.precision_plugin, "scaler", None)
            scale = scaler.get_scale() if scaler is not None else 1.0
            loss = loss + penalty * (scale / self.trainer.accumulate_grad_batches)
        super().backward(loss, *args, **kwargs)

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        # the gradients are still there (zeroed before the next backward); global_step counts this step from 0
        after_optimizer_step(self.model, self.trainer.global_step)

    # -- optimizer -------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        s = self.optim_settings
        groups = optimizer_param_groups(self.model, s["weight_decay"], s["decay_diagonal"], s["head_lr"])
        groups = [g for g in groups if g["params"]]
        if not groups:
            raise ValueError("the model has no trainable parameters: check the method and head_modules")
        optimizer = self.optimizer_factory(groups, lr=s["lr"])
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup = s["warmup_steps"] or math.ceil(s["warmup_ratio"] * total)
        scheduler = warmup_schedule(optimizer, s["scheduler"], total, warmup)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def loggers_with(trainer: L.Trainer, method: str) -> list:
    """The trainer's loggers that offer ``method`` (e.g. W&B's ``log_table``, ``log_image``)."""
    return [lg for lg in trainer.loggers if hasattr(lg, method)]
