"""Setup cost of LoLDU: ``lu_factors`` against ``torch.linalg.lu_factor`` of the same matrix.

Each round times, for every shape, LAPACK's full LU and the project's rank-r
``lu_factors`` back to back (the order alternates between rounds; a call under
about 50 ms is repeated and averaged so one timing is not one cache miss); a shape
reports the median of its per-round ratios. Bar: at most 2x ``lu_factor``.
"""

from __future__ import annotations

import sys
import time

import torch

from loldu.methods.decompose import lu_factors

from .rounds import Series, verdict

SHAPES = [(768, 768, 768), (4096, 4096, 1024), (4096, 11008, 1024)]
QUICK_SHAPES = [(64, 64, 64), (256, 512, 64)]
BAR = 2.0


def _time(fn, reps: int = 1) -> float:
    """Seconds per call of ``fn``, over ``reps`` calls back to back."""
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps


def run_setup(shapes, rounds: int, device: str = "cpu", log=None) -> list[str]:
    """Time the shapes in interleaved rounds; return the markdown table (rows also print as they finish).

    Args:
        shapes: ``(out, in, r)`` triples.
        rounds: timed rounds (one untimed warm-up call of each comes first).
        device: where the matrices live.
        log: progress lines.
    """
    gen = torch.Generator().manual_seed(0)
    weights = {s: (torch.randn(s[0], s[1], generator=gen) * 0.02).to(device) for s in shapes}
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def lapack(s):
        torch.linalg.lu_factor(weights[s])
        sync()

    def ours(s):
        lu_factors(weights[s], s[2])
        sync()

    reps = {}
    for s in shapes:  # warm-up: first calls load kernels and allocate
        lapack(s)
        ours(s)
        # Repeat a fast call so that one timing spans about 50 ms: a single 3 ms call is mostly noise here.
        reps[s] = max(1, min(100, round(0.05 / max(_time(lambda s=s: lapack(s)), 1e-6))))
    series = {s: Series(f"{s[0]}x{s[1]} r{s[2]}") for s in shapes}
    lines = [
        "| matrix | r | lu_factors (s, median) | lu_factor (s, median) | x lu_factor (median) | spread (min-max) "
        f"| bar <= {BAR:.0f}x |",
        "|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for k in range(rounds):
        for s in shapes:
            pair = (lapack, ours) if k % 2 == 0 else (ours, lapack)
            t = {fn: _time(lambda fn=fn, s=s: fn(s), reps[s]) for fn in pair}
            series[s].add("time", t[ours], t[lapack])
            series[s].add("lapack", t[lapack], t[lapack])
            if k == rounds - 1:
                line = _line(s, series[s])
                lines.append(line)
                print(line, flush=True)
        done = ", ".join(f"{series[s].name} {series[s].ratios['time'][-1]:.2f}x" for s in shapes)
        print(f"[setup round {k + 1}/{rounds}] {done}", file=log or sys.stderr, flush=True)
    return lines


def _line(s, ser: Series) -> str:
    return (
        f"| {s[0]}x{s[1]} | {s[2]} | {ser.time():.4f} | {ser.time('lapack'):.4f} | {ser.ratio():.2f}x | "
        f"{ser.spread()} | {verdict(ser.ratio() <= BAR)} |"
    )
