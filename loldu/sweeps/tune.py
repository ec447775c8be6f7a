"""Choosing a setting on validation for ``python -m loldu.report --tune lr``: for each setting of the other
swept keys (seeds aside), the value of the tuned key whose mean validation metric is best, compared over the seeds
that every value was run with (the grid's seeds), so that seeds added later at the chosen value cannot change the
choice. Test metrics never enter the choice.

A joint key such as ``lr+head_lr`` chooses the pair together over the product grid: its value is the parts' values
joined by ``+`` (``0.003+0.03``), and a choice is at the edge when any part is at the edge of the values it tried.
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


def key_parts(key: str) -> list[str]:
    """The swept keys a (possibly joint, ``lr+head_lr``) tuned key is made of."""
    return key.split("+")


def joint_value(row: dict, key: str):
    """A run's value of a tuned key: :func:`loldu.sweeps.runs.value`, or the parts' values joined by ``+``."""
    if "+" not in key:
        return value(row, key)
    return "+".join(str(value(row, k)) for k in key_parts(key))


def tune(rows: list[dict], swept: list[str], key: str, on: str, mode: str | None = None) -> list[dict]:
    """One choice per setting of ``swept`` other than ``key`` and ``seed``: those keys' values, ``key`` (the chosen
    value), ``on``, ``on_seeds`` (the seeds compared), ``scores`` (value -> mean ``on``) and ``edge`` (the choice is
    the smallest or largest numeric value tried: the grid may be too narrow).

    Raises:
        ValueError: if ``key`` was not varied, no finished run has ``on``, or a setting's values share no seed.
    """
    missing = [k for k in key_parts(key) if k not in swept]
    if missing:
        raise ValueError(
            f"--tune {key}: the runs do not vary {', '.join(missing)} (they vary {', '.join(swept) or 'nothing'})"
        )
    mode = mode or ("min" if on.endswith("loss") else "max")
    others = [k for k in swept if k not in (*key_parts(key), "seed")]
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
            by_value.setdefault(str(joint_value(row, key)), []).append(row)
        common = set.intersection(*({r.get("seed") for r in rs} for rs in by_value.values()))
        setting = {k: value(members[0], k) for k in others}
        if not common:
            raise ValueError(f"--tune {key}: for {setting or 'the runs'} no seed was run at every {key}")
        scores = {v: statistics.fmean(r[on] for r in rs if r.get("seed") in common) for v, rs in by_value.items()}
        best = (max if mode == "max" else min)(scores, key=scores.get)
        edge = any(
            at_edge([str(value(r, k)) for r in members], str(value(by_value[best][0], k))) for k in key_parts(key)
        )
        choice = {**setting, key: joint_value(by_value[best][0], key), "on": on, "on_seeds": sorted(common)}
        choices.append({**choice, "scores": scores, "edge": edge})
    return choices


def at_edge(tried: list[str], chosen: str) -> bool:
    """Whether ``chosen`` is the smallest or largest of several numeric values ``tried``."""
    numeric = [_number(v) for v in set(tried)]
    return len(numeric) > 1 and None not in numeric and _number(chosen) in (min(numeric), max(numeric))


def tuned_groups(rows: list[dict], swept: list[str], key: str, choices: list[dict], metrics: list[str]) -> list[dict]:
    """Seed aggregates (:func:`loldu.sweeps.plots.aggregate`) of the runs at each setting's chosen value."""
    others = [k for k in swept if k not in (*key_parts(key), "seed")]
    chosen = {tuple(str(c[k]) for k in others): str(c[key]) for c in choices}
    kept = [r for r in rows if chosen.get(tuple(str(value(r, k)) for k in others)) == str(joint_value(r, key))]
    return aggregate(kept, [k for k in swept if k != "seed"] + ["seed"], metrics)
