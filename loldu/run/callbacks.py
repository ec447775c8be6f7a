"""The run's own Lightning callback: step time and peak memory (``PerfLogger``, configured in ``conf/callbacks/``).

The task families' callbacks (causal-LM generations, diffusion sample grids) live with their families in
:mod:`loldu.tasks`; checkpoints in :mod:`loldu.run.checkpointing`; the divergence guard in :mod:`loldu.run.guards`.
"""

from __future__ import annotations

import resource
import statistics
import time

import lightning as L
import torch


class PerfLogger(L.Callback):
    """Logs ``perf/step_time_s`` (wall time of each training batch) and ``perf/peak_mem_mib`` (peak CUDA memory,
    or the process's peak resident set size on CPU) at every step, and keeps a run's :meth:`summary` for
    ``metrics.json`` (its median step time leaves out the first ``skip`` steps: allocator and kernel warm-up)."""

    def __init__(self, skip: int = 3):
        self._start = 0.0
        self.skip = skip
        self.step_times: list[float] = []
        self.peak_mem_mib = 0.0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        elapsed = time.perf_counter() - self._start
        self.step_times.append(elapsed)
        pl_module.log("perf/step_time_s", elapsed, on_step=True, on_epoch=False)
        if pl_module.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(pl_module.device) / 2**20
        else:  # Linux reports KiB
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.peak_mem_mib = max(self.peak_mem_mib, peak)
        pl_module.log("perf/peak_mem_mib", peak, on_step=True, on_epoch=False)

    def summary(self) -> dict:
        """``{"step_time_s": median wall time of a training batch (after the first skip), "steps": measured,
        "peak_mem_mib": ...}``; empty before any step."""
        times = self.step_times[self.skip :] or self.step_times
        if not times:
            return {}
        return {"step_time_s": statistics.median(times), "steps": len(times), "peak_mem_mib": self.peak_mem_mib}
