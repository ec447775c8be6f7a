"""Multiruns (``python train.py -m ...``, ``sweep=<preset>``): what a sweep varies, checks before any job starts,
and where it writes, and at the end of a ``logger=wandb`` sweep its W&B dashboard (:mod:`loldu.sweeps.dashboard`,
imported only then). Torch-free: Hydra runs :class:`SweepCallback` (``conf/hydra/default.yaml``) in the launching
process before and after the jobs.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from loldu.config import RANKED_METHODS, unescape

log = logging.getLogger(__name__)


def swept_values(config: DictConfig) -> dict[str, list[str]]:
    """The values each key of a multirun takes, as the basic sweeper expands them: the preset's
    ``hydra.sweeper.params`` first, then the command line's overrides (which win for the same key).

    Keys set to one value map to a one-element list; keys whose values cannot be listed before the sweep (an
    interval of an optimising sweeper, a glob over config files) are left out.
    """
    params = config.hydra.get("sweeper", {}).get("params") or {}
    overrides = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    values: dict[str, list[str]] = {}
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.get_key_element()
        try:
            if override.is_sweep_override():
                listed = override.sweep_string_iterator() if override.is_discrete_sweep() else None
                values[key] = None if listed is None else [unescape(v) for v in listed]
            else:
                values[key] = [override.get_value_element_as_str()]
        except Exception:  # a glob needs the config loader: the sweep lists it, not us
            values[key] = None
    return {k: v for k, v in values.items() if v is not None}


def _full_ranks(config: DictConfig, models: list[str] | None) -> dict[str, int]:
    """``model.full_rank`` of the launched model, or of each swept model (composed one at a time); models
    without one are left out."""
    if not models:
        found = {str(config.hydra.runtime.choices.get("model", "model")): config.model.get("full_rank")}
    else:
        from hydra import compose

        name = config.hydra.job.config_name
        found = {m: compose(name, overrides=[f"model={m}"]).model.get("full_rank") for m in models}
    return {m: int(r) for m, r in found.items() if isinstance(r, int)}


def check_ranks(config: DictConfig) -> None:
    """Refuse a sweep whose ranks do not fit a swept (or the launched) model, before any job runs; with
    ``skip_unfit_ranks`` (``sweep=rank_ablation``) say which jobs will be skipped instead.

    A rank written as an interpolation (``${model.full_rank}``) or null always fits.

    Raises:
        ValueError: a rank above the model's ``full_rank`` for a method bounded by it, naming the ranks that fit.
    """
    values = swept_values(config)
    methods = values.get("method", [str(config.method.name)])
    ranks = values.get("rank", [])
    if not ranks or not any(m in RANKED_METHODS for m in methods):
        return
    numbers = [int(r) for r in ranks if r.lstrip("-").isdigit()]
    models = values.get("model", [])
    for model, full in _full_ranks(config, models if len(models) > 1 else None).items():
        too_big = [r for r in numbers if r > full]
        if too_big and config.get("skip_unfit_ranks"):
            log.warning(
                "rank(s) %s exceed model %s's full rank %d: those jobs will be skipped (skip_unfit_ranks=true; the "
                "report lists them as skipped)",
                ",".join(map(str, too_big)),
                model,
                full,
            )
        elif too_big:
            fit = ",".join(r for r in ranks if not r.lstrip("-").isdigit() or int(r) <= full) or str(full)
            raise ValueError(
                f"this sweep's rank(s) {','.join(map(str, too_big))} exceed model {model}'s full rank {full} "
                f"(min(out, in) of its target layers), so those jobs would fail after the others ran: sweep ranks "
                f"up to {full}, e.g. 'rank={fit}' (the command line's ranks replace a preset's; "
                "the value ${model.full_rank} stands for each model's full rank)"
            )


def report_command(sweep_dir: str | Path) -> str:
    """The command that tabulates and plots a multirun folder."""
    return f"make report DIR={sweep_dir}"


class SweepCallback(Callback):
    """Checks a multirun before its first job and says where it writes, at the start and at the end; at the end of
    a ``logger=wandb`` multirun it writes (online: saves) the sweep's W&B dashboard."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Refuse ranks that do not fit (exiting: Hydra turns a callback's exceptions into warnings), then log the
        multirun folder and the report command."""
        try:
            check_ranks(config)
        except ValueError as err:
            raise SystemExit(f"sweep refused before any job ran: {err}") from None
        folder = config.hydra.sweep.dir
        log.info("multirun folder: %s (when done: %s)", folder, report_command(folder))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Log the multirun folder again, with the report command; with ``logger=wandb``, write the sweep's W&B
        dashboard (:func:`sweep_dashboard`)."""
        folder = config.hydra.sweep.dir
        log.info("multirun finished: %s\n  report: %s", folder, report_command(folder))
        sweep_dashboard(config)


def _wandb_mode(config: DictConfig) -> str:
    """The sweep's W&B mode: ``logger.wandb.mode`` resolved (``WANDB_MODE`` wins; online with ``WANDB_API_KEY``,
    offline without), by the rule of :func:`loldu.config.resolvers.wandb_mode` if it cannot be resolved here."""
    from loldu.config.resolvers import wandb_mode

    try:
        mode = OmegaConf.select(config, "logger.wandb.mode", default=None)
    except Exception:  # a resolver Hydra's plugins did not register in this process
        mode = None
    return mode if isinstance(mode, str) else wandb_mode(None)


def sweep_dashboard(config: DictConfig) -> None:
    """With ``logger.wandb`` set, write the W&B view of the multirun (``<sweep dir>/dashboard.json``,
    :mod:`loldu.sweeps.dashboard`) and, when W&B is online (mode ``online`` and ``WANDB_API_KEY`` set), save it
    to W&B. Any failure is one logged warning: the sweep's runs are done and stay done."""
    try:
        if OmegaConf.select(config, "logger.wandb", default=None) is None:
            return
    except Exception:  # no logger node to read: no W&B run either
        return
    folder = config.hydra.sweep.dir
    try:
        from loldu.sweeps import dashboard  # imports wandb: only at the end of a W&B sweep

        workspace, path = dashboard.write_dashboard(folder)
        if _wandb_mode(config) == "online" and os.environ.get("WANDB_API_KEY"):
            log.info("W&B dashboard of the sweep: %s", dashboard.push(workspace, path))
        else:
            log.info(
                "W&B dashboard of the sweep written to %s; to save it in W&B: WANDB_API_KEY=... python -m "
                "loldu.sweeps.dashboard %s --push",
                path,
                folder,
            )
    except Exception as error:  # never fail a finished sweep over its dashboard
        lines = str(error).strip().splitlines()
        log.warning("no W&B dashboard of the sweep %s: %s", folder, lines[0] if lines else type(error).__name__)
