"""The method comparison's headline tables (prints markdown), from the committed run folders.

For each task: every method at the lr chosen on val/acc of seed 0 (``python -m loldu.report --tune lr``, the same
choice), with parameter counts, step time (each run's median step, the smallest over its seeds: on a shared machine the
others carry the load of whatever else ran) and test accuracy / F1 as mean ± std over seeds 0, 1, 2; then
LoLDU's gap to LoRA r8 and to full fine-tuning in points, as mean ± std of the per-seed differences (a seed fixes
the data split, the training subset and its order, so runs of the same seed are paired).

    cd experiments/method_comparison && python summary.py runs --figures > summary.md   # and figure1_<task>.png
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from loldu.sweeps.runs import collect, swept_keys, value
from loldu.sweeps.tune import tune

ORDER = (
    "loldu_r384",
    "loldu_r384_head",
    "loldu_r64",
    "svfit",
    "lora_r8",
    "vera",
    "fourierft",
    "bitfit",
    "full",
    "linear_probe",
)
GAPS = (
    ("loldu_r384", "lora_r8"),
    ("loldu_r384", "full"),
    ("loldu_r384_head", "lora_r8"),
    ("loldu_r384_head", "full"),
    ("loldu_r64", "lora_r8"),
    ("loldu_r384", "linear_probe"),
)


def _ms(values: list[float], scale: float = 100.0) -> str:
    if not values:
        return "n/a"
    mean = statistics.fmean(values) * scale
    std = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.1f} ± {std:.1f}"


def chosen_runs(folder: Path) -> tuple[list[dict], dict, str]:
    """The finished runs of one method folder (grid and seeds) at the value chosen on val/acc of the grid's seeds:
    of ``head_lr`` where the folder varies it (loldu_r384_head), else of ``lr``."""
    rows = collect(folder)
    swept = swept_keys(rows)
    key = "head_lr" if "head_lr" in swept else "lr"
    (choice,) = tune(rows, swept, key, "val/acc")
    runs = [r for r in rows if r["status"] == "finished" and str(value(r, key)) == str(choice[key])]
    return runs, choice, key


def task_table(folder: Path) -> tuple[str, dict]:
    lines = [
        "| method | lr chosen (grid: val/acc % of seed 0) | adapter params | head params | step (s) | seeds "
        "| test acc (%) | test F1 (%) |",
        "|" + " --- |" * 8,
    ]
    by_method = {}
    for name in ORDER:
        if not (folder / name).is_dir():
            continue
        try:
            runs, choice, key = chosen_runs(folder / name)
        except (ValueError, FileNotFoundError) as err:  # a grid still running
            lines.append(f"| {name} | no choice yet: {err} |" + " |" * 6)
            continue
        by_method[name] = {r["seed"]: r for r in runs}
        grid = ", ".join(f"{lr}: {100 * s:.1f}" for lr, s in choice["scores"].items())
        edge = " (edge)" if choice["edge"] else ""
        chosen = f"**{choice[key]}**" if key == "lr" else f"{runs[0]['lr']}, head_lr **{choice[key]}**"
        step = min(r["step_s"] for r in runs if r.get("step_s"))  # best of the runs: the machine is shared
        lines.append(
            f"| {name} | {chosen}{edge} ({key}: {grid}) | {runs[0]['adapter']:,} | {runs[0]['head']:,} "
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


def figure(by_method: dict, task: str, path: Path) -> None:
    """Test accuracy (mean ± std over seeds) against trainable parameters incl. head, log axis: the paper's Figure 1
    in miniature, one labelled point per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, runs in by_method.items():
        accs = [100 * r["test/acc"] for r in runs.values()]
        x = next(iter(runs.values()))["trainable"]
        mean, std = statistics.fmean(accs), statistics.stdev(accs) if len(accs) > 1 else 0.0
        ax.errorbar([x], [mean], yerr=[std], marker="o", capsize=3, label=name)
        ax.annotate(name, (x, mean), textcoords="offset points", xytext=(6, -3), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters, incl. the classifier head (log)")
    seeds = sorted({len(runs) for runs in by_method.values()})
    ax.set_ylabel(f"test accuracy (%), mean ± std over {'/'.join(map(str, seeds))} seeds")
    ax.set_title(f"MiniLM x {task}\n1 epoch over 2,000 examples, each method at the lr chosen on val", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(root: Path, figures: bool = False) -> None:
    for task in sorted(p.name for p in root.iterdir() if p.is_dir()):
        table, by_method = task_table(root / task)
        print(f"## {task}\n\n{table}\nGaps (mean ± std over paired seeds):\n\n{gap_lines(by_method)}")
        if figures:  # loldu_r384_head has loldu_r384's parameters: one point per method
            plotted = {k: v for k, v in by_method.items() if k != "loldu_r384_head"}
            figure(plotted, task, root.parent / f"figure1_{task}.png")


if __name__ == "__main__":
    main(Path(sys.argv[1]), figures="--figures" in sys.argv[2:])
