"""W&B runs, offline: names of resolved values, a group per sweep instance, dashboard fields and summary."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers import run_composed
from wandb_files import read_offline_run

ROOT = Path(__file__).resolve().parents[1]


def test_single_run_records_resolved_fields_and_results(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    _, metrics = run_composed(tmp_path, "model=tiny_bert", "logger=wandb", "callbacks=none")  # lr: LoLDU's default
    run = read_offline_run(tmp_path)
    assert run["name"] == "loldu_r32_lr0.003_s0"
    assert run["group"] == ""  # a single run belongs to no sweep
    expected = {"model": "tiny_bert", "task": "rotten_tomatoes", "method": "loldu", "rank": 32, "lr": 0.003}
    assert {k: run["config"][k] for k in expected} == expected
    assert run["config"]["seed"] == 0 and run["config"]["epochs"] == 1
    assert run["config"]["config"]["method"]["r"] == 32, "the full resolved config is kept too"
    summary = run["summary"]
    assert summary["params/trainable"] == metrics["params"]["trainable"]
    assert summary["params/adapter"] == metrics["params"]["adapter"]
    assert summary["test/acc"] == metrics["test"]["test/acc"]


def test_each_sweep_instance_gets_its_own_group(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "2"}
    env.pop("WANDB_API_KEY", None)
    folder = tmp_path / "2026-01-02" / "10-20-30"
    cmd = [sys.executable, "train.py", "sweep=lr_ablation", "lr=1e-3,2e-3", "model=tiny_bert", "debug=fast"]
    cmd += ["logger=wandb", "callbacks=none", f"hydra.sweep.dir={folder}"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    log = out.stdout + out.stderr
    announced = [line for line in log.splitlines() if f"make report DIR={folder}" in line]
    assert len(announced) == 2, "the multirun folder and the report command, at the start and at the end"
    assert log.index(announced[0]) < log.index("#0 :") < log.index(announced[1])
    runs = [read_offline_run(folder / job) for job in ("0", "1")]
    assert [r["name"] for r in runs] == ["loldu_r32_lr0.001_s0", "loldu_r32_lr0.002_s0"]
    assert {r["group"] for r in runs} == {"lr_ablation_2026-01-02_10-20-30"}
    assert all("lr_ablation" in r["tags"] and r["config"]["sweep_name"] == "lr_ablation" for r in runs)
    assert [r["config"]["lr"] for r in runs] == [0.001, 0.002]
