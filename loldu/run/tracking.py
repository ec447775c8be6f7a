"""What a W&B run records so that a dashboard can group and filter runs: its name, group, tags, config fields and
summary. Torch-free; ``loldu.run.skeleton.build_trainer`` passes :func:`wandb_run_args` to the ``WandbLogger`` of
``conf/logger/wandb.yaml`` and :func:`log_summary` writes the results at the end.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from loldu.config import choice
from loldu.run.folder import json_safe

# Config fields a dashboard groups and filters by, first in the W&B config.
FIELDS = ("model", "task", "method", "rank", "lr", "seed", "epochs", "sweep_name", "sweep")


def sweep_group(cfg: DictConfig) -> str | None:
    """The W&B group of this run's sweep instance: ``<preset or "sweep">_<date>_<time>`` from the multirun folder
    (``multirun/<date>/<time>``), so that two sweeps never share a group; None outside a multirun."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra = HydraConfig.get()
        if hydra.mode != RunMode.MULTIRUN:
            return None
        folder = Path(hydra.sweep.dir)
    except Exception:  # not under Hydra (a test's compose without the Hydra config)
        return None
    return "_".join([cfg.get("sweep_name") or "sweep", folder.parent.name, folder.name])


def dashboard_fields(cfg: DictConfig) -> dict[str, Any]:
    """The resolved values a dashboard groups by: model and task (their choice names), method, rank (the
    method's resolved rank), lr, seed, epochs, the preset's name and the sweep instance."""
    return {
        "model": choice("model"),
        "task": choice("task"),
        "method": cfg.method.name,
        "rank": cfg.method.get("r"),
        "lr": cfg.lr,
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "sweep_name": cfg.get("sweep_name"),
        "sweep": sweep_group(cfg),
    }


def run_name(fields: dict[str, Any]) -> str:
    """``<method>_r<rank>_lr<lr>_s<seed>`` of the resolved values (e.g. ``loldu_r384_lr0.003_s0``)."""
    return f"{fields['method']}_r{fields['rank']}_lr{fields['lr']:g}_s{fields['seed']}"


def wandb_run_args(cfg: DictConfig) -> dict[str, Any]:
    """Keyword arguments of the ``WandbLogger``: ``config`` (the :func:`dashboard_fields` at the top level, the
    full resolved run config under ``config``), and the ``name``, ``group`` and ``tags`` that
    ``conf/logger/wandb.yaml`` leaves null (the file's own values win)."""
    fields = dashboard_fields(cfg)
    node = cfg.logger.wandb
    tags = [fields["model"], fields["task"], fields["method"]] + [fields["sweep_name"]] * bool(fields["sweep_name"])
    return {
        "config": {**fields, "config": OmegaConf.to_container(cfg, resolve=True)},
        "name": node.get("name") or run_name(fields),
        "group": node.get("group") or fields["sweep"],
        "tags": list(dict.fromkeys(tags + list(node.get("tags") or []))),
    }


def summary_values(metrics: dict) -> dict[str, Any]:
    """The run summary of ``metrics.json``'s content: ``params/*``, the test (else validation) metrics and the
    wall time; non-finite values become None."""
    values = {f"params/{k}": v for k, v in metrics.get("params", {}).items()}
    values.update(metrics.get("test") or metrics.get("val") or {})
    values["wall_time_s"] = metrics.get("wall_time_s")
    return json_safe(values)


def log_summary(metrics: dict) -> None:
    """Write :func:`summary_values` into the active W&B run's summary (nothing without one)."""
    wandb = sys.modules.get("wandb")  # imported by the WandbLogger; no W&B logger, no import
    if wandb is not None and wandb.run is not None:
        wandb.run.summary.update(summary_values(metrics))
