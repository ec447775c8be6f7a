"""python -m loldu.report on hand-made sweep folders: the axis follows the swept key, seeds are averaged, failed,
unfinished, stale and unreadable runs are shown as such, and --wandb logs to the sweep's group."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from wandb_files import read_offline_run

from loldu.sweeps import report as rep
from loldu.sweeps.report import main as report

ROOT = Path(__file__).resolve().parents[1]
PARAMS = {"adapter": 100, "trainable": 166, "base": 1000}


def _job(folder: Path, num: int, overrides: dict, acc=0.5, status=None, metrics=True, val_acc=None) -> Path:
    """A multirun job folder as train.py writes it: overrides, resolved config, metrics, status."""
    run = folder / str(num)
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"{k}={v}" for k, v in overrides.items()]))
    cfg = {"lr": 0.003, "seed": 0, "epochs": 3, "init": "lu", "method": {"name": "loldu", "r": 384}}
    for key, val in overrides.items():
        if key == "rank":
            cfg["method"]["r"] = int(val)
        elif key == "method":
            cfg["method"] = {"name": val, "r": 8}
        else:
            cfg[key] = yaml.safe_load(str(val))
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    if metrics:
        m = {"test": {"test/acc": acc}, "params": {**PARAMS, "trainable": 100 + cfg["method"]["r"]}}
        if val_acc is not None:
            m["val"] = {"val/acc": val_acc}
        m.update(model="minilm", task="rotten_tomatoes", method=cfg["method"]["name"], rank=cfg["method"]["r"])
        m.update(lr=cfg["lr"], seed=cfg["seed"])
        (run / "metrics.json").write_text(json.dumps(m))
    if status is not None:
        (run / "status.json").write_text(json.dumps({"status": status[0], "error": status[1], "pid": 1}))
    return run


def _sweep(folder: Path, grid: list[dict]) -> list[dict]:
    for num, overrides in enumerate(grid):
        _job(folder, num, overrides, acc=0.5 + 0.01 * num)
    return rep.collect(folder)


@pytest.mark.parametrize(
    "grid,x,lines",
    [
        ([{"rank": r, "seed": s} for r in (8, 64, 384) for s in (0, 1)], "rank", []),
        ([{"lr": lr} for lr in ("1e-3", "3e-3", "1e-2")], "lr", []),
        ([{"init": i} for i in ("lu", "uniform", "zeros")], "init", []),
        ([{"method": m, "rank": r} for m in ("loldu", "lora") for r in (8, 16)], "rank", ["method"]),
        ([{"seed": s, "model": "minilm"} for s in (0, 1, 2)], None, []),
    ],
)
def test_axis_follows_what_the_sweep_varied(tmp_path, grid, x, lines):
    rows = _sweep(tmp_path, grid)
    assert rep.axis(rep.swept_keys(rows)) == (x, lines)
    assert report([str(tmp_path)]) == 0
    assert (tmp_path / "report.png").stat().st_size > 1000


def test_seeds_are_averaged_with_their_spread(tmp_path):
    grid = [{"rank": r, "seed": s} for r in (8, 64) for s in (0, 1, 2)]
    rows = _sweep(tmp_path, grid)
    groups = rep.aggregate(rows, rep.swept_keys(rows), ["test/acc"])
    by_rank = {g["rank"]: g for g in groups}
    assert by_rank[8]["n"] == 3 and by_rank[8]["seeds"] == "0,1,2"
    mean, std = by_rank[64]["test/acc"]
    assert mean == pytest.approx(0.54) and std == pytest.approx(0.01)
    report([str(tmp_path)])
    text = (tmp_path / "report.md").read_text()
    assert "| 64 | 3 | 0,1,2 | 0.54 ± 0.01 |" in text


def test_seed_only_sweep_is_one_point(tmp_path):
    rows = _sweep(tmp_path, [{"seed": s} for s in (0, 1, 2)])
    (group,) = rep.aggregate(rows, rep.swept_keys(rows), ["test/acc"])
    assert group["n"] == 3 and group["test/acc"][0] == pytest.approx(0.51)


def test_no_two_rows_look_the_same(tmp_path):
    _sweep(tmp_path, [{"epochs": e} for e in (1, 3)] + [{"epochs": 3, "task.data.max_length": 128}])
    report([str(tmp_path)])
    runs = (tmp_path / "report.md").read_text().split("\n\n")[0].splitlines()
    assert "epochs" in runs[0] and "task.data.max_length" in runs[0]
    cells = [line.split("|")[2:] for line in runs[2:]]  # without the run column
    assert len({tuple(c) for c in cells}) == 3


def test_method_comparison_keeps_the_parameter_plot(tmp_path):
    _sweep(tmp_path, [{"method": m} for m in ("loldu", "lora", "full")])
    report([str(tmp_path)])
    assert (tmp_path / "report_params.png").stat().st_size > 1000


def test_a_copied_finished_run_stays_finished_whatever_its_file_times(tmp_path):
    """A copy does not keep file times: a finished run (status.json) whose metrics.json ends up older than its
    config.yaml is still a result; the mtime rule is for old folders without a status.json."""
    run = _job(tmp_path, 0, {"rank": 8}, acc=0.8, status=("finished", None))
    os.utime(run / "metrics.json", (1_000_000, 1_000_000))
    (row,) = rep.collect(tmp_path)
    assert (row["status"], row["error"], row["test/acc"]) == ("finished", None, 0.8)


def test_failed_unfinished_stale_and_unreadable_runs_are_shown_not_reported(tmp_path, capsys, caplog):
    _job(tmp_path, 0, {"rank": 8}, acc=0.8)
    _job(tmp_path, 1, {"rank": 16}, status=("failed", "ValueError: rank=16 boom"), metrics=False)
    _job(tmp_path, 2, {"rank": 32}, metrics=False)  # killed: no metrics.json, no status.json
    stale = _job(tmp_path, 3, {"rank": 64}, acc=0.99)  # an older run's metrics.json in a reused folder
    os.utime(stale / "metrics.json", (1_000_000, 1_000_000))
    (_job(tmp_path, 4, {"rank": 128}) / "metrics.json").write_text('{"test": {"test/acc": 0.9')  # truncated
    nan = _job(tmp_path, 5, {"rank": 256})
    nan_metrics = json.loads((nan / "metrics.json").read_text())
    nan_metrics["test"]["test/acc"] = None  # helper a's metrics.json: non-finite -> null
    (nan / "metrics.json").write_text(json.dumps(nan_metrics))
    _job(tmp_path, 6, {"rank": 384}, acc=0.97, status=("failed", "RuntimeError: loss is nan"))
    rows = {r["run"]: r for r in rep.collect(tmp_path)}
    assert {k: r["status"] for k, r in rows.items()} == {
        "0": "finished",
        "1": "failed",
        "2": "unfinished",
        "3": "unfinished",
        "4": "failed",
        "5": "failed",
        "6": "failed",
    }
    assert "test/acc" not in rows["3"] and "test/acc" not in rows["6"], "no result from a stale or failed run"
    assert "stale" in rows["3"]["error"] and "non-finite test/acc" in rows["5"]["error"]
    assert str(tmp_path / "4" / "metrics.json") in caplog.text
    assert report([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "ValueError: rank=16 boom" in out and "6 of 7 runs have no result" in out
    seeds = (tmp_path / "report.md").read_text().split("over seeds")[1]
    assert "0.8 ± 0" in seeds and "0.99" not in seeds and "0.97" not in seeds


def test_wandb_logs_the_report_in_the_sweeps_group(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    folder = tmp_path / "2026-01-02" / "10-20-30"
    _sweep(folder, [{"rank": r, "sweep": "rank_ablation"} for r in (8, 16)])
    report([str(folder), "--wandb"])
    run = read_offline_run(folder)
    assert run["group"] == "rank_ablation_2026-01-02_10-20-30" and run["name"] == "report_10-20-30"
    assert list(folder.glob("wandb/offline-run-*/files/media/table/report/runs*.table.json"))


def test_make_report_passes_args():
    out = subprocess.run(
        ["make", "-n", "report", "DIR=multirun/x", "ARGS=--wandb"], cwd=ROOT, capture_output=True, text=True
    )
    assert "-m loldu.report multirun/x --html --wandb" in out.stdout, out.stdout + out.stderr


def _grid_then_seeds(folder: Path) -> None:
    """An lr grid at seed 0 for two methods, then seeds 1, 2 at each method's chosen lr. Test accuracy is best at
    the lr that validation ranks worst, so a choice made on test would differ."""
    num = 0
    for method, vals in (("loldu", {"1e-3": 0.60, "3e-3": 0.70, "1e-2": 0.65}), ("lora", {"1e-3": 0.75, "3e-3": 0.72})):
        for lr, val in vals.items():
            _job(folder, num, {"method": method, "lr": lr, "seed": 0}, acc=1.0 - val, val_acc=val)
            num += 1
    # seeds added at loldu's chosen lr validate worse than 1e-2 did at seed 0: the choice must not move
    for seed, val in ((1, 0.55), (2, 0.56)):
        _job(folder, num, {"method": "loldu", "lr": "3e-3", "seed": seed}, acc=0.71, val_acc=val)
        num += 1


def test_tune_chooses_on_validation_over_the_grid_seeds(tmp_path, capsys):
    _grid_then_seeds(tmp_path)
    assert report([str(tmp_path), "--tune", "lr", "--print-best"]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert {m: float(lr) for m, lr in lines} == {"method=loldu": 3e-3, "method=lora": 1e-3}
    assert not (tmp_path / "report.md").exists(), "--print-best writes nothing"
    assert report([str(tmp_path), "--tune", "lr"]) == 0
    tuned = json.loads((tmp_path / "tuned.json").read_text())
    choices = {c["method"]: c for c in tuned["choices"]}
    assert float(choices["loldu"]["lr"]) == pytest.approx(0.003) and choices["loldu"]["on_seeds"] == [0]
    assert choices["loldu"]["edge"] is False and choices["lora"]["edge"] is True  # lora's best is its smallest lr
    results = {r["method"]: r for r in tuned["results"]}
    assert results["loldu"]["n"] == 3 and results["loldu"]["seeds"] == "0,1,2"
    assert results["loldu"]["test/acc"][0] == pytest.approx((0.30 + 0.71 + 0.71) / 3)
    text = (tmp_path / "report.md").read_text()
    assert "lr chosen on val/acc" in text and "at the edge of the grid" in text
    assert (tmp_path / "report_params.png").stat().st_size > 1000
    assert rep.axis(rep.swept_keys(rep.collect(tmp_path)), "lr") == ("lr", ["method"])
    assert report([str(tmp_path), "--tune", "lr", "--x", "lr"]) == 0
    with pytest.raises(SystemExit, match="--x rank: the runs do not vary it"):
        report([str(tmp_path), "--x", "rank"])


def test_tune_chooses_a_pair_jointly_over_the_product_grid(tmp_path, capsys):
    # val/acc over lr x head_lr at seed 0: the best pair (3e-3, 3e-3) is not where either key is best on average
    # (lr 1e-3 and head_lr 1e-2 have the best means)
    val = {("1e-3", "1e-3"): 0.60, ("1e-3", "3e-3"): 0.61, ("1e-3", "1e-2"): 0.66,
           ("3e-3", "1e-3"): 0.50, ("3e-3", "3e-3"): 0.70, ("3e-3", "1e-2"): 0.45,
           ("1e-2", "1e-3"): 0.64, ("1e-2", "3e-3"): 0.40, ("1e-2", "1e-2"): 0.65}  # fmt: skip
    for num, ((lr, head), v) in enumerate(val.items()):
        _job(tmp_path, num, {"lr": lr, "head_lr": head, "seed": 0}, acc=1.0 - v, val_acc=v)
    for seed in (1, 2):  # seeds at the chosen pair validate badly: the choice must not move
        _job(tmp_path, 8 + seed, {"lr": "3e-3", "head_lr": "3e-3", "seed": seed}, acc=0.8, val_acc=0.1)
    assert report([str(tmp_path), "--tune", "lr+head_lr", "--print-best"]) == 0
    best = capsys.readouterr().out.split()
    assert len(best) == 1 and [float(v) for v in best[0].split("+")] == [3e-3, 3e-3]
    assert report([str(tmp_path), "--tune", "lr+head_lr"]) == 0
    (choice,) = json.loads((tmp_path / "tuned.json").read_text())["choices"]
    assert choice["on_seeds"] == [0] and choice["edge"] is False and len(choice["scores"]) == 9
    (result,) = json.loads((tmp_path / "tuned.json").read_text())["results"]
    assert result["n"] == 3 and result["test/acc"][0] == pytest.approx((0.30 + 0.8 + 0.8) / 3)
    # a pair at the largest head_lr tried is at the edge of the grid even though its lr is inside
    _job(tmp_path, 11, {"lr": "3e-3", "head_lr": "3e-2", "seed": 0}, val_acc=0.9)
    choice = rep.tune(rep.collect(tmp_path), ["lr", "head_lr", "seed"], "lr+head_lr", "val/acc")[0]
    assert choice["edge"] is True and [float(v) for v in choice["lr+head_lr"].split("+")] == [3e-3, 3e-2]
    with pytest.raises(SystemExit, match="do not vary warmup"):
        report([str(tmp_path), "--tune", "lr+warmup"])


def test_tune_refuses_what_cannot_be_chosen(tmp_path):
    _job(tmp_path, 0, {"seed": 0}, val_acc=0.5)
    _job(tmp_path, 1, {"seed": 1}, val_acc=0.6)
    with pytest.raises(SystemExit, match="do not vary lr"):
        report([str(tmp_path), "--tune", "lr"])
    _job(tmp_path, 2, {"lr": "1e-2", "seed": 2}, val_acc=0.7)
    with pytest.raises(SystemExit, match="no seed was run at every lr"):
        report([str(tmp_path), "--tune", "lr"])
    with pytest.raises(SystemExit, match="no finished run has val/f1"):
        report([str(tmp_path), "--tune", "lr", "--on", "val/f1"])


def test_grid_jobs_and_a_seeds_folder_side_by_side_are_collected_in_order(tmp_path):
    # the layout of experiments/method_comparison/runs_longer: jobs 0, 1 of a grid with its seeds/ beside them
    for num in (0, 1, 10):
        _job(tmp_path / "loldu", num, {"lr": "3e-3"})
    _job(tmp_path / "loldu" / "seeds", 0, {"lr": "3e-3", "seed": 1})
    runs = [r["run"] for r in rep.collect(tmp_path)]
    assert runs == ["loldu/0", "loldu/1", "loldu/10", "loldu/seeds/0"]


def _two_methods_three_seeds(folder: Path, accs: dict[str, list[float]]) -> None:
    """A grid at seed 0 over two lrs for each method (the larger lr validates better), then seeds 1 and 2 there."""
    num = 0
    for method, (a0, a1, a2) in accs.items():
        _job(folder, num, {"method": method, "lr": "1e-3", "seed": 0}, acc=0.1, val_acc=0.1)
        _job(folder, num + 1, {"method": method, "lr": "1e-2", "seed": 0}, acc=a0, val_acc=0.9)
        for seed, acc in ((1, a1), (2, a2)):
            _job(folder, num + 1 + seed, {"method": method, "lr": "1e-2", "seed": seed}, acc=acc, val_acc=0.5)
        num += 4


def test_vs_reports_each_settings_paired_gap_with_its_interval(tmp_path):
    from loldu.sweeps.stats import paired_interval

    _two_methods_three_seeds(tmp_path, {"loldu": [0.70, 0.72, 0.71], "lora": [0.75, 0.77, 0.765]})
    assert report([str(tmp_path), "--tune", "lr", "--vs", "method=lora", "--html"]) == 0
    saved = json.loads((tmp_path / "gaps.json").read_text())
    assert saved["reference"] == {"method": "lora"}
    (gap,) = saved["gaps"]  # one setting besides the reference, each at its tuned lr (1e-2), not at 1e-3
    mean, low, high = paired_interval([0.70 - 0.75, 0.72 - 0.77, 0.71 - 0.765])
    assert gap["setting"].startswith("method=loldu") and gap["reference"].startswith("method=lora")
    assert gap["seeds"] == [0, 1, 2] and gap["separable"] is True
    assert (gap["mean"], gap["low"], gap["high"]) == pytest.approx((mean, low, high))
    assert gap["text"] == f"{mean:+.4f} [{low:+.4f}, {high:+.4f}] *"
    text = (tmp_path / "report.md").read_text()
    assert "Paired gaps on test/acc" in text and gap["text"] in text
    page = (tmp_path / "report.html").read_text()
    assert '<table class="gaps">' in page and '<tr class="separable">' in page and gap["text"] in page


def test_vs_says_plainly_when_an_interval_includes_zero(tmp_path):
    _two_methods_three_seeds(tmp_path, {"loldu": [0.75, 0.69, 0.73], "lora": [0.70, 0.72, 0.71]})
    assert report([str(tmp_path), "--tune", "lr", "--vs", "method=lora"]) == 0
    (gap,) = json.loads((tmp_path / "gaps.json").read_text())["gaps"]
    assert gap["separable"] is False and gap["low"] < 0 < gap["high"] and not gap["text"].endswith("*")


def test_vs_refuses_a_reference_it_cannot_pair_with(tmp_path):
    _two_methods_three_seeds(tmp_path, {"loldu": [0.7, 0.7, 0.7], "lora": [0.8, 0.8, 0.8]})
    with pytest.raises(SystemExit, match="matches 2 settings.*choose one per method on validation with --tune"):
        report([str(tmp_path), "--vs", "method=lora"])  # untuned: lora has two lrs
    assert report([str(tmp_path), "--vs", "method=lora,lr=1e-2"]) == 0  # narrowed: 0.01 is 1e-2
    gaps = json.loads((tmp_path / "gaps.json").read_text())["gaps"]
    assert {g["setting"] for g in gaps} == {"method=lora lr=1e-3", "method=loldu lr=1e-3", "method=loldu lr=1e-2"}
    one_seed = next(g for g in gaps if g["setting"] == "method=lora lr=1e-3")
    assert one_seed["seeds"] == [] and one_seed["text"] == "n/a", "one common seed gives no interval"
    with pytest.raises(SystemExit, match="no setting matches; the settings have method=loldu; method=lora"):
        report([str(tmp_path), "--tune", "lr", "--vs", "method=vera"])
    with pytest.raises(SystemExit, match="no setting has optimiser"):
        report([str(tmp_path), "--tune", "lr", "--vs", "optimiser=adam"])
    with pytest.raises(SystemExit):
        report([str(tmp_path), "--vs", "lora"])  # argparse's usage error: KEY=VALUE
