"""Interleaved timing rounds, so a shared machine's drift hits every row alike.

Rows run A B C A B C ... rather than A A A B B B: each round measures every
row once, each row's time is divided by the reference row's time *of the same
round*, and a row reports the median of those per-round ratios with their
spread (min-max). A slow minute then moves the reference and the row together
instead of landing on whichever row happened to run during it.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass
class Series:
    """The per-round measurements of one row: each timing key's times and per-round ratios to the reference."""

    name: str
    times: dict[str, list[float]] = field(default_factory=dict)
    ratios: dict[str, list[float]] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def ratio(self, key: str = "time") -> float | None:
        """Median per-round ratio to the reference (None if nothing was measured)."""
        vals = self.ratios.get(key)
        return statistics.median(vals) if vals else None

    def time(self, key: str = "time") -> float | None:
        """Median time over the rounds."""
        vals = self.times.get(key)
        return statistics.median(vals) if vals else None

    def spread(self, key: str = "time") -> str:
        """``min-max`` of the per-round ratios, for the tables."""
        vals = self.ratios.get(key)
        return f"{min(vals):.2f}-{max(vals):.2f}" if vals else "-"

    def add(self, key: str, seconds: float, ref_seconds: float | None) -> None:
        """Record one round's time (and its ratio when the reference has one)."""
        self.times.setdefault(key, []).append(seconds)
        if ref_seconds:
            self.ratios.setdefault(key, []).append(seconds / ref_seconds)


def run_rounds(
    names: Sequence[str],
    reference: str,
    rounds: int,
    measure: Callable[[str, int], dict],
    keys: Sequence[str] = ("time",),
    on_final: Callable[[Series], None] | None = None,
    log=None,
) -> dict[str, Series]:
    """Measure every row once per round, in a fixed order, the reference first.

    Args:
        names: the rows (the reference among them).
        reference: the row every ratio is taken against.
        rounds: how many rounds.
        measure: ``measure(name, round)`` returns a dict with a time in seconds
            (or an error text under ``"error:" + key``) for each of ``keys``, or
            ``{"error": text}`` when the row failed as a whole (it is then not
            run again); other entries are kept from the last round in ``extra``.
        keys: the timings each measurement reports (e.g. fp32 and autocast).
        on_final: called with a row's Series as soon as its last round is in.
        log: where the progress lines go (default stderr): one per row as its measurement finishes, and one
            per round with every row's ratio.

    Returns:
        The Series of every row, by name.
    """
    order = [reference] + [n for n in names if n != reference]
    series = {n: Series(n) for n in order}
    for k in range(rounds):
        ref: dict = {}
        for name in order:
            s = series[name]
            if "row" not in s.errors:
                res = measure(name, k)
                if "error" in res:
                    s.errors["row"] = res["error"]
                else:
                    if name == reference:
                        ref = res
                    for key in keys:
                        if key in res:
                            s.add(key, res[key], ref.get(key))
                        elif f"error:{key}" in res:
                            s.errors[key] = res[f"error:{key}"]
                    s.extra = {x: v for x, v in res.items() if x not in keys and not x.startswith("error:")}
                line = _row_line(k, rounds, name, res, keys[0], ref, reference)
                print(line, file=log or sys.stderr, flush=True)
            if k == rounds - 1 and on_final is not None:
                on_final(s)
        last = {n: series[n].ratios.get(keys[0]) for n in order[1:]}
        done = ", ".join(f"{n} {vals[-1]:.2f}x" for n, vals in last.items() if vals)
        ref_s = ref.get(keys[0], float("nan"))
        print(f"[round {k + 1}/{rounds}] {reference} {ref_s:.4f}s | {done}", file=log or sys.stderr, flush=True)
    return series


def _row_line(k: int, rounds: int, name: str, res: dict, key: str, ref: dict, reference: str) -> str:
    """The progress line of one row's measurement ``res`` in round ``k``: its time and its ratio to the reference
    (``ref``, the reference's measurement of the same round)."""
    head = f"[round {k + 1}/{rounds}] {name}:"
    if "error" in res:
        return f"{head} error: {res['error']}"
    if key not in res:
        return f"{head} {key} error: {res.get(f'error:{key}', 'not measured')}"
    ratio = f" ({res[key] / ref[key]:.2f}x {reference})" if name != reference and ref.get(key) else ""
    return f"{head} {res[key]:.4f}s{ratio}"


def verdict(ok: bool | None) -> str:
    """PASS, FAIL, or n/a when the rows were not run."""
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")
