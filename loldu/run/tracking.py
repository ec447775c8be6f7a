"""What a W&B run records so that a dashboard can group and filter runs: its name, group, tags, config fields and
summary, and a start that cannot hang. Torch-free; ``loldu.run.skeleton.build_trainer`` passes
:func:`wandb_run_args` to the ``WandbLogger`` of ``conf/logger/wandb.yaml``, :func:`start_wandb` starts its run
before training and :func:`log_summary` writes the results at the end.

An online run whose W&B server cannot be reached (no network, a wrong ``WANDB_BASE_URL``) used to wait in
``wandb.init`` (the first use of ``WandbLogger.experiment``: the login itself only reads ``WANDB_API_KEY``) while
wandb retried for its default ``init_timeout`` of 90 s plus a 10 s grace, then failed with wandb's advice to raise
the timeout. Now ``wandb.init`` gets ``init_timeout`` :data:`INIT_TIMEOUT_S` (the run stops within about 30 s) and
:func:`start_wandb` turns the failure into one line saying what to check and how to run without the server.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from loldu.config import choice, mark_refusal
from loldu.run.folder import json_safe

# Config fields a dashboard groups and filters by, first in the W&B config.
FIELDS = ("model", "task", "method", "rank", "lr", "seed", "epochs", "sweep_name", "sweep")

#: ``wandb.init``'s ``init_timeout`` (s) unless ``logger.wandb.settings`` sets one: wandb waits 10 s more for its
#: service to report the error, so a server that cannot be reached stops the run within about 30 s.
INIT_TIMEOUT_S = 18

#: Keys of ``metrics.json``'s ``perf`` (:class:`loldu.run.callbacks.PerfLogger`) in the run summary, as ``perf/<key>``.
SUMMARY_PERF = ("step_time_s", "step_time_iqr_s", "peak_mem_mib", "peak_mem_kind")


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
    full resolved run config under ``config``), the ``name``, ``group`` and ``tags`` that
    ``conf/logger/wandb.yaml`` leaves null (the file's own values win), and ``settings`` with ``init_timeout``
    :data:`INIT_TIMEOUT_S` added to the file's (``+logger.wandb.settings.init_timeout=90`` wins)."""
    fields = dashboard_fields(cfg)
    node = cfg.logger.wandb
    tags = [fields["model"], fields["task"], fields["method"]] + [fields["sweep_name"]] * bool(fields["sweep_name"])
    settings = OmegaConf.to_container(node.settings, resolve=True) if node.get("settings") else {}
    return {
        "config": {**fields, "config": OmegaConf.to_container(cfg, resolve=True)},
        "name": node.get("name") or run_name(fields),
        "group": node.get("group") or fields["sweep"],
        "tags": list(dict.fromkeys(tags + list(node.get("tags") or []))),
        "settings": {"init_timeout": INIT_TIMEOUT_S, **settings},
    }


class WandbLoginError(RuntimeError):
    """The W&B run could not start: the server refused the API key or could not be reached in time."""


def start_wandb(loggers: list) -> None:
    """Start the W&B run of each ``WandbLogger`` in ``loggers`` now (``wandb.init``, which Lightning would call at
    the first log), so that a run that cannot log in stops before training, with one line saying what to do.

    On processes other than rank 0 Lightning's logger starts nothing. Other loggers are left alone.

    Raises:
        WandbLoginError: ``wandb.init`` failed or timed out (marked as a refusal: ``train.py`` prints its one line
            and exits with status 2); wandb's own error is its cause.
    """
    from lightning.pytorch.loggers import WandbLogger

    for logger in loggers:
        if not isinstance(logger, WandbLogger):
            continue
        from wandb.errors import Error as WandbError

        started = time.monotonic()
        try:
            _ = logger.experiment  # the property starts the run
        except (WandbError, TimeoutError) as error:
            raise mark_refusal(WandbLoginError(login_failure(error, time.monotonic() - started))) from error


def login_failure(error: BaseException, elapsed_s: float) -> str:
    """The one line of a W&B run that could not start after ``elapsed_s`` seconds with wandb's ``error``."""
    within = f" within {elapsed_s:.0f} s" if elapsed_s >= INIT_TIMEOUT_S else ""
    server = os.environ.get("WANDB_BASE_URL")
    reach = f" and that {server} (WANDB_BASE_URL) can be reached" if server else " and the network"
    cause = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return (
        f"W&B could not log in{within}: check WANDB_API_KEY{reach}, or run with WANDB_MODE=offline (sync later "
        f"with `wandb sync`) / logger=csv (wandb: {cause})"
    )


def summary_values(metrics: dict) -> dict[str, Any]:
    """The run summary of ``metrics.json``'s content: ``params/*``, the test (else validation) metrics, the wall
    time, ``adapter_bytes``, ``perf/step_time_s`` (the median), ``perf/step_time_iqr_s``, ``perf/peak_mem_mib``,
    ``perf/peak_mem_kind``, ``git/commit``, ``git/dirty``, ``device/name``, ``device/accelerator`` and
    ``versions/<package>`` for each recorded version (:mod:`loldu.run.provenance`; a dashboard's runs table names
    these keys). A value the run did not record is None, and so is a non-finite one."""
    values = {f"params/{k}": v for k, v in metrics.get("params", {}).items()}
    values.update(metrics.get("test") or metrics.get("val") or {})
    values["wall_time_s"] = metrics.get("wall_time_s")
    values["adapter_bytes"] = metrics.get("adapter_bytes")
    perf, git, device = (metrics.get(key) or {} for key in ("perf", "git", "device"))
    for key in SUMMARY_PERF:
        values[f"perf/{key}"] = perf.get(key)
    values.update({"git/commit": git.get("commit"), "git/dirty": git.get("dirty")})
    values.update({"device/name": device.get("name"), "device/accelerator": device.get("accelerator")})
    values.update({f"versions/{name}": version for name, version in (metrics.get("versions") or {}).items()})
    return json_safe(values)


def log_summary(metrics: dict) -> None:
    """Write :func:`summary_values` into the active W&B run's summary (nothing without one)."""
    wandb = sys.modules.get("wandb")  # imported by the WandbLogger; no W&B logger, no import
    if wandb is not None and wandb.run is not None:
        wandb.run.summary.update(summary_values(metrics))
