"""Sweeps through Hydra's launcher and sweeper plugins: joblib (parallel local processes), submitit (SLURM and its
local stand-in) and Optuna (``sweep=lr_search``), on a tiny model with debug=fast."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
TINY = ("model=tiny_bert", "debug=fast", "logger=none", "callbacks=none")


def train_py(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run train.py with ``args`` from the repository root, offline, one thread per process."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = str(ROOT)
    cmd = [sys.executable, "train.py", *args]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=timeout)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def hydra_config(*overrides: str) -> dict:
    """The composed, resolved ``hydra.launcher`` and ``hydra.sweeper`` nodes for ``overrides`` (nothing runs)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        nodes = {name: OmegaConf.to_container(cfg.hydra[name], resolve=True) for name in ("launcher", "sweeper")}
    GlobalHydra.instance().clear()
    return nodes


@pytest.mark.parametrize(
    "choice,target,resources",
    [
        ("parallel", "JoblibLauncher", {"n_jobs": 2, "backend": "loky"}),
        ("local", "LocalLauncher", {"timeout_min": 240, "cpus_per_task": 2, "mem_gb": 8, "gpus_per_node": 0}),
        ("slurm", "SlurmLauncher", {"timeout_min": 240, "cpus_per_task": 8, "mem_gb": 64, "gpus_per_node": 1}),
    ],
)
def test_launcher_presets_carry_the_jobs_resources(choice, target, resources):
    node = hydra_config(f"hydra/launcher={choice}")["launcher"]
    assert node["_target_"].endswith(target)
    assert {k: node[k] for k in resources} == resources


def test_slurm_preset_takes_the_clusters_settings_from_the_command_line():
    node = hydra_config("hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.tasks_per_node=4")
    assert node["launcher"]["partition"] == "gpu" and node["launcher"]["tasks_per_node"] == 4


def test_lr_search_direction_follows_the_task():
    node = hydra_config("sweep=lr_search")["sweeper"]
    assert node["_target_"].endswith("OptunaSweeper") and node["direction"] == "maximize"
    assert node["params"] == {"lr": "tag(log, interval(1e-5, 1e-1))"}
    lm = hydra_config("sweep=lr_search", "task=chatterbot", "model=smollm2")["sweeper"]
    assert lm["direction"] == "minimize"  # chatterbot monitors val/loss
    sd = hydra_config("sweep=lr_search", "task=dreambooth_animal", "model=tiny_sd")["sweeper"]
    assert sd["direction"] == "minimize"  # diffusion runs return their training loss


def _two_job_sweep(tmp_path: Path, *launcher: str) -> None:
    train_py("-m", *TINY, "rank=4,16", f"hydra.sweep.dir={tmp_path}", *launcher)
    written = {p.parent.name: p for p in tmp_path.glob("*/metrics.json")}
    assert sorted(written) == ["0", "1"], sorted(tmp_path.rglob("*"))


@pytest.mark.slow
def test_two_job_sweep_through_joblib(tmp_path):
    _two_job_sweep(tmp_path, "hydra/launcher=parallel")


@pytest.mark.slow
def test_two_job_sweep_through_submitit_local(tmp_path):
    _two_job_sweep(tmp_path, "hydra/launcher=local", "hydra.launcher.timeout_min=20")
    assert list((tmp_path / ".submitit").glob("*/*_log.out")), "submitit's job logs"


@pytest.mark.slow
def test_lr_search_with_optuna_writes_the_best_lr(tmp_path):
    train_py("sweep=lr_search", *TINY, "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={tmp_path}")
    results = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert results["name"] == "optuna" and set(results["best_params"]) == {"lr"}
    assert 1e-5 <= results["best_params"]["lr"] <= 1e-1
    trials = sorted(p.parent.name for p in tmp_path.glob("*/metrics.json"))
    assert trials == ["0", "1"]
    lrs = {yaml.safe_load((tmp_path / t / "config.yaml").read_text())["lr"] for t in trials}
    assert results["best_params"]["lr"] in lrs and len(lrs) == 2  # two proposals, the best one of them
