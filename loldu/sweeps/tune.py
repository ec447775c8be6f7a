"""Choosing a setting on validation for ``python -m loldu.report --tune lr``: for each setting of the other
swept keys (seeds aside), the value of the tuned key whose mean validation metric is best, compared over the seeds
that every value was run with (the grid's seeds), so that seeds added later at the chosen value cannot change the
choice. Test metrics never enter the choice.
"""

from __future__ import annotations

import statistics

from loldu.sweeps.plots import aggregate
from loldu.sweeps.runs import value


def _number(v) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def tune(rows: list[dict], swept: list[str], key: str, on: str, mode: str | None = None) -> list[dict]:
    """One choice per setting of ``swept`` other than ``key`` and ``seed``: those keys' values, ``key`` (the chosen
    value), ``on``, ``on_seeds`` (the seeds compared), ``scores`` (value -> mean ``on``) and ``edge`` (the choice is
    the smallest or largest numeric value tried: the grid may be too narrow).

    Raises:
        ValueError: if ``key`` was not varied, no finished run has ``on``, or a setting's values share no seed.
    """
    if key not in swept:
        raise ValueError(f"--tune {key}: the runs do not vary {key} (they vary {', '.join(swept) or 'nothing'})")
    mode = mode or ("min" if on.endswith("loss") else "max")
    others = [k for k in swept if k not in (key, "seed")]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if row["status"] == "finished" and isinstance(row.get(on), (int, float)):
            groups.setdefault(tuple(str(value(row, k)) for k in others), []).append(row)
    if not groups:
        raise ValueError(f"--tune {key}: no finished run has {on}")
    choices = []
    for members in groups.values():
        by_value: dict[str, list[dict]] = {}
        for row in members:
            by_value.setdefault(str(value(row, key)), []).append(row)
        common = set.intersection(*({r.get("seed") for r in rs} for rs in by_value.values()))
        setting = {k: value(members[0], k) for k in others}
        if not common:
            raise ValueError(f"--tune {key}: for {setting or 'the runs'} no seed was run at every {key}")
        scores = {v: statistics.fmean(r[on] for r in rs if r.get("seed") in common) for v, rs in by_value.items()}
        best = (max if mode == "max" else min)(scores, key=scores.get)
        numeric = [_number(v) for v in scores]
        edge = len(scores) > 1 and None not in numeric and _number(best) in (min(numeric), max(numeric))
        choice = {**setting, key: value(by_value[best][0], key), "on": on, "on_seeds": sorted(common)}
        choices.append({**choice, "scores": scores, "edge": edge})
    return choices


def tuned_groups(rows: list[dict], swept: list[str], key: str, choices: list[dict], metrics: list[str]) -> list[dict]:
    """Seed aggregates (:func:`loldu.sweeps.plots.aggregate`) of the runs at each setting's chosen value."""
    others = [k for k in swept if k not in (key, "seed")]
    chosen = {tuple(str(c[k]) for k in others): str(c[key]) for c in choices}
    kept = [r for r in rows if chosen.get(tuple(str(value(r, k)) for k in others)) == str(value(r, key))]
    return aggregate(kept, [k for k in swept if k != "seed"] + ["seed"], metrics)
