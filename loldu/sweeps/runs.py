"""Read the run folders of a sweep for ``python -m loldu.report``: each run's status, overrides and results, and
which keys the sweep varied.

A run's status comes from its ``status.json`` (``running``, ``finished`` or ``failed`` with the error line); a
folder without one is an old finished run when it holds a ``metrics.json``, else unfinished; in such an old folder
a ``metrics.json`` older than the run's ``config.yaml`` belongs to an earlier run in a reused folder and is not
reported. Where ``status.json`` exists it alone decides (a folder that holds a run is never claimed by another), so
file times, which a copy (``cp -r``, an unpacked archive) does not keep, never drop a finished run. A ``metrics.json``
that is not valid JSON is named in a warning and skipped; non-finite (null or NaN) metrics mark the run failed.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import yaml

from loldu.config import unescape
from loldu.config.run_dir import hydra_choices
from loldu.config.saved import UnsafeRunFolder, read_run_config

log = logging.getLogger(__name__)

# Resolved values of every run, in table order; swept keys of the same name show these (rank: the method's r).
FIELDS = ("model", "task", "method", "rank", "init", "lr", "seed", "epochs")
RESULT_PREFIXES = ("test/", "val/", "val_before/", "train/", "concept/", "bench/")
SKIP_PARTS = {".hydra", "wandb", "adapter", "merged", "checkpoints", "csv"}


def run_folders(folder: Path) -> list[Path]:
    """Folders below ``folder`` (itself included) that a run wrote: a config.yaml, metrics.json or status.json."""
    found = set()
    for name in ("config.yaml", "metrics.json", "status.json"):
        for path in folder.rglob(name):
            if not SKIP_PARTS & set(path.relative_to(folder).parts[:-1]):
                found.add(path.parent)
    # numbered job folders in numeric order, before named ones at the same level (0, 1, 2, 10, seeds/...)
    return sorted(
        found, key=lambda p: [(0, int(s), "") if s.isdigit() else (1, 0, s) for s in p.relative_to(folder).parts]
    )


def _read_json(path: Path) -> dict | None:
    """The JSON object in ``path``, or None (with a warning naming the file) when it is not valid JSON."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        log.warning("skipping %s: not valid JSON (%s; truncated by a killed job?)", path, err)
        return None
    return data if isinstance(data, dict) else None


def read_overrides(run: Path) -> dict[str, str]:
    """``key -> value`` of the command-line overrides Hydra recorded for the run (``.hydra/overrides.yaml``)."""
    path = run / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    items = yaml.safe_load(path.read_text()) or []
    pairs = (str(item).lstrip("+~").split("=", 1) for item in items)
    return {k: unescape(v) for k, v in (p for p in pairs if len(p) == 2)}


def _status(run: Path, has_metrics: bool) -> tuple[str, str | None]:
    path = run / "status.json"
    status = _read_json(path) if path.is_file() else None
    if status is not None:
        return str(status.get("status", "unknown")), status.get("error")
    return ("finished", None) if has_metrics else ("unfinished", "no metrics.json (killed or still running?)")


def _stale(run: Path) -> bool:
    config = run / "config.yaml"
    return config.is_file() and (run / "metrics.json").stat().st_mtime < config.stat().st_mtime


def _non_finite(values: dict) -> list[str]:
    return [k for k, v in values.items() if v is None or (isinstance(v, float) and not math.isfinite(v))]


def read_run(folder: Path, run: Path) -> dict:
    """One table row: ``run``, ``status``, ``error``, ``overrides``, the resolved :data:`FIELDS`, parameter
    counts and (for a finished run) its metrics."""
    cfg, refused = {}, None
    if (run / "config.yaml").is_file():
        try:
            cfg = read_run_config(run, check_targets=False)  # as data, no interpolation (nothing is built)
        except UnsafeRunFolder as error:
            refused = str(error)
    metrics_path = run / "metrics.json"
    metrics = _read_json(metrics_path) if metrics_path.is_file() else None
    status, error = _status(run, metrics is not None)
    if refused is not None:  # a tampered or damaged folder: listed, never read as a result
        status, error = "failed", f"config.yaml refused: {refused}"
    elif metrics_path.is_file() and metrics is None:
        status, error = "failed", f"{metrics_path.name} is not valid JSON"
    elif metrics is not None and not (run / "status.json").is_file() and _stale(run):
        status, error, metrics = status if status != "finished" else "unfinished", "stale metrics.json ignored", None
    if status != "finished":
        metrics = None
    method = cfg.get("method") if isinstance(cfg.get("method"), dict) else {}
    resolved = {key: cfg.get(key) for key in FIELDS}
    resolved.update(
        method=method.get("name"),
        rank=method.get("r"),
        **{k: v for k, v in hydra_choices(run).items() if k in ("model", "task")},
    )
    row = {"run": str(run.relative_to(folder)) or ".", "status": status, "error": error}
    row["overrides"] = read_overrides(run)
    row.update({k: v for k, v in resolved.items() if v is not None})
    if metrics is not None:
        row.update({k: metrics[k] for k in ("model", "task", "method", "rank", "lr", "seed") if metrics.get(k)})
        row.update(_results(run, metrics))
        bad = _non_finite({k: v for k, v in row.items() if k.startswith(RESULT_PREFIXES)})
        if bad:
            row.update(status="failed", error=f"non-finite {', '.join(bad)} (diverged?)")
            row.update({k: math.nan for k in bad})
    return row


