"""Runs of several processes (``trainer=ddp``, ``trainer=fsdp``): which process writes, what the others are
started with, and the full parameters for the export of a sharded model.

Lightning's subprocess launcher starts processes 1..N-1 by running ``train.py`` again with the same command line.
Under Hydra two things then go wrong on their own: a multirun job's children would run the whole sweep again, and
a child resolves its run folder (``${now:...}``) at its own start time. :func:`prepare_launch` gives the children
this job's overrides and this job's run folder instead. Only global rank 0 writes the run folder
(:func:`loldu.run.folder.is_rank_zero`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Hydra's command-line flags that choose the config and take a value; kept in the children's command line.
_CONFIG_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")
# What Lightning's launcher sets in the environment of the launching process (and reads again in the next job).
_LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
_launched: dict[str, str | None] = {}  # their values before the launch, which end_processes puts back


def launches_processes(trainer_cfg: Mapping[str, Any]) -> bool:
    """Whether Lightning will start more processes of this script for ``cfg.trainer`` (ddp/fsdp, several devices).

    Spawn strategies (``ddp_spawn``) start their processes without the command line and need nothing here.
    """
    strategy = trainer_cfg.get("strategy", "auto")
    name = strategy.get("_target_", "") if isinstance(strategy, Mapping) else str(strategy)
    if "spawn" in name.lower() or os.environ.get("LOCAL_RANK") is not None:
        return False
    devices = trainer_cfg.get("devices", 1)
    count = len(devices) if isinstance(devices, (list, tuple)) else devices
    several = count in ("auto", -1, "-1") or (str(count).isdigit() and int(count) > 1)
    return several or int(trainer_cfg.get("num_nodes", 1) or 1) > 1


def child_command(argv: list[str], task_overrides: list[str], out: Path) -> list[str]:
    """The command line for the processes Lightning starts: this job's overrides, one run, this run folder.

    Args:
        argv: the command line of this process (``sys.argv``).
        task_overrides: this job's overrides (``HydraConfig.get().overrides.task``; a sweep's values included).
        out: this job's run folder.

    Returns:
        ``argv[0]``, Hydra's config flags from ``argv``, the overrides, ``output_dir`` and ``hydra.mode=RUN``
        (a sweep preset sets MULTIRUN; the child must run this job only).
    """
    flags = []
    for i, arg in enumerate(argv[1:], start=1):
        name = arg.split("=", 1)[0]
        if name in _CONFIG_FLAGS:
            flags += [arg] if "=" in arg else argv[i : i + 2]
    overrides = [o for o in task_overrides if o.split("=", 1)[0].lstrip("+~") != "output_dir"]
    return [argv[0], *flags, *overrides, f"output_dir={out.resolve()}", "hydra.mode=RUN"]


def prepare_launch(cfg: Any, out: Path) -> None:
    """Before the trainer starts: make the processes Lightning launches run this job in ``out``.

    Rewrites ``sys.argv`` (which Lightning's launcher copies) with :func:`child_command` and points Hydra's
    ``run.dir`` (which the launcher passes as ``hydra.run.dir``) at ``out``. Does nothing outside Hydra, in a child,
    or when no processes will be launched.
    """
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict, read_write

    if not HydraConfig.initialized() or not launches_processes(cfg.trainer):
        return
    hydra_cfg = HydraConfig.get()
    sys.argv = child_command(sys.argv, list(hydra_cfg.overrides.task), out)
    _launched.update({key: os.environ.get(key) for key in _LAUNCH_ENV})  # Lightning sets them in this process
    with read_write(hydra_cfg), open_dict(hydra_cfg):
        hydra_cfg.run.dir = str(out.resolve())
    log.info("processes 1..N-1 will run: %s", " ".join(sys.argv))


def end_processes() -> None:
    """After a run: no process group is left behind, so that the next job of a multirun in this process starts its
    own processes. Lightning leaves the group until the interpreter exits, and the ranks and port of this run in
    the environment: the next job's trainer would take itself for a child (``LOCAL_RANK``) and wait for the previous
    job's finished processes. Both are put back as they were before :func:`prepare_launch`."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    for key, value in _launched.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _launched.clear()


@contextlib.contextmanager
def full_parameters(trainer: Any) -> Iterator[None]:
    """Inside, a model trained with FSDP holds its full (unsharded) parameters on every rank; other strategies
    are left as they are. Every rank must enter (it is a collective)."""
    from lightning.pytorch.strategies import FSDPStrategy

    if not isinstance(trainer.strategy, FSDPStrategy):
        yield
        return
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    with FSDP.summon_full_params(trainer.strategy.model, writeback=False, rank0_only=False):
        yield


@functools.cache
def _fsdp_strategy_class() -> type:
    from lightning.pytorch.strategies import FSDPStrategy as LightningFSDP

    class FSDPStrategy(LightningFSDP):
        """Lightning's FSDP strategy (``trainer=fsdp``), which also runs on CPU (gloo) and tests after fitting.

        Lightning's own class refuses ``accelerator=cpu`` (its trainer checks for that class exactly) and wraps with
        the device's index, which a CPU has not; PyTorch's FSDP runs on CPU given ``device_id=cpu``
        (tests/test_fsdp.py). And ``trainer.test`` after ``trainer.fit`` would wrap the model a second time, over
        parameters that the first wrapper has sharded. So this wraps once, with the root device, and keeps the
        wrapper for the stages that follow; the rest is Lightning's.
        """

        def _setup_model(self, model):
            from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

            wrapped = getattr(self, "_loldu_wrapped", None)
            if wrapped is None or wrapped.module is not model:
                settings = {"cpu_offload": self.cpu_offload, "sharding_strategy": self.sharding_strategy}
                mixed = self.mixed_precision_config
                wrapped = FSDP(model, mixed_precision=mixed, device_id=self.root_device, **settings, **self.kwargs)
                self._loldu_wrapped = wrapped
            return super()._setup_model(wrapped)

    return FSDPStrategy


def __getattr__(name: str) -> Any:  # FSDPStrategy without importing Lightning with this module
    if name == "FSDPStrategy":
        return _fsdp_strategy_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
