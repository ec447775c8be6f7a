"""Intervals for the studies' paired comparisons: runs of one seed see the same split, subset and order, so the
difference of two methods is taken per seed and its mean gets a Student-t interval over the seeds."""

from __future__ import annotations

import statistics

#: Two-sided 95% quantiles of Student's t by degrees of freedom (pairs - 1).
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def paired_interval(diffs: list[float]) -> tuple[float, float, float]:
    """Mean of paired differences and its 95% t-interval: ``(mean, low, high)``.

    Raises:
        ValueError: fewer than 2 pairs (no spread), or more than the table covers (11).
    """
    if not 2 <= len(diffs) <= max(T975) + 1:
        raise ValueError(f"a paired interval needs 2 to {max(T975) + 1} differences; got {len(diffs)}")
    mean = statistics.fmean(diffs)
    half = T975[len(diffs) - 1] * statistics.stdev(diffs) / len(diffs) ** 0.5
    return mean, mean - half, mean + half


def mean_std_text(values: list[float], scale: float = 100.0) -> str:
    """``mean ± std`` of ``values`` x ``scale`` (accuracies as percent), one decimal; ``n/a`` for a single value."""
    if len(values) < 2:
        return "n/a"
    return f"{scale * statistics.fmean(values):.1f} ± {scale * statistics.stdev(values):.1f}"


def paired_gap(runs: dict, ref: dict, metric: str, scale: float = 1.0) -> dict | None:
    """The paired gap ``runs - ref`` of ``metric`` x ``scale`` over the seeds both have it for (runs keyed by seed):
    ``{"seeds", "mean", "low", "high", "separable"}`` with the 95% interval of :func:`paired_interval`;
    ``separable`` when the interval excludes 0. None with fewer than 2 such seeds (no interval)."""
    seeds = sorted(s for s in set(runs) & set(ref) if metric in runs[s] and metric in ref[s])
    if len(seeds) < 2:
        return None
    mean, low, high = paired_interval([scale * (runs[s][metric] - ref[s][metric]) for s in seeds])
    return {"seeds": seeds, "mean": mean, "low": low, "high": high, "separable": not low <= 0 <= high}


def gap_text(gap: dict | None, digits: int = 1) -> str:
    """``mean [low, high]`` of a :func:`paired_gap`, `` *`` when the data separate the two; ``n/a`` for None."""
    if gap is None:
        return "n/a"
    f = f"+.{digits}f"
    return f"{gap['mean']:{f}} [{gap['low']:{f}}, {gap['high']:{f}}]{' *' if gap['separable'] else ''}"


def paired_gap_text(runs: dict[int, dict], ref: dict[int, dict], metric: str = "test/acc", scale: float = 100.0) -> str:
    """The paired gap ``runs - ref`` of ``metric`` over their common seeds (runs keyed by seed), in points:
    ``mean [low, high]`` with the 95% interval of :func:`paired_interval`, `` *`` when it excludes 0 (the data
    separate the two); ``n/a`` with fewer than 2 common seeds."""
    return gap_text(paired_gap(runs, ref, metric, scale))
