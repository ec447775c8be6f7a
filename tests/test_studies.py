"""The committed studies (experiments/*/) regenerate from their committed run folders: every run the tables use
finished, each lr choice is the one validation makes, and the committed summary is what the runs give today."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from loldu.sweeps.runs import collect

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
    from loldu.sweeps.runs import swept_keys, value
    from loldu.sweeps.tune import tune

    folders = [*(COMPARISON / "runs").glob("*/*"), *(COMPARISON / "runs_longer").glob("*")]
    methods = sorted(p for p in folders if (p / "seeds").is_dir())
    if not methods:
        pytest.skip("the method comparison has no committed seeds")
    for method in methods:
        rows = collect(method)
        swept = swept_keys(rows)
        key = "head_lr" if "head_lr" in swept else "lr"  # loldu_r384_head tunes the head's lr
        (choice,) = tune(rows, swept, key, "val/acc")
        seeds = collect(method / "seeds")
        assert {str(value(r, key)) for r in seeds} == {str(choice[key])}, method
        assert sorted(r["seed"] for r in seeds) == [1, 2], method
