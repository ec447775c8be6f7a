"""The run's own Lightning callback: step time and peak memory (``PerfLogger``, configured in ``conf/callbacks/``).

The task families' callbacks (causal-LM generations, diffusion sample grids) live with their families in
:mod:`loldu.tasks`; checkpoints in :mod:`loldu.run.checkpointing`; the divergence guard in :mod:`loldu.run.guards`.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time

import lightning as L
import torch


class PerfLogger(L.Callback):
    """Logs ``perf/step_time_s`` (wall time of each training batch) and ``perf/peak_mem_mib`` at every step, and
    keeps a run's :meth:`summary` for ``metrics.json`` (its step-time statistics leave out the first ``skip`` steps:
    allocator and kernel warm-up).

    The peak memory is ``torch.cuda.max_memory_allocated`` on CUDA (the tensors this process allocated on its
    device, since fit started: ``peak_mem_kind`` ``"cuda_max_allocated"``), and elsewhere the peak resident set size
    of the whole process (``ru_maxrss``: ``"cpu_max_rss"``), which counts the interpreter, the imported libraries,
    the data and everything else the process holds, not the model alone: compare it between runs on the same
    machine and setup, never with a CUDA number.
    """

    def __init__(self, skip: int = 3):
        self._start = 0.0
        self.skip = skip
        self.step_times: list[float] = []
        self.peak_mem_mib = 0.0
        self.peak_mem_kind: str | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        elapsed = time.perf_counter() - self._start
        self.step_times.append(elapsed)
        pl_module.log("perf/step_time_s", elapsed, on_step=True, on_epoch=False)
        peak, self.peak_mem_kind = peak_memory_mib(pl_module.device)
        self.peak_mem_mib = max(self.peak_mem_mib, peak)
        pl_module.log("perf/peak_mem_mib", peak, on_step=True, on_epoch=False)

    def summary(self) -> dict:
        """``{"step_time_s": median wall time of a training batch, "step_time_iqr_s": its interquartile range
        (p75 - p25), "step_time_p10_s", "step_time_p90_s", "steps": how many were measured, "peak_mem_mib",
        "peak_mem_kind": "cuda_max_allocated" or "cpu_max_rss"}`` over the steps after the first ``skip`` (all of
        them when there are no more); empty before any step. Quantiles interpolate between the measured steps
        (``statistics.quantiles``, inclusive); with one step each is that step's time and the range is 0."""
        times = self.step_times[self.skip :] or self.step_times
        if not times:
            return {}
        return {
            **step_time_stats(times),
            "steps": len(times),
            "peak_mem_mib": self.peak_mem_mib,
            "peak_mem_kind": self.peak_mem_kind,
        }


def step_time_stats(times: list[float]) -> dict[str, float]:
    """``step_time_s`` (median), ``step_time_iqr_s`` (p75 - p25), ``step_time_p10_s`` and ``step_time_p90_s`` of
    ``times`` (at least one)."""
    if len(times) < 2:
        (only,) = times
        return {"step_time_s": only, "step_time_iqr_s": 0.0, "step_time_p10_s": only, "step_time_p90_s": only}
    quartiles = statistics.quantiles(times, n=4, method="inclusive")
    deciles = statistics.quantiles(times, n=10, method="inclusive")
    return {
        "step_time_s": statistics.median(times),
        "step_time_iqr_s": quartiles[2] - quartiles[0],
        "step_time_p10_s": deciles[0],
        "step_time_p90_s": deciles[-1],
    }


def peak_memory_mib(device: torch.device) -> tuple[float, str]:
    """The peak memory so far in MiB and what it measures: ``torch.cuda.max_memory_allocated`` of a CUDA ``device``
    (``"cuda_max_allocated"``), else the process's peak resident set size (``"cpu_max_rss"``)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 1024), "cpu_max_rss"
