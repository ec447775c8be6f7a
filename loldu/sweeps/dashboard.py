"""The team dashboard of a sweep in W&B: a saved workspace view of the sweep's runs, built with ``wandb_workspaces``.

    python -m loldu.sweeps.dashboard multirun/2026-11-23/12-00-00-123456-789 [--push] [--project P] [--entity E]
    make dashboard DIR=multirun/2026-11-23/12-00-00-123456-789

The view shows the runs of the sweep's W&B group (:func:`sweep_target`: ``<sweep_name or "sweep">_<date>_<time>``,
as :func:`loldu.run.tracking.sweep_group` names it), grouped by method, rank and the other keys the sweep varied
(seeds aside, so that each group is one setting and its panels show the mean and spread over seeds), in sections:

- "Validation curves": each ``val/*`` metric the runs logged against ``trainer/global_step``;
- "Test results": each ``test/*`` metric, one bar per group (mean ± std);
- "Best by <key>" for each swept key but the seed: the task's monitored metric (``task.monitor``) per value of the
  key, its best run and its mean ± std over runs;
- "Parallel coordinates": the swept keys (W&B config) and the monitored validation and test metrics;
- "Runs": a run comparer, bars of the efficiency numbers, and the runs table's columns (:data:`RUN_SUMMARY_KEYS`).

Which metrics exist comes from the runs themselves: the columns of each job's ``csv/metrics.csv`` (Lightning's
CSVLogger logs the names W&B logs) and its ``metrics.json``. A swept override maps to its W&B config key by
:func:`wandb_config_key`.

Offline (the default) the view is written to ``<sweep>/dashboard.json``: the library's model of the view
(``Workspace._to_model()``), dumped as ``Workspace.save`` sends it (``by_alias``, ``exclude_none``); the view's
``spec`` is the string ``save`` uploads. ``--push`` saves it with ``Workspace.save`` (network and
``WANDB_API_KEY``), then writes dashboard.json again with the saved view's entity, name and id. Hydra's
:class:`loldu.sweeps.callback.SweepCallback` writes (and, online, pushes) it at the end of a ``logger=wandb`` sweep.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import wandb_workspaces.reports.v2 as wr
import wandb_workspaces.workspaces as ws
from wandb_workspaces.expr import FE_METRIC_NAME_MAP

from loldu.config.saved import UnsafeRunFolder, read_run_config
from loldu.run.folder import write_json
from loldu.run.tracking import FIELDS as WANDB_FIELDS
from loldu.sweeps.runs import collect, run_folders, swept_keys

log = logging.getLogger(__name__)

FILE = "dashboard.json"
#: The x-axis of the curves: Lightning's WandbLogger logs it with every metric (``define_metric`` step).
X_AXIS = "trainer/global_step"
#: Summary keys of what a run recorded about how it ran (loldu.run.tracking.summary_values): the runs table.
RUN_SUMMARY_KEYS = (
    "params/adapter",
    "params/trainable",
    "adapter_bytes",
    "perf/step_time_s",
    "perf/step_time_iqr_s",
    "perf/peak_mem_mib",
    "perf/peak_mem_kind",
    "device/name",
    "git/commit",
    "git/dirty",
    "versions/torch",
    "versions/peft",
)
#: Of those, the numbers compared in bars (mean ± std per group).
RUN_BARS = ("params/trainable", "adapter_bytes", "perf/step_time_s", "perf/peak_mem_mib")
#: Swept override keys whose W&B config field has another name (``sweep=<preset>``: the preset's ``sweep_name``;
#: the W&B field ``sweep`` is the sweep instance, the group).
RENAMED = {"sweep": "sweep_name"}
#: W&B run attributes (the backend names of ``Metric("Group")`` and the like): recorded for every run.
RUN_ATTRIBUTES = frozenset(FE_METRIC_NAME_MAP.values())


# -- what the sweep ran and logged -------------------------------------------------------------------------------
def _iter_configs(folder: Path) -> Iterator[dict]:
    """The saved config.yaml of each run folder below ``folder`` that has a readable one, in job order, read as
    asked for."""
    for run in run_folders(folder):
        try:
            cfg = read_run_config(run, check_targets=False) if (run / "config.yaml").is_file() else None
        except UnsafeRunFolder:
            continue
        if isinstance(cfg, dict):
            yield cfg


def _configs(folder: Path) -> list[dict]:
    """Every readable config.yaml below ``folder`` (:func:`_iter_configs`)."""
    return list(_iter_configs(folder))


def sweep_target(rows: list[dict], folder: str | Path, project: str | None, configs: list[dict] | None = None) -> dict:
    """``{"project", "entity", "group"}`` of a sweep's W&B runs: the project and entity of the first readable run's
    ``logger.wandb`` (``project`` wins; ``loldu`` without either; entity None: the API key's default), and the
    group ``<sweep_name or "sweep">_<date>_<time>`` of the multirun folder ``<date>/<time>``, the rule of
    :func:`loldu.run.tracking.sweep_group` (``sweep_name`` from the run's config, else its ``sweep=`` override).
    ``configs``: the runs' configs where the caller has read them (else only the first readable one is read)."""
    folder = Path(folder)
    target, sweep_name = {"project": project or "loldu", "entity": None}, None
    first = configs[0] if configs else next(_iter_configs(folder), None)
    if first is not None:
        node = (first.get("logger") or {}).get("wandb") or {}
        target.update(project=project or node.get("project") or "loldu", entity=node.get("entity"))
        sweep_name = first.get("sweep_name")
    overrides = (r["overrides"].get("sweep") for r in rows if r["overrides"].get("sweep"))
    sweep_name = sweep_name or next(overrides, None)
    target["group"] = "_".join([sweep_name or "sweep", folder.resolve().parent.name, folder.resolve().name])
    return target


def wandb_config_key(key: str) -> str:
    """The W&B config key of a swept override ``key``: the dashboard fields (model, task, method, rank, lr, seed,
    epochs, sweep_name) are top-level; anything else is its path in the full resolved config, which the run logs
    under ``config`` (``method.options.init`` -> ``config.method.options.init``)."""
    key = RENAMED.get(key, key)
    return key if key in WANDB_FIELDS else f"config.{key}"


def _lookup(node: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def dashboard_keys(swept: list[str], configs: list[dict]) -> list[str]:
    """The swept keys (seeds included) that have a value in the W&B config: the dashboard fields, and the others
    whose path holds a value (not a node) in some run's resolved config; a swept config group
    (``optimizer=...``) has no single value there and is left out, with a warning."""
    keys = []
    for key in swept:
        path = wandb_config_key(key)
        values = [_lookup(c, path.removeprefix("config.")) for c in configs] if path.startswith("config.") else [key]
        if not any(v is not None and not isinstance(v, dict) for v in values):
            log.warning("dashboard: swept %r is no value of the runs' config, so no panel shows it", key)
            continue
        keys.append(key)
    return keys


def logged_metrics(folder: str | Path) -> list[str]:
    """The metric names the sweep's runs logged: the header of each run's ``csv/metrics.csv`` (Lightning's
    CSVLogger: the names the WandbLogger logs) and the ``test``/``val`` keys of its ``metrics.json``; sorted."""
    names: set[str] = set()
    for run in run_folders(Path(folder)):
        for path in sorted((run / "csv").rglob("metrics.csv")) if (run / "csv").is_dir() else []:
            with open(path, newline="", encoding="utf-8") as fh:
                names.update(next(csv.reader(fh), []))
        try:
            metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").is_file() else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            metrics = {}  # the report names it (loldu.sweeps.runs)
        for part in ("test", "val"):
            values = metrics.get(part) if isinstance(metrics, dict) else None
            names.update(k for k in values or {} if isinstance(k, str) and "/" in k)
    return sorted(n for n in names if n)


def headline(configs: list[dict], metrics: list[str]) -> tuple[str | None, str]:
    """The validation metric the sweep is judged on and whether larger is better (``max``/``min``): the runs'
    ``task.monitor`` and ``task.monitor_mode`` when logged, else the first ``val/`` metric that is not a loss
    (``max``), else ``val/loss`` (``min``); None without a validation metric."""
    task = (configs[0].get("task") or {}) if configs else {}
    monitor = task.get("monitor")
    if monitor in metrics:
        mode = task.get("monitor_mode")
        return monitor, mode if mode in ("min", "max") else ("min" if monitor.endswith("loss") else "max")
    val = [m for m in metrics if m.startswith("val/")]
    best = next((m for m in val if not m.endswith("loss")), None)
    if best:
        return best, "max"
    return ("val/loss", "min") if "val/loss" in val else (None, "max")


# -- the view --------------------------------------------------------------------------------------------------------
def _bar(metric: str, title: str | None = None, groupby=None, agg: str = "mean", spread: str | None = "stddev"):
    """Vertical bars of ``metric``: one per group (the runset's grouping, or ``groupby``), ``agg`` over its runs
    with ``spread`` as the error bar."""
    return wr.BarPlot(
        title=title or f"{metric} (mean ± std)",
        metrics=[metric],
        orientation="v",
        groupby=groupby,
        groupby_aggfunc=agg,
        groupby_rangefunc=spread,
    )


def build_workspace(folder: str | Path, project: str | None = None, entity: str | None = None) -> ws.Workspace:
    """The saved view of a sweep folder (see the module's docstring); ``entity`` wins over the runs' entity, then
    ``WANDB_ENTITY``; without any it is empty ("": ``--push`` asks W&B for the API key's default entity).

    Raises:
        FileNotFoundError: no run below ``folder``.
    """
    folder = Path(folder)
    rows = collect(folder)
    configs = _configs(folder)
    target = sweep_target(rows, folder, project, configs)
    metrics = logged_metrics(folder)
    monitor, mode = headline(configs, metrics)
    swept = dashboard_keys(swept_keys(rows), configs)
    settings = [k for k in swept if k != "seed"]  # one group per setting: its runs differ by seed only
    groupby = list(dict.fromkeys(["method", "rank"] + [wandb_config_key(k) for k in settings]))
    val = [m for m in metrics if m.startswith("val/")]
    test = [m for m in metrics if m.startswith("test/")]
    test_headline = f"test/{monitor.removeprefix('val/')}" if monitor else None
    shown = [m for m in (monitor, test_headline) if m in metrics]

    sections = {
        "Validation curves": [
            wr.LinePlot(title=m, x=X_AXIS, y=[m], groupby_aggfunc="mean", groupby_rangefunc="stddev") for m in val
        ],
        "Test results": [_bar(m) for m in test],
    }
    for key in settings if monitor else []:
        column = wr.Config(wandb_config_key(key))
        sections[f"Best by {key}"] = [
            _bar(monitor, f"best {monitor} by {key}", column, agg=mode, spread=None),
            _bar(monitor, f"{monitor} by {key}: mean ± std over runs", column),
        ]
    columns = [wr.ParallelCoordinatesPlotColumn(metric=wr.Config(wandb_config_key(k)), display_name=k) for k in swept]
    columns += [wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric(m)) for m in shown]
    title = f"{', '.join(swept) or 'runs'} -> {', '.join(shown) or 'no metric'}"
    sections["Parallel coordinates"] = [wr.ParallelCoordinatesPlot(title=title, columns=columns)] if columns else []
    sections["Runs"] = [wr.RunComparer(diff_only="split")] + [_bar(m) for m in RUN_BARS]
    config_columns = ["method", "rank"] + [wandb_config_key(k) for k in swept]
    pinned = [_config_column(k) for k in dict.fromkeys(config_columns)]
    pinned += [f"summary:{m}" for m in shown + list(RUN_SUMMARY_KEYS)]
    return ws.Workspace(
        entity=entity or target["entity"] or os.environ.get("WANDB_ENTITY") or "",
        project=target["project"],
        name=f"Sweep {target['group']}",
        sections=[
            ws.Section(name=name, panels=_stable_ids(panels, f"{target['group']}/{name}"), is_open=True)
            for name, panels in sections.items()
            if panels
        ],
        settings=ws.WorkspaceSettings(max_runs=max(10, len(rows))),
        runset_settings=ws.RunsetSettings(
            filters=[ws.Metric("Group") == target["group"]],
            groupby=[ws.Config(k) for k in groupby],
            pinned_columns=pinned,
        ),
    )


def _stable_ids(panels: list, where: str) -> list:
    """``panels`` with ids drawn from ``where`` and their place instead of at random (the library's ids are 11
    base-36 digits), so that the same sweep always gives the same view, byte for byte."""
    for number, panel in enumerate(panels):
        digest = int(hashlib.sha256(f"{where}/{number}".encode()).hexdigest(), 16)
        digits = []
        for _ in range(11):
            digest, digit = divmod(digest, 36)
            digits.append("0123456789abcdefghijklmnopqrstuvwxyz"[digit])
        panel._id = "".join(digits)
    return panels


def _config_column(key: str) -> str:
    """The runs table's column of config ``key`` (``config:lr.value``, ``config:config.value.method.r``)."""
    first, _, rest = key.partition(".")
    return f"config:{first}.value" + (f".{rest}" if rest else "")


def view_json(workspace: ws.Workspace) -> dict:
    """The view as ``Workspace.save`` sends it: the library's model of the view (``_to_model()``) dumped by alias
    without None values; its ``spec`` is the JSON string ``save`` uploads."""
    return workspace._to_model().model_dump(mode="json", by_alias=True, exclude_none=True)


def write_dashboard(folder: str | Path, project: str | None = None, entity: str | None = None):
    """Build the view of ``folder`` and write it to ``<folder>/dashboard.json``; returns ``(workspace, path)``."""
    workspace = build_workspace(folder, project, entity)
    return workspace, write_json(Path(folder) / FILE, view_json(workspace))


class PushError(RuntimeError):
    """The view could not be saved to W&B; the message is one line saying what to check."""


def push(workspace: ws.Workspace, path: str | Path) -> str:
    """Save the view to W&B (``Workspace.save``), rewrite ``path`` with the saved view, return the view's URL.

    Raises:
        PushError: any failure (no API key, no network, a refused project), as one line.
    """
    try:
        if not workspace.entity:
            import wandb

            workspace.entity = wandb.Api().default_entity
        workspace.save()
        url = workspace.url
    except Exception as error:  # wandb raises its own errors, requests' and ValueError: all mean "not saved"
        cause = (str(error).strip().splitlines() or [type(error).__name__])[0]
        server = os.environ.get("WANDB_BASE_URL")
        reach = f"that {server} (WANDB_BASE_URL) can be reached" if server else "the network"
        raise PushError(
            f"W&B view not saved: check WANDB_API_KEY, {reach} and that entity {workspace.entity or '(default)'!r} "
            f"may write project {workspace.project!r} ({type(error).__name__}: {cause}); {path} holds the view"
        ) from error
    write_json(path, view_json(workspace))
    return url


# -- checking a view against what the runs logged -------------------------------------------------------------------
def _metric_key(name: str) -> tuple[str, str]:
    """A panel's metric (``val/acc``, ``summary_metrics.x``, ``config.lr.value``) as ``(section, key)``."""
    if name.startswith("summary_metrics."):
        return "summary", name.removeprefix("summary_metrics.")
    if name.startswith("config.") and ".value" in name:
        return "config", _config_path(name.removeprefix("config."))
    return "summary", name  # a logged metric: its last value is in the summary


def _config_path(name: str) -> str:
    """``lr.value`` -> ``lr``; ``config.value.method.r`` -> ``config.method.r`` (W&B wraps each top-level config
    value in ``{"value": ...}``)."""
    parts = name.split(".")
    return ".".join(parts[:1] + parts[2:] if parts[1:2] == ["value"] else parts)


def _accessor_key(accessor: str) -> tuple[str, str]:
    """A parallel-coordinates or runs-table column (``config:lr.value``, ``summary:val/acc``, ``run:group``)."""
    section, _, name = accessor.partition(":")
    if section == "config":
        return "config", _config_path(name)
    return section, name


def referenced_keys(view: dict) -> set[tuple[str, str]]:
    """Every ``(section, key)`` a view (:func:`view_json`) reads from its runs: panels' metrics, x-axes, group keys
    and columns, and the runset's filters, grouping, sort keys and table columns. Sections are ``summary`` (logged
    metrics and summary values), ``config`` (dotted paths in the W&B config) and ``run`` (run attributes)."""
    keys: set[tuple[str, str]] = set()
    section = view["spec"]["section"]
    for part in section["panelBankConfig"]["sections"]:
        for panel in part.get("panels", []):
            config = panel.get("config", {})
            for name in config.get("metrics") or []:
                keys.add(_metric_key(name))
            if config.get("xAxis"):
                keys.add(_metric_key(config["xAxis"]))
            if config.get("groupBy"):
                group = config["groupBy"]
                keys.add(("config", _config_path(group)) if ".value" in group else ("run", group))
            for column in config.get("columns") or []:
                keys.add(_accessor_key(column["accessor"]))

    def key_of(item: dict) -> tuple[str, str]:
        name = item["name"]
        return (item["section"], _config_path(name) if item["section"] == "config" else name)

    def filter_keys(items: list[dict]):
        for item in items:
            if "filters" in item:
                yield from filter_keys(item["filters"])
            elif item.get("key"):
                yield key_of(item["key"])

    for runset in section.get("runSets", []):
        keys.update(key_of(k) for k in runset.get("grouping", []))
        keys.update(filter_keys((runset.get("filters") or {}).get("filters", [])))
        keys.update(key_of(k["key"]) for k in (runset.get("sort") or {}).get("keys", []))
        feed = runset.get("runFeed") or {}
        keys.update(_accessor_key(c) for c in list(feed.get("columnPinned", {})) + feed.get("columnOrder", []))
    return keys


def unlogged_keys(view: dict, runs: list[dict]) -> list[str]:
    """The keys of :func:`referenced_keys` that some run did not log, as ``section:key``; [] when every panel,
    group, filter and column of the view has data. ``runs``: each run's ``summary`` (every logged metric's last
    value and the summary values) and ``config`` (the W&B config, nested) as W&B recorded them."""
    missing = []
    for section, key in sorted(referenced_keys(view)):
        if section == "run":
            ok = key in RUN_ATTRIBUTES
        elif section == "config":
            ok = all(_lookup(run.get("config"), key) is not None for run in runs)
        else:
            ok = all(key in (run.get("summary") or {}) for run in runs)
        if not ok or not runs:
            missing.append(f"{section}:{key}")
    return missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loldu.sweeps.dashboard", description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="a multirun folder of train.py (multirun/<date>/<time>)")
    parser.add_argument("--push", action="store_true", help="save the view to W&B (needs WANDB_API_KEY)")
    parser.add_argument("--project", default=None, help="W&B project (default: the runs' project)")
    parser.add_argument("--entity", default=None, help="W&B entity (default: the runs', else the API key's)")
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        workspace, path = write_dashboard(args.folder, args.project, args.entity)
    except (FileNotFoundError, UnsafeRunFolder, ValueError) as error:
        print(f"no dashboard: {error}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    if args.push:
        try:
            print(f"saved the W&B view: {push(workspace, path)}")
        except PushError as error:
            print(error, file=sys.stderr)
            return 1
    else:
        print(f"to save it in W&B: WANDB_API_KEY=... python -m loldu.sweeps.dashboard {args.folder} --push")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
