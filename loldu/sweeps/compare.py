"""Paired gaps of a report's settings against one reference setting (``python -m loldu.report ... --vs method=lora``).

Within each model and task (a metric compares only there), every setting's runs are paired with the reference's
by seed (runs of one seed see the same split, subset and order) and the mean difference gets the 95% t-interval of
:func:`loldu.sweeps.stats.paired_gap`; a gap whose interval includes 0 is reported as not separating the two.
With ``--tune`` the settings are the tuned ones, so each method is compared at its own chosen lr.
"""

from __future__ import annotations

from loldu.sweeps.plots import FACET, facets
from loldu.sweeps.stats import gap_text, paired_gap


def parse_reference(text: str) -> dict[str, str]:
    """``method=lora,rank=8`` -> ``{"method": "lora", "rank": "8"}``.

    Raises:
        ValueError: an empty reference or a part without ``=``.
    """
    parts = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in parts if "=" not in p or not p.split("=", 1)[0].strip()]
    if not parts or bad:
        raise ValueError(f"--vs {text!r}: name the reference setting as KEY=VALUE[,KEY=VALUE], e.g. --vs method=lora")
    return {k.strip(): v.strip() for k, v in (p.split("=", 1) for p in parts)}


def _same(found, wanted: str) -> bool:
    if str(found) == wanted:
        return True
    try:
        return float(found) == float(wanted)  # lr=1e-2 names the runs of lr 0.01
    except (TypeError, ValueError):
        return False


def label(group: dict, keys: list[str]) -> str:
    """A setting's name: its values of the keys that tell settings apart (the facet's aside)."""
    return " ".join(f"{k}={group.get(k)}" for k in keys if k not in FACET) or "all runs"


def _by_seed(group: dict, rows: dict[str, dict]) -> dict:
    runs: dict = {}
    for name in group["runs"]:
        seed = rows[name].get("seed")
        if seed in runs:
            raise ValueError(f"{name} and {runs[seed]['run']} are both seed {seed} of one setting: pairing needs one")
        runs[seed] = rows[name]
    return runs


def paired_gaps(groups: list[dict], rows: list[dict], reference: dict[str, str], keys: list[str], metric: str):
    """One gap per setting that is not the reference, against the reference of its model and task.

    Args:
        groups: the settings over seeds (:func:`loldu.sweeps.plots.aggregate` or the tuned ones), with ``runs``.
        rows: the runs (:func:`loldu.sweeps.runs.collect`), for each run's seed and metric.
        reference: what the reference setting's values are (:func:`parse_reference`).
        keys: the swept keys that tell settings apart (seed excluded), for the labels.
        metric: the metric compared (e.g. ``test/acc``).

    Returns:
        Dicts with the facet, ``setting``, ``reference``, ``metric``, ``seeds`` (paired), ``mean``, ``low``,
        ``high``, ``separable`` (the interval excludes 0) and ``text``; a setting with fewer than 2 seeds in
        common with the reference has ``seeds`` [] and no interval.

    Raises:
        ValueError: a reference key no setting has, no setting matching it, or several in one model and task
            (narrow it, or choose one per method with ``--tune``); the message lists what was found.
    """
    unknown = [k for k in reference if all(k not in g for g in groups)]
    if unknown:
        known = sorted({k for g in groups for k in (*keys, "method", "rank")})
        raise ValueError(f"--vs: no setting has {', '.join(unknown)}; name the reference with {', '.join(known)}")
    by_name = {r["run"]: r for r in rows}
    wanted = ",".join(f"{k}={v}" for k, v in reference.items())
    out, matched = [], False
    for facet, members in facets(groups).items():
        refs = [g for g in members if all(_same(g.get(k), v) for k, v in reference.items())]
        if len(refs) > 1:
            names = "; ".join(label(g, keys) for g in refs)
            raise ValueError(
                f"--vs {wanted} matches {len(refs)} settings of {' x '.join(facet)} ({names}): narrow it with more "
                "KEY=VALUE parts, or choose one per method on validation with --tune lr"
            )
        if not refs:
            continue
        matched = True
        ref = _by_seed(refs[0], by_name)
        for g in members:
            if g is refs[0]:
                continue
            gap = paired_gap(_by_seed(g, by_name), ref, metric)
            entry = dict(zip(FACET, facet, strict=True))
            entry.update(setting=label(g, keys), reference=label(refs[0], keys), metric=metric)
            entry.update(gap or {"seeds": [], "mean": None, "low": None, "high": None, "separable": False})
            entry["text"] = gap_text(gap, digits=4)
            out.append(entry)
    if not matched:
        seen = sorted({", ".join(f"{k}={g.get(k)}" for k in reference) for g in groups})
        raise ValueError(f"--vs {wanted}: no setting matches; the settings have {'; '.join(seen)}")
    return out


def gaps_table(gaps: list[dict]) -> tuple[str, list[str], list[list]]:
    """The report.md section of :func:`paired_gaps`: its heading line, the table's header and rows."""
    title = (
        f"Paired gaps on {gaps[0]['metric']}: each setting minus the reference, over the seeds both ran (95% "
        "t-interval; * = it excludes 0, the data separate the two; n/a = fewer than 2 common seeds):"
    )
    header = ["model", "task", "setting", "reference", "seeds", "gap [95% interval]"]
    rows = [
        [g["model"], g["task"], g["setting"], g["reference"], ",".join(map(str, g["seeds"])) or "-", g["text"]]
        for g in gaps
    ]
    return title, header, rows
