"""The committed studies (experiments/*/) regenerate from their committed run folders: every run the tables use
finished, each lr choice is the one validation makes, and the committed summary is what the runs give today."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loldu.sweeps.runs import collect, value

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ROOT / "experiments"
COMPARISON = STUDIES / "method_comparison"


def _runs(study: str, folder: str = "runs") -> Path:
    path = STUDIES / study / folder
    if not path.is_dir():
        pytest.skip(f"{study} has no committed {folder}/")
    return path


@pytest.mark.parametrize(
    "study, folder",
    [
        ("method_comparison", "runs"),
        ("method_comparison", "runs_longer"),
        ("rank_ablation", "runs"),
        ("init_ablation", "runs"),
        ("instruction_tuning", "runs"),
        ("defaults", "runs"),
        ("fair_comparison", "runs"),
    ],
)
def test_every_committed_run_finished_with_its_config(study, folder):
    rows = collect(_runs(study, folder))
    assert rows and all(r["status"] == "finished" for r in rows), [r["run"] for r in rows if r["status"] != "finished"]
    for row in rows:
        run = _runs(study, folder) / row["run"]
        assert (run / "config.yaml").is_file() and (run / ".hydra" / "overrides.yaml").is_file(), run


def test_method_comparison_summary_is_what_the_runs_give():
    runs = _runs("method_comparison")
    out = subprocess.run(
        [sys.executable, str(COMPARISON / "summary.py"), str(runs)], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout == (COMPARISON / "summary.md").read_text()


def test_seeds_ran_at_the_lr_validation_chose():
    from loldu.sweeps.runs import swept_keys
    from loldu.sweeps.tune import joint_value, tune

    folders = [
        *(COMPARISON / "runs").glob("*/*"),
        *(COMPARISON / "runs_longer").glob("*"),
        *(STUDIES / "fair_comparison" / "runs").glob("*/*/*"),  # <task>/<budget>/<method>
    ]
    methods = sorted(p for p in folders if (p / "seeds").is_dir())
    if not methods:
        pytest.skip("the method comparison has no committed seeds")
    for method in methods:
        rows = collect(method)
        swept = swept_keys(rows)
        # lr; loldu_r384_head tunes the head's lr alone; the fair comparison both jointly
        key = "+".join(k for k in ("lr", "head_lr") if k in swept)
        (choice,) = tune(rows, swept, key, "val/acc")
        seeds = collect(method / "seeds")
        assert {str(joint_value(r, key)) for r in seeds} == {str(choice[key])}, method
        assert sorted(r["seed"] for r in seeds) == [1, 2], method


def _pairs(rows: list[dict]) -> set[tuple[float, float]]:
    return {(float(value(r, "lr")), float(value(r, "head_lr"))) for r in rows}


def test_fair_comparison_gave_every_method_the_same_grid_and_widening():
    """The fairness the study claims, read from its run folders: in each task and budget every method ran the same
    full lr x head_lr product at seed 0, and an extension exactly where its grid's choice sat at an lr edge: the one
    lr beyond it (x1/3 or x3), at both head_lrs."""
    from loldu.sweeps.runs import swept_keys
    from loldu.sweeps.tune import tune

    budgets = sorted(_runs("fair_comparison").glob("*/*"))  # <task>/<budget>
    assert budgets
    for budget in budgets:
        grids = {}
        for method in sorted(p for p in budget.iterdir() if p.is_dir()):
            rows = collect(method / "grid")
            assert {r["seed"] for r in rows} == {0}, method
            pairs = grids[method.name] = _pairs(rows)
            lrs, heads = (sorted({pair[i] for pair in pairs}) for i in (0, 1))
            assert pairs == {(lr, head) for lr in lrs for head in heads}, f"{method}: not a full product"
            (choice,) = tune(rows, swept_keys(rows), "lr+head_lr", "val/acc")
            lr = float(str(choice["lr+head_lr"]).split("+")[0])
            extension = method / "extend"
            if lr in (lrs[0], lrs[-1]):
                beyond = float(f"{lr / 3 if lr == lrs[0] else lr * 3:.0e}")
                extended = collect(extension)
                assert _pairs(extended) == {(beyond, head) for head in heads}, method
                assert {r["seed"] for r in extended} == {0}, method
            else:
                assert not extension.exists(), f"{method}: widened though its choice {lr:g} is inside the grid"
        assert len({frozenset(pairs) for pairs in grids.values()}) == 1, f"{budget}: methods ran different grids"


def _tracked(folder: Path) -> list[Path]:
    """The files of ``folder`` that the repository holds (git ls-files), else every file in it."""
    out = subprocess.run(["git", "ls-files", "-z", str(folder)], cwd=ROOT, capture_output=True, text=True)
    if out.returncode == 0 and out.stdout:
        return [ROOT / p for p in out.stdout.split("\0") if p]
    return [p for p in folder.rglob("*") if p.is_file()]


TEXT_OUTPUTS = (".md", ".csv", ".json")


@pytest.mark.parametrize("study", sorted(p.parent.name for p in STUDIES.glob("*/report.sh")))
def test_study_report_regenerates_from_the_repository_alone(study, tmp_path):
    """Each study's report.sh, run on a copy of only the files the repository holds, writes the tables (md, csv,
    json) that are committed, byte for byte: nothing a report reads is missing from the repository (an ignored run
    folder, a local file), and the committed tables are what today's code makes of the committed runs."""
    for path in _tracked(STUDIES):  # every study's files: a study may read another's runs (peft_baselines does)
        target = tmp_path / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    files = _tracked(STUDIES / study)
    committed = {p.relative_to(ROOT): p.read_bytes() for p in files if p.suffix in TEXT_OUTPUTS}
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    out = subprocess.run(
        ["bash", str(tmp_path / "experiments" / study / "report.sh")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    changed = [str(p) for p, data in committed.items() if (tmp_path / p).read_bytes() != data]
    written = {
        p.relative_to(tmp_path) for p in (tmp_path / "experiments" / study).rglob("*") if p.suffix in TEXT_OUTPUTS
    }
    new = sorted(str(p) for p in written - set(committed))
    assert not changed, f"report.sh of {study} no longer writes the committed {changed}: run `make studies`, commit"
    assert not new, f"report.sh of {study} writes tables the repository does not hold: {new}"


def test_report_vs_gives_the_fair_comparisons_gaps(tmp_path):
    """``python -m loldu.report ... --tune lr+head_lr --vs method=lora`` on the committed 63-step runs gives the
    paired gaps to LoRA r8 that the study's summary prints (one interval computation, two callers)."""
    from loldu.sweeps.report import main as report
    from loldu.sweeps.stats import gap_text

    study = STUDIES / "fair_comparison"
    lines = (study / "summary.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "− LoRA r8" in line) + 2  # the 63-step table's rows
    table = lines[start : next(i for i in range(start, len(lines)) if not lines[i].startswith("| "))]
    expected = {row[0].strip("| "): row[5].strip() for row in (line.split(" | ") for line in table)}
    assert expected.pop("lora_r8") == "" and expected, table
    folders = [str(_runs("fair_comparison") / "rotten_tomatoes" / "short" / name) for name in [*expected, "lora_r8"]]
    assert report([*folders, "--out", str(tmp_path), "--tune", "lr+head_lr", "--vs", "method=lora"]) == 0
    gaps = json.loads((tmp_path / "gaps.json").read_text())["gaps"]
    points = [{**g, **{k: 100 * g[k] for k in ("mean", "low", "high")}} for g in gaps]
    assert sorted(gap_text(g) for g in points) == sorted(expected.values())
    assert all(g["seeds"] == [0, 1, 2] for g in gaps)