def _results(run: Path, metrics: dict) -> dict:
    params = metrics.get("params") or {}
    row = {"adapter": params.get("adapter"), "head": params.get("head"), "trainable": params.get("trainable")}
    perf = metrics.get("perf") or {}
    row["step_s"] = perf.get("step_time_s")  # median wall time of a training step
    row.update(record(metrics))
    for part in ("test", "val", "train"):  # diffusion runs: no validation set
        row.update(metrics.get(part) or {})
    if "val/loss" in (metrics.get("val_before") or {}):
        row["val_before/loss"] = metrics["val_before"]["val/loss"]
    concept = run / "concept_metrics.json"
    scores = _read_json(concept) if concept.exists() else None
    row.update({f"concept/{k}": scores[k] for k in ("dino", "clip_i", "clip_t") if k in (scores or {})})
    bench = run / "benchmarks.json"
    results = (_read_json(bench) if bench.exists() else None) or {}
    for task, values in results.get("results", {}).items():
        row.update({f"bench/{task}/{m}": v for m, v in values.items() if not m.endswith("stderr")})
    return row


#: What a run recorded about how it ran (metrics.json since issue 22), one column each in report.csv and the page.
RECORD_COLUMNS = (
    "adapter_bytes",
    "peak_mem_mib",
    "peak_mem_kind",
    "step_iqr_s",
    "device",
    "git_commit",
    "git_dirty",
    "versions",
)


def record(metrics: dict) -> dict:
    """The :data:`RECORD_COLUMNS` of a run's metrics.json: adapter weight bytes on disk, peak memory (MiB) and what
    it measured (``cuda_max_allocated``, or ``cpu_max_rss``: the whole process's peak resident set), the spread of
    the step time (interquartile range, s), the device's name, the source tree's commit and whether it had
    uncommitted changes, the library versions (``torch 2.15.0, peft 0.21.2, ...``). Older records lack some: None
    (a peak memory without its kind: ``kind not recorded``)."""
    perf = metrics.get("perf") or {}
    git = metrics.get("git") or {}
    versions = metrics.get("versions") or {}
    peak = perf.get("peak_mem_mib")
    return {
        "adapter_bytes": metrics.get("adapter_bytes"),
        "peak_mem_mib": peak,
        "peak_mem_kind": perf.get("peak_mem_kind") or ("kind not recorded" if peak is not None else None),
        "step_iqr_s": perf.get("step_time_iqr_s"),
        "device": (metrics.get("device") or {}).get("name"),
        "git_commit": (git.get("commit") or "")[:12] or None,
        "git_dirty": git.get("dirty"),
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items() if v) or None,
    }


def collect(folder: str | Path) -> list[dict]:
    """One row per run folder below ``folder`` (see :func:`read_run`), finished or not.

    Raises:
        FileNotFoundError: if no run folder is found.
    """
    folder = Path(folder)
    rows = [read_run(folder, run) for run in run_folders(folder)]
    if not rows:
        raise FileNotFoundError(f"no run below {folder}: is it a run or multirun folder of train.py?")
    return rows


def swept_keys(rows: list[dict]) -> list[str]:
    """The keys whose values differ between runs: from the runs' overrides, or (runs without Hydra's record)
    from their resolved :data:`FIELDS`. Resolved fields first, in :data:`FIELDS` order."""
    if any(r["overrides"] for r in rows):
        keys = {k for r in rows for k in r["overrides"]}
        varied = [k for k in keys if len({r["overrides"].get(k) for r in rows}) > 1]
    else:
        varied = [k for k in FIELDS if len({str(r.get(k)) for r in rows}) > 1]
    return sorted(varied, key=lambda k: (FIELDS.index(k) if k in FIELDS else len(FIELDS), k))


def value(row: dict, key: str):
    """A run's value of a swept ``key``: the resolved one for :data:`FIELDS` (rank ``${model.full_rank}`` is a
    number), else the override as written."""
    if key in FIELDS and row.get(key) is not None:
        return row[key]
    return row["overrides"].get(key)
