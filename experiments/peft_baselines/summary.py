"""The PEFT-baselines study's table (prints markdown), from committed run folders.

Every method here ran in the method comparison's setting (MiniLM, Rotten Tomatoes, 63 steps) on the same lr grid
(1e-3, 3e-3, 1e-2, 3e-2, widened by one step where seed 0's validation chose an edge); the lr is chosen on val/acc
of seed 0 (``python -m loldu.report --tune lr``), seeds 1 and 2 then run at it. Beside them, the two reference rows
are read from the studies that ran them in this setting on the same grid: LoRA r8 (../method_comparison) and LoLDU at
full rank, z only (../sigma_fidelity, the arm the project's default now is). Each method's gap to LoRA r8 and to
LoLDU is paired by seed (a seed fixes the split, the subset and the order) with its 95% t-interval.

    python experiments/peft_baselines/summary.py > experiments/peft_baselines/summary.md
"""

from __future__ import annotations

from pathlib import Path

from loldu.sweeps.runs import collect, swept_keys, value
from loldu.sweeps.stats import mean_std_text, paired_gap_text
from loldu.sweeps.tune import tune

HERE = Path(__file__).resolve().parent
STUDIES = HERE.parent
#: row name -> (folder, {key: value} the row's runs must have, what the row is)
REFERENCES = {
    "lora_r8": (STUDIES / "method_comparison/runs/rotten_tomatoes/lora_r8", {}, "../method_comparison"),
    "loldu_r384": (
        STUDIES / "sigma_fidelity/runs/rotten_tomatoes",
        {"method.options.train_sigma": "false"},
        "../sigma_fidelity, z only",
    ),
}


def chosen_runs(folder: Path, only: dict[str, str]) -> tuple[dict, dict[int, dict]]:
    """The lr choice over seed 0 (of the runs matching ``only``) and the finished runs at that lr, by seed."""
    rows = [r for r in collect(folder) if all(str(value(r, k)).lower() == v for k, v in only.items())]
    swept = [k for k in swept_keys(rows) if k not in only]
    (choice,) = tune(rows, swept, "lr", "val/acc")
    runs = [r for r in rows if r["status"] == "finished" and str(value(r, "lr")) == str(choice["lr"])]
    return choice, {r["seed"]: r for r in runs}


def main() -> None:
    rows = {}
    for folder in sorted(p for p in (HERE / "runs").iterdir() if p.is_dir()):
        rows[folder.name] = (*chosen_runs(folder, {}), "this study")
    refs = {name: (*chosen_runs(folder, only), where) for name, (folder, only, where) in REFERENCES.items()}
    everything = {**refs, **rows}
    print("## MiniLM x Rotten Tomatoes, 63 steps, 3 seeds, each method at the lr validation chose\n")
    print(
        "| method | adapter params | lr chosen (grid: val/acc % of seed 0) | seeds | test acc (%) | "
        "− LoRA r8 (points, 95% CI) | − LoLDU (points, 95% CI) | step (s) | from |"
    )
    print("|" + " --- |" * 9)
    order = sorted(everything, key=lambda n: (n not in refs, everything[n][1][0]["adapter"]))
    for name in order:
        choice, runs, where = everything[name]
        grid = ", ".join(f"{lr}: {100 * s:.1f}" for lr, s in choice["scores"].items())
        edge = " (edge)" if choice["edge"] else ""
        accs = [r["test/acc"] for r in runs.values()]
        step = min(r["step_s"] for r in runs.values() if r.get("step_s") is not None)
        vs_lora = "" if name == "lora_r8" else paired_gap_text(runs, refs["lora_r8"][1])
        vs_loldu = "" if name == "loldu_r384" else paired_gap_text(runs, refs["loldu_r384"][1])
        print(
            f"| {name} | {runs[0]['adapter']:,} | **{choice['lr']}**{edge} ({grid}) | "
            f"{','.join(str(s) for s in sorted(runs))} | {mean_std_text(accs)} | {vs_lora} | {vs_loldu} | "
            f"{step:.2f} | {where} |"
        )
    print(
        "\nA gap is the mean over seeds of (method − reference) test accuracy with its 95% t-interval over the 3 "
        "paired seeds (t with 2 degrees of freedom: 4.30 x the standard error); * marks an interval that excludes 0. "
        "Without *, the data cannot separate the two methods. Step time: the fastest seed's median training step "
        "(the machine is shared; compare within this table only roughly)."
    )


if __name__ == "__main__":
    main()
