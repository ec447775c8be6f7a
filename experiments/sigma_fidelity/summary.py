"""The sigma study's table (prints markdown), from its committed run folders.

For each task and arm (``train_sigma`` false: z only, the authors' code; true: z and sigma), the lr chosen on val/acc
of seed 0 (``python -m loldu.report --tune lr``, the same choice), adapter parameters, and test accuracy as mean ± std
over seeds 0, 1, 2 at that lr; then the paired difference z only − z and sigma per seed (a seed fixes the split, the
subset and the order, so the two arms' runs of one seed see the same data), its mean and 95% t-interval, per task and
over both tasks' six pairs.

    python experiments/sigma_fidelity/summary.py experiments/sigma_fidelity/runs > experiments/sigma_fidelity/summary.md
"""

from __future__ import annotations

import sys
from pathlib import Path

from loldu.sweeps.runs import collect, swept_keys, value
from loldu.sweeps.stats import mean_std_text
from loldu.sweeps.stats import paired_interval as interval
from loldu.sweeps.tune import tune

ARM = "method.options.train_sigma"
NAMES = {"false": "z only", "true": "z and sigma"}


def arms(folder: Path) -> dict[str, dict[int, dict]]:
    """arm -> seed -> run, the finished runs of each arm at the lr its seed 0 validated."""
    rows = collect(folder)
    swept = swept_keys(rows)
    out = {}
    for choice in tune(rows, swept, "lr", "val/acc"):
        arm = str(choice[ARM]).lower()
        runs = [
            r
            for r in rows
            if r["status"] == "finished"
            and str(value(r, ARM)).lower() == arm
            and str(value(r, "lr")) == str(choice["lr"])
        ]
        out[arm] = {"choice": choice, "runs": {r["seed"]: r for r in runs}}
    return out


def main(root: Path) -> None:
    pairs_all = []
    for task in sorted(p.name for p in root.iterdir() if p.is_dir()):
        found = arms(root / task)
        print(f"## {task}\n")
        print("| arm | lr chosen (grid: val/acc % of seed 0) | adapter params | seeds | test acc (%) | test F1 (%) |")
        print("|" + " --- |" * 6)
        for arm in ("false", "true"):
            if arm not in found:
                continue
            choice, runs = found[arm]["choice"], found[arm]["runs"]
            grid = ", ".join(f"{lr}: {100 * s:.1f}" for lr, s in choice["scores"].items())
            edge = " (edge)" if choice["edge"] else ""
            first = next(iter(runs.values()))
            print(
                f"| {NAMES[arm]} | **{choice['lr']}**{edge} ({grid}) | {first['adapter']:,} | "
                f"{','.join(str(s) for s in sorted(runs))} | {mean_std_text([r['test/acc'] for r in runs.values()])} | "
                f"{mean_std_text([r['test/f1'] for r in runs.values()])} |"
            )
        if {"false", "true"} <= set(found):
            z, zs = found["false"]["runs"], found["true"]["runs"]
            seeds = sorted(set(z) & set(zs))
            diffs = [100 * (z[s]["test/acc"] - zs[s]["test/acc"]) for s in seeds]
            pairs_all += diffs
            if len(diffs) > 1:
                mean, lo, hi = interval(diffs)
                print(
                    f"\nz only − z and sigma, test accuracy: {mean:+.1f} points, 95% CI [{lo:+.1f}, {hi:+.1f}] "
                    f"(paired seeds {seeds}: {', '.join(f'{d:+.1f}' for d in diffs)})\n"
                )
    if len(pairs_all) > 1:
        mean, lo, hi = interval(pairs_all)
        print(
            f"## Both tasks\n\nz only − z and sigma over {len(pairs_all)} paired runs: {mean:+.1f} points, 95% CI "
            f"[{lo:+.1f}, {hi:+.1f}]"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
