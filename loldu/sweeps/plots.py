"""Seed aggregation and plots of ``python -m loldu.report``: the x-axis follows what the sweep varied.

rank -> metric against rank (log2 axis), lr -> against lr (log axis), init, method and other keys -> categorical;
with several swept keys, one line per value of the others; seeds are averaged (mean +- std as error bars); a
sweep of seeds only is one point. Method comparisons also get the paper's plot against trainable parameters.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from loldu.sweeps.runs import value

AXIS_ORDER = ("rank", "lr", "init", "method", "model", "task", "epochs")
LOG_AXES = {"rank": 2, "lr": 10}


def axis(swept: list[str], x: str | None = None) -> tuple[str | None, list[str]]:
    """``(x key, line keys)`` for the swept keys: ``x`` if given, else the first of :data:`AXIS_ORDER` (else the
    first swept key) on the x-axis, the others (seeds excluded) as lines; x is None when only seeds were swept.

    Raises:
        ValueError: if ``x`` was not swept.
    """
    keys = [k for k in swept if k != "seed"]
    if x is not None:
        if x not in keys:
            raise ValueError(f"--x {x}: the runs do not vary it; they vary {', '.join(keys) or 'only the seed'}")
        return x, [k for k in keys if k != x]
    if not keys:
        return None, []
    x = next((k for k in AXIS_ORDER if k in keys), keys[0])
    return x, [k for k in keys if k != x]


def _stats(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else 0.0


def aggregate(rows: list[dict], swept: list[str], metrics: list[str]) -> list[dict]:
    """One row per setting of the swept keys other than seed, over its finished runs: the keys' values,
    ``n`` (runs), ``seeds``, ``(mean, std)`` of every metric, the setting's model, task, method and rank, its
    parameter counts and adapter bytes, the median step time and peak memory over seeds, and its ``runs``."""
    keys = [k for k in swept if k != "seed"]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if row["status"] == "finished":
            groups.setdefault(tuple(str(value(row, k)) for k in keys), []).append(row)
    out = []
    for members in groups.values():
        agg = {k: value(members[0], k) for k in keys}
        agg.update(n=len(members), seeds=",".join(str(m.get("seed")) for m in members))
        for metric in metrics:
            present = [m[metric] for m in members if metric in m]
            if present:
                agg[metric] = _stats(present)
        for key in ("model", "task", "method", "rank"):  # what a merged page keys settings by
            agg.setdefault(key, members[0].get(key))
        for key in ("adapter", "head", "trainable", "adapter_bytes"):
            agg[key] = members[0].get(key)
        for key in ("step_s", "peak_mem_mib"):  # medians over seeds
            found = [m[key] for m in members if isinstance(m.get(key), (int, float))]
            agg[key] = statistics.median(found) if found else None
        kinds = sorted({str(m["peak_mem_kind"]) for m in members if m.get("peak_mem_kind")})
        agg["peak_mem_kind"] = ",".join(kinds) or None
        agg["runs"] = [m["run"] for m in members]
        out.append(agg)
    return out


#: What tells the facets of a report apart: a metric compares only within one.
FACET = ("model", "task")


def facets(groups: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """The settings by ``(model, task)`` (:data:`FACET`)."""
    out: dict[tuple[str, str], list[dict]] = {}
    for g in groups:
        out.setdefault(tuple(str(g.get(k)) for k in FACET), []).append(g)
    return out


def _number(v) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot(groups: list[dict], metric: str, x: str | None, lines: list[str], path: Path) -> Path:
    """``metric`` (mean +- std over seeds) against ``x``, one line per setting of ``lines``; written to ``path``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    numeric = x is not None and all(_number(g[x]) is not None for g in groups)
    categories = [] if numeric or x is None else list(dict.fromkeys(str(g[x]) for g in groups))
    series: dict[str, list[dict]] = {}
    for g in groups:
        if metric in g:
            series.setdefault(", ".join(f"{k}={g[k]}" for k in lines) or metric, []).append(g)
    for label, members in sorted(series.items()):
        if x is None:
            xs = [0.0] * len(members)
        elif numeric:
            xs = [_number(g[x]) for g in members]
        else:
            xs = [float(categories.index(str(g[x]))) for g in members]
        order = sorted(range(len(xs)), key=xs.__getitem__)
        means, stds = zip(*(members[i][metric] for i in order), strict=True)
        style = "-" if numeric else "none"  # categories: points, no line between them
        ax.errorbar([xs[i] for i in order], means, yerr=stds, marker="o", ls=style, capsize=3, label=label)
    if x is None:
        ax.set_xticks([0.0], ["all runs"])
    elif numeric and x in LOG_AXES:
        ax.set_xscale("log", base=LOG_AXES[x])
        if x == "rank":  # the ranks themselves as ticks
            ticks = sorted({_number(g[x]) for g in groups})
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    elif not numeric:
        ax.set_xticks(range(len(categories)), categories, rotation=30 if len(categories) > 4 else 0)
    ax.set_xlabel(x or "seeds")
    ax.set_ylabel(f"{metric} (mean +- std over seeds)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, plt, path)


def plot_params(groups: list[dict], metric: str, path: Path) -> Path:
    """``metric`` against trainable parameters (log axis), one line per method (the paper's Figure 1)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in sorted({str(g.get("method")) for g in groups}):
        pts = sorted(
            (g["trainable"], *g[metric])
            for g in groups
            if str(g.get("method")) == method and metric in g and g.get("trainable")
        )
        if pts:
            xs, means, stds = zip(*pts, strict=True)
            ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=method)
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (incl. head)")
    ax.set_ylabel(metric)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, plt, path)


def _save(fig, plt, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
