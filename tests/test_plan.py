"""plan=true: the paper's runs counted on the meta device, offline, exactly as a run records them, leaving nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

from loldu.run.plan import plan

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
GIB = 1024**3


def _plan(tmp_path: Path, *overrides: str) -> dict:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"output_dir={tmp_path / 'run'}"], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return plan(cfg)


def test_llama2_7b_loldu_r1024_is_counted_on_the_meta_device_without_weights(tmp_path):
    result = _plan(tmp_path, "model=llama2_7b", "task=alpaca", "method=loldu", "rank=1024")
    p = result["params"]
    assert p["base"] == 6_738_415_616  # LLaMA-2-7B's parameters, its own vocabulary of 32,000
    assert p["adapter"] == p["trainable"] == 64 * 1024  # 32 layers x (q, v) x z (the paper trains z only)
    assert result["precision"] == "bf16-mixed" and result["optimizer_steps"] is None  # hub data: not read
    memory = result["memory_gib"]
    assert memory["weights (frozen)"] == pytest.approx(6_738_415_616 * 2 / GIB)  # bf16
    factors = 64 * (4096 * 1024 + 1024 * 4096) * 2 / GIB  # P L_r and U'_r in bf16
    assert factors <= memory["frozen factors and buffers"] < factors * 1.01
    assert result["setup"] == {"layers": 64, "multiply_adds": 64 * 1024 * 4096 * 4096}
    assert result["sources"]["model"].startswith("network: hub meta-llama/Llama-2-7b-hf")


def test_lora_r8_beside_it(tmp_path):
    result = _plan(tmp_path, "model=llama2_7b", "task=alpaca", "method=lora", "rank=8")
    assert result["params"]["adapter"] == 64 * 8 * (4096 + 4096)
    assert result["memory_gib"]["AdamW state (2 x fp32)"] == pytest.approx(64 * 8 * 8192 * 8 / GIB)
    assert result["setup"]["layers"] == 0


@pytest.mark.parametrize(
    ("overrides", "adapter", "head"),
    [
        (("model=vit", "task=fgvc", "method=loldu", "rank=768"), 24 * 768, 768 * 100 + 100),  # the paper's 18,432
        (("model=roberta", "task=sst2", "method=loldu", "rank=768"), 24 * 768, 768 * 768 + 768 + 768 * 2 + 2),
    ],
)
def test_the_papers_classifiers_are_counted_offline(tmp_path, overrides, adapter, head):
    p = _plan(tmp_path, *overrides)["params"]
    assert (p["adapter"], p["head"], p["trainable"]) == (adapter, head, adapter + head)


def test_stable_diffusion_unet_is_counted_with_its_frozen_parts(tmp_path):
    from PIL import Image

    (tmp_path / "dog").mkdir()
    for i in range(3):
        Image.new("RGB", (64, 64), (40 * i, 90, 20)).save(tmp_path / "dog" / f"{i}.png")
    result = _plan(
        tmp_path, "model=sd", "task=dreambooth", "method=loldu", "rank=32", f"task.data.instance_dir={tmp_path}/dog"
    )
    assert result["params"]["base"] == 859_520_964  # SD-1.5's UNet
    assert result["params"]["adapter"] == 128 * 32  # 16 transformer blocks x 2 attentions x (q, k, v, out) x r
    assert result["optimizer_steps"] == 1000 and result["precision"] == "16-mixed"
    assert result["memory_gib"]["other frozen parts"] > 0.7  # the VAE and the CLIP ViT-L/14 text encoder, fp32


@pytest.mark.parametrize("method,adapter", [("textual_inversion", 32), ("dreambooth_full", 792_964)])
def test_the_papers_diffusion_baselines_are_planned_as_they_train(tmp_path, method, adapter):
    """Textual inversion's new rows (1 vector x tiny_sd's 32-wide embedding) and DreamBooth's whole UNet: the
    counts tests/test_diffusion_methods.py's runs record."""
    p = _plan(tmp_path, "model=tiny_sd", "task=dreambooth_animal", f"method={method}")["params"]
    assert p["adapter"] == p["trainable"] == adapter


def test_the_counts_are_those_a_finished_run_recorded(tmp_path):
    """The method comparison's LoLDU r384 run (MiniLM x Rotten Tomatoes) recorded its counts in metrics.json."""
    recorded = ROOT / "experiments/method_comparison/runs/rotten_tomatoes/loldu_r384/seeds/0/metrics.json"
    result = _plan(tmp_path, "epochs=1", "+task.data.limit_train=2000", "train_sigma=true")  # as it ran then
    assert result["params"] == json.loads(recorded.read_text())["params"]
    assert result["train_rows"] == 2000 and result["optimizer_steps"] == 63  # 2,000 rows in batches of 32, 1 epoch


def test_the_plan_removes_the_folder_hydra_made_and_nothing_else(tmp_path):
    (tmp_path / "run" / ".hydra").mkdir(parents=True)
    _plan(tmp_path, "model=tiny_bert")
    assert not (tmp_path / "run").exists() and tmp_path.exists()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_text("{}")  # not Hydra's: kept
    _plan(tmp_path, "model=tiny_bert")
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_plan_true_from_the_command_line_prints_and_leaves_no_run_folder(tmp_path):
    cmd = [sys.executable, str(ROOT / "train.py"), "model=llama2", "task=alpaca", "method=loldu", "rank=1024"]
    out = subprocess.run([*cmd, "plan=true"], cwd=tmp_path, capture_output=True, text=True, env=ENV, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    assert "adapter parameters   65,536 (0.0010% of 6,738,415,616)" in text and "activations (estimate)" in text
    assert list(tmp_path.iterdir()) == [], "no run folder left behind"


def test_plan_refuses_what_the_run_would_refuse(tmp_path):
    with pytest.raises(ValueError, match="rank=4097 does not fit"):
        _plan(tmp_path, "model=llama2_7b", "task=alpaca", "method=loldu", "rank=4097")
    assert not (tmp_path / "run").exists()
