"""lm-eval results for :mod:`loldu.eval.lm`: the main metrics per task, shots and documents used, and the text table."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path


def main_metrics(name: str, raw: dict) -> dict[str, dict[str, float]]:
    """``{name: {metric: value, metric_stderr: value}}`` from lm-eval's results (filter suffix dropped when unique).

    A group without aggregate metrics reports its subtasks instead.
    """
    table = raw.get("results", {})
    metrics = _row_metrics(table.get(name, {}))
    if metrics:
        return {name: metrics}
    return {task: m for task, row in table.items() if (m := _row_metrics(row))}


def shots_used(name: str, n_shot: Mapping):
    """The shots lm-eval used: one number, or per subtask where a group's subtasks differ."""
    if name in n_shot:
        return n_shot[name]
    values = set(n_shot.values())
    return values.pop() if len(values) == 1 else dict(n_shot)


def sample_counts(name: str, n_samples: Mapping) -> dict:
    """``{"original": N, "effective": n}`` documents, summed over a group's subtasks."""
    if name in n_samples:
        return dict(n_samples[name])
    return {key: sum(int(v.get(key) or 0) for v in n_samples.values()) for key in ("original", "effective")}


def _row_metrics(row: Mapping) -> dict[str, float]:
    parsed = []
    for key, value in row.items():
        if "," not in key or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        metric, _, filt = key.partition(",")
        parsed.append((metric, filt, float(value)))
    filters = {filt for _, filt, _ in parsed}
    out = {}
    for metric, filt, value in parsed:
        out[metric if len(filters) == 1 else f"{metric},{filt}"] = value
    return out


def lm_eval_version() -> str | None:
    return package_version("lm_eval")


def package_version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def format_table(summary: Mapping) -> str:
    """The results as a small text table: task, shots, metric, value, stderr."""
    rows = [("task", "shots", "metric", "value", "stderr")]
    shots = summary.get("settings", {}).get("shots_used", {})
    for task, metrics in summary.get("results", {}).items():
        for metric, value in metrics.items():
            if "_stderr" in metric:
                continue
            base, _, filt = metric.partition(",")
            stderr = metrics.get(f"{base}_stderr" + (f",{filt}" if filt else ""))
            shot = shots.get(task)
            if shot is None:  # a subtask reported for a group without aggregate metrics
                shot = next((v.get(task) for v in shots.values() if isinstance(v, dict) and task in v), None)
            rows.append(
                (
                    task,
                    "" if shot is None or isinstance(shot, dict) else str(shot),
                    metric,
                    f"{value:.4f}",
                    f"{stderr:.4f}" if isinstance(stderr, float) else "",
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_summary(summary: Mapping, output: str | Path) -> Path:
    """Write ``summary`` as indented JSON to ``output`` (its folder is created); return the path."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return output
