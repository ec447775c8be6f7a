"""Multiruns: ranks that cannot fit are refused before any job (or skipped, with skip_unfit_ranks); the multirun
folder is announced."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from loldu.sweeps import check_ranks, swept_values

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def test_rank_preset_holds_the_papers_ranks_and_lr_and_skips_what_does_not_fit(caplog):
    cfg = _compose("sweep=rank_ablation")
    assert swept_values(cfg)["rank"] == ["1", "8", "16", "32", "64", "128", "256", "512", "768"]
    assert cfg.lr == 5e-3 and cfg.skip_unfit_ranks is True
    with caplog.at_level("WARNING", logger="loldu"):
        check_ranks(cfg)  # MiniLM (full rank 384): 512 and 768 are skipped, saying so, not refused
    assert "rank(s) 512,768 exceed model minilm's full rank 384: those jobs will be skipped" in caplog.text
    with open_dict(cfg):
        cfg.skip_unfit_ranks = False
    with pytest.raises(ValueError, match="rank\\(s\\) 512,768 exceed model minilm's full rank 384"):
        check_ranks(cfg)


def test_the_papers_model_runs_every_rank_of_the_preset():
    cfg = _compose("sweep=rank_ablation", "model=vit", "task=fgvc", "method=loldu")
    assert cfg.model.full_rank == 768 and max(int(r) for r in swept_values(cfg)["rank"]) == 768
    assert cfg.lr == 5e-3  # the preset's lr wins over the pair's 3e-3


def test_a_job_whose_rank_does_not_fit_is_skipped_and_listed(tmp_path):
    out = _multirun(
        tmp_path, "-m", "model=tiny_bert", "rank=8,64", "skip_unfit_ranks=true", "debug=fast", "logger=none"
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "those jobs will be skipped" in out.stdout + out.stderr
    skipped = json.loads((tmp_path / "1" / "status.json").read_text())
    assert skipped["status"] == "skipped" and "rank=64 exceeds model tiny_bert's full rank 32" in skipped["error"]
    assert not (tmp_path / "1" / "metrics.json").exists() and not (tmp_path / "1" / "config.yaml").exists()
    assert json.loads((tmp_path / "0" / "status.json").read_text())["status"] == "finished"
    from loldu.sweeps.runs import collect

    rows = {r["run"]: r for r in collect(tmp_path)}
    assert rows["1"]["status"] == "skipped" and rows["0"]["status"] == "finished"


def test_command_line_ranks_replace_the_presets():
    cfg = _compose("sweep=rank_ablation", "model=tiny_bert", "rank=16")
    assert swept_values(cfg)["rank"] == ["16"]
    check_ranks(cfg)


def test_methods_without_a_rank_bound_are_not_checked():
    cfg = _compose("method=lora", "rank=16")
    check_ranks(cfg)
    cfg = _compose("method=bitfit", "model=tiny_bert", "rank=1000")
    check_ranks(cfg)


def _multirun(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "train.py", *args, f"hydra.sweep.dir={tmp_path}"]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=ENV, timeout=300)


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ("sweep=rank_ablation", "model=tiny_bert", "skip_unfit_ranks=false"),
            "rank(s) 64,128,256,512,768 exceed model tiny_bert's full rank 32",
        ),
        (("-m", "model=tiny_bert,minilm", "rank=8,64"), "rank(s) 64 exceed model tiny_bert's full rank 32"),
    ],
)
def test_sweep_with_ranks_that_do_not_fit_is_refused_before_any_job(tmp_path, args, message):
    # a missing data file makes any job that does start fail at once (the old behaviour, quickly)
    out = _multirun(tmp_path, *args, "task=text_csv", "task.data.source_args.train=nope.csv")
    assert out.returncode != 0
    assert message in out.stderr and "e.g. 'rank=" in out.stderr, out.stderr[-2000:]
    assert not (tmp_path / "0").exists(), "no job ran"


def test_sweep_dashboard_and_report_modules_import_no_torch():
    code = "import sys, loldu.sweeps, loldu.run.tracking, loldu.sweeps.report; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=ENV)
    assert out.stdout.strip().splitlines()[-1] == "False"
