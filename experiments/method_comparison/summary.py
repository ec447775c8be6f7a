"""The method comparison's headline tables (prints markdown), from the committed run folders.

For each task: every method at the lr chosen on val/acc of seed 0 (``python -m loldu.report --tune lr``, the same
choice), with parameter counts, step time (each run's median step, the smallest over its seeds: on a shared machine the
others carry the load of whatever else ran) and test accuracy / F1 as mean ± std over seeds 0, 1, 2; then
LoLDU's gap to LoRA r8 and to full fine-tuning in points, as mean ± std of the per-seed differences (a seed fixes
the data split, the training subset and its order, so runs of the same seed are paired).

    cd experiments/method_comparison && python summary.py runs > summary.md
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from loldu.report_runs import collect, swept_keys, value
from loldu.report_tune import tune

ORDER = ("loldu_r384", "loldu_r64", "svfit", "lora_r8", "vera", "fourierft", "bitfit", "full", "linear_probe")
GAPS = (("loldu_r384", "lora_r8"), ("loldu_r384", "full"), ("loldu_r64", "lora_r8"), ("loldu_r384", "linear_probe"))


def _ms(values: list[float], scale: float = 100.0) -> str:
    if not values:
        return "n/a"
    mean = statistics.fmean(values) * scale
    std = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {std:.1f}"


def chosen_runs(folder: Path) -> list[dict]:
    """The finished runs of one method folder (grid and seeds) at the lr chosen on val/acc of the grid's seeds."""
    rows = collect(folder)
    swept = swept_keys(rows)
    (choice,) = tune(rows, swept, "lr", "val/acc")
    return [r for r in rows if r["status"] == "finished" and str(value(r, "lr")) == str(choice["lr"])], choice


def task_table(folder: Path) -> tuple[str, dict]:
    lines = [
        "| method | lr (grid: val/acc of seed 0) | adapter params | head params | step (s) | seeds "
        "| test acc (%) | test F1 (%) |",
        "|" + " --- |" * 8,
    ]
    by_method = {}
    for name in ORDER:
        if not (folder / name).is_dir():
            continue
        try:
            runs, choice = chosen_runs(folder / name)
        except (ValueError, FileNotFoundError) as err:  # a grid still running
            lines.append(f"| {name} | no choice yet: {err} |" + " |" * 6)
            continue
        by_method[name] = {r["seed"]: r for r in runs}
        grid = ", ".join(f"{lr}: {100 * s:.1f}" for lr, s in choice["scores"].items())
        edge = " (edge)" if choice["edge"] else ""
        step = min(r["step_s"] for r in runs if r.get("step_s"))  # best of the runs: the machine is shared
        lines.append(
            f"| {name} | **{choice['lr']}**{edge} ({grid}) | {runs[0]['adapter']:,} | {runs[0]['head']:,} "
            f"| {step:.3f} | {','.join(str(r['seed']) for r in runs)} "
            f"| {_ms([r['test/acc'] for r in runs])} | {_ms([r['test/f1'] for r in runs])} |"
        )
    return "\n".join(lines) + "\n", by_method


def gap_lines(by_method: dict) -> str:
    out = []
    for a, b in GAPS:
        if a not in by_method or b not in by_method:
            continue
        seeds = sorted(set(by_method[a]) & set(by_method[b]))
        diffs = [by_method[a][s]["test/acc"] - by_method[b][s]["test/acc"] for s in seeds]
        share = by_method[a][seeds[0]]["adapter"] / max(by_method[b][seeds[0]]["adapter"], 1)
        share_text = f"{share:.2%} of its adapter parameters" if by_method[b][seeds[0]]["adapter"] else "no adapter"
        out.append(f"- {a} − {b}: {_ms(diffs)} points test accuracy (paired seeds {seeds}; {share_text})")
    return "\n".join(out) + "\n"


def main(root: Path) -> None:
    for task in sorted(p.name for p in root.iterdir() if p.is_dir()):
        table, by_method = task_table(root / task)
        print(f"## {task}\n\n{table}\nGaps (mean ± std over paired seeds):\n\n{gap_lines(by_method)}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
