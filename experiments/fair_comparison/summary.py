"""The fair comparison's tables (prints markdown), from its committed run folders.

Every method of a budget ran the same grid, lr x head_lr, at seed 0; the pair is chosen jointly on val/acc of seed 0
(``python -m loldu.report --tune lr+head_lr``), seeds 1 and 2 then ran at it. For each budget: each method's choice,
its adapter parameters and test accuracy (mean ± std over seeds 0, 1, 2), and its paired gap to LoRA r8 and to LoLDU
with the 95% t-interval (a seed fixes the split, the subset and the order, so the runs of one seed see the same
data); then each method's validation grid, so the width of its good region can be read.

    python experiments/fair_comparison/summary.py > experiments/fair_comparison/summary.md
"""

from __future__ import annotations

from pathlib import Path

from loldu.sweeps.runs import collect, swept_keys, value
from loldu.sweeps.stats import mean_std_text, paired_gap_text
from loldu.sweeps.tune import at_edge, joint_value, tune

HERE = Path(__file__).resolve().parent
KEY = "lr+head_lr"
TASKS = {  # runs/<task>/<budget>/<method>: the task's title and each budget's steps
    "rotten_tomatoes": (
        "Rotten Tomatoes",
        {"short": "63 steps (2,000 sentences once)", "long": "214 steps (all 6,824 sentences once)"},
    ),
    "tweet_sentiment": (
        "tweet sentiment",
        {"short": "63 steps (2,000 tweets once)", "long": "the whole training split once"},
    ),
}


def chosen(folder: Path) -> tuple[dict, dict[int, dict], list[dict]]:
    """The joint choice over seed 0, the finished runs at that pair by seed, and every row (for the grid)."""
    rows = collect(folder)
    (choice,) = tune(rows, swept_keys(rows), KEY, "val/acc")
    runs = [r for r in rows if r["status"] == "finished" and str(joint_value(r, KEY)) == str(choice[KEY])]
    return choice, {r["seed"]: r for r in runs}, rows


def _pair(text: str) -> str:
    lr, head = text.split("+")
    return f"{float(lr):g} / {float(head):g}"


def seed0(rows: list[dict]) -> list[dict]:
    """The finished runs of the grid (seed 0)."""
    return [r for r in rows if r["status"] == "finished" and r.get("seed") == 0]


def edge_text(grid: list[dict], pair: str) -> str:
    """`` (edge: lr)`` naming each key whose chosen value is the smallest or largest its grid tried."""
    keys = KEY.split("+")
    edges = [k for k, v in zip(keys, pair.split("+"), strict=True) if at_edge([str(value(r, k)) for r in grid], v)]
    return f" (edge: {', '.join(edges)})" if edges else ""


def grid_table(grid: list[dict]) -> list[str]:
    """val/acc (%) of seed 0 with lr down and head_lr across."""
    cell = {(float(value(r, "lr")), float(value(r, "head_lr"))): 100 * r["val/acc"] for r in grid}
    lrs, heads = (sorted({pair[i] for pair in cell}) for i in (0, 1))
    lines = ["| lr \\ head_lr | " + " | ".join(f"{h:g}" for h in heads) + " |", "|" + " --- |" * (len(heads) + 1)]
    for lr in lrs:
        lines.append(f"| {lr:g} | " + " | ".join(f"{cell[lr, h]:.1f}" if (lr, h) in cell else "" for h in heads) + " |")
    return lines


def table(root: Path, title: str) -> None:
    """One budget's table of chosen pairs, accuracies and gaps, then each method's validation grid (nothing where
    ``root`` does not exist)."""
    if not root.is_dir():
        return
    found = {p.name: chosen(p) for p in sorted(root.iterdir()) if p.is_dir()}
    print(f"## {title}, 3 seeds, each method at the pair validation chose\n")
    print(
        "| method | adapter params | lr / head_lr chosen (val acc % of seed 0) | seeds | test acc (%) | "
        "− LoRA r8 (points, 95% CI) | − LoLDU r384 (points, 95% CI) | step (s) |"
    )
    print("|" + " --- |" * 8)
    for name, (choice, runs, rows) in sorted(found.items(), key=lambda kv: kv[1][1][0]["adapter"]):
        accs = [r["test/acc"] for r in runs.values()]
        step = min(r["step_s"] for r in runs.values() if r.get("step_s") is not None)
        vs = {
            ref: "" if name == ref or ref not in found else paired_gap_text(runs, found[ref][1])
            for ref in ("lora_r8", "loldu_r384")
        }
        edge = edge_text(seed0(rows), choice[KEY])
        print(
            f"| {name} | {runs[0]['adapter']:,} | **{_pair(choice[KEY])}**{edge} "
            f"({100 * choice['scores'][str(choice[KEY])]:.1f}) | {','.join(str(s) for s in sorted(runs))} | "
            f"{mean_std_text(accs)} | {vs['lora_r8']} | {vs['loldu_r384']} | {step:.2f} |"
        )
    print()
    for name, (_, _, rows) in found.items():
        print(f"{name}, val/acc (%) of seed 0 over the grid:\n")
        print("\n".join(grid_table(seed0(rows))) + "\n")


def main() -> None:
    unknown = sorted({p.name for p in (HERE / "runs").iterdir()} - set(TASKS))
    if unknown:
        raise SystemExit(f"runs/ holds {unknown}: name a task of {sorted(TASKS)} (runs/<task>/<budget>/<method>)")
    for task, (title, budgets) in TASKS.items():
        for budget, what in budgets.items():
            table(HERE / "runs" / task / budget, f"MiniLM x {title}, {what}")
    print(
        "A gap is the mean over seeds of (method − reference) test accuracy with its 95% t-interval over the 3 paired "
        "seeds (t with 2 degrees of freedom: 4.30 x the standard error); * marks an interval that excludes 0. Without "
        "*, the data cannot separate the two methods. (edge: key): the chosen value of that key is the smallest or "
        "largest tried (head_lr's grid has two values, so its choice is always at an edge). Step time: the fastest "
        "seed's median training step (two or three runs shared the 2 cores; compare roughly)."
    )


if __name__ == "__main__":
    main()
