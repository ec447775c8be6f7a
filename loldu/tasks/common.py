"""What every task family's LightningModule shares: the optimizer and schedule, performance logging, and
checkpoints that hold only what training changes.
"""

from __future__ import annotations

import math
import resource
import time

import lightning as L
import torch

from loldu.methods import adapter_state_dict, count_parameters, optimizer_param_groups

SCHEDULERS = ("linear", "constant")


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
    """

    def __init__(
        self,
        lr: float,
        weight_decay: float = 0.0,
        decay_diagonal: bool = False,
        scheduler: str = "linear",
        warmup_ratio: float = 0.0,
        warmup_steps: int = 0,
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
        }
        self.strict_loading = False
        self._step_start = 0.0

    # -- parameters and checkpoints ------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        # transformers' from_pretrained returns models in eval mode and Lightning keeps submodule modes:
        # train with dropout as the paper's scripts did.
        self.model.train()
        counts = {f"params/{k}": float(v) for k, v in count_parameters(self.model).items()}
        for logger in self.loggers:
            logger.log_metrics(counts, step=0)
            logger.log_hyperparams(counts)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # what the method declares as its adapter state (z0/ref, pivots, fingerprints, shared projections...)
        keep = {f"model.{k}" for k in adapter_state_dict(self.model)}
        keep |= {name for name, p in self.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}

    # -- performance logging ---------------------------------------------------------------------------------
    def on_train_batch_start(self, batch, batch_idx) -> None:
        self._step_start = time.perf_counter()

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.log("perf/step_time_s", time.perf_counter() - self._step_start, on_step=True, on_epoch=False)
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:  # peak resident set size of the process (Linux reports KiB)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.log("perf/peak_mem_mib", peak, on_step=True, on_epoch=False)

    # -- optimizer -------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        s = self.optim_settings
        groups = optimizer_param_groups(self.model, s["weight_decay"], s["decay_diagonal"])
        groups = [g for g in groups if g["params"]]
        if not groups:
            raise ValueError("the model has no trainable parameters: check the method and head_modules")
        optimizer = torch.optim.AdamW(groups, lr=s["lr"])
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup = s["warmup_steps"] or math.ceil(s["warmup_ratio"] * total)
        constant = s["scheduler"] == "constant"

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            if constant:
                return 1.0
            return max(0.0, (total - step) / max(1, total - warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
