"""Smoke runs of train(cfg) on tiny models, bad input (a two-job multirun with its report: test_report_page.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import run_composed


@pytest.mark.parametrize(
    "overrides,metric",
    [
        (("model=tiny_bert", "task=rotten_tomatoes", "method=loldu"), "test/acc"),
        (("model=tiny_roberta", "task=tweet_confidence", "method=lora"), "test/pearson"),
        (("model=tiny_vit", "task=digits", "method=svfit", "rank=16"), "test/acc"),
        (("model=tiny_vit", "task=animal_mnist", "method=linear_probe"), "test/acc"),
    ],
)
def test_smoke_run_each_task_family(tmp_path, overrides, metric):
    monitored, metrics = run_composed(tmp_path, *overrides, "logger=csv")
    assert monitored is not None
    assert metric in metrics["test"]
    assert metrics["params"]["trainable"] > 0
    for name in ("config.yaml", "metrics.json", "adapter/method.json", "csv/metrics.csv"):
        assert (tmp_path / name).exists(), name


def test_merged_model_loads_without_this_package(tmp_path):
    run_composed(tmp_path, "model=tiny_bert", "method=vera", "save_merged=true", "logger=none", "callbacks=none")
    code = (
        "import sys, transformers; m = transformers.AutoModelForSequenceClassification.from_pretrained(sys.argv[1]); "
        "assert not any('vera' in n for n, _ in m.named_parameters()); print(type(m).__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "merged")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "BertForSequenceClassification" in out.stdout


def test_wandb_runs_offline_without_a_key(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_composed(tmp_path, "model=tiny_bert", "logger=wandb", "callbacks=none")
    assert list((tmp_path / "wandb").glob("offline-run-*")), "an offline W&B run folder to `wandb sync` later"


def test_missing_data_file_fails_before_training(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        run_composed(tmp_path, "model=tiny_bert", "task=text_csv", "task.data.source_args.train=nope.csv")
    assert not (tmp_path / "checkpoints").exists()


def test_wrong_label_count_is_refused(tmp_path):
    csv = tmp_path / "train.csv"
    csv.write_text("text,label\n" + "".join(f"text number {i},{'abc'[i % 3]}\n" for i in range(60)))
    with pytest.raises(ValueError, match=r"task.num_labels=2 but .* has 3 labels.*set task.num_labels=3"):
        run_composed(
            tmp_path / "run",
            "model=tiny_bert",
            "task=text_csv",
            "task.num_labels=2",
            f"task.data.source_args.train={csv}",
        )


def _hand_written_factor(total: int, warmup: int, constant: bool):
    """The schedule this project trained with before it used transformers' functions (kept here as the spec)."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if constant:
            return 1.0
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


@pytest.mark.parametrize(
    "total,scheduler,warmup_ratio,warmup_steps",
    [
        (428, "linear", 0.06, 0),  # the default run: 6,824 sentences / 32 per batch x 2 epochs, 6% warmup
        (428, "constant", 0.06, 0),
        (530, "linear", 0.06, 30),  # the ViT table's 30 warmup steps
        (1000, "constant", 0.0, 15),  # DreamBooth
        (7, "linear", 0.0, 0),  # no warmup
    ],
)
def test_schedule_is_the_hand_written_one_step_by_step(total, scheduler, warmup_ratio, warmup_steps):
    import math
    from types import SimpleNamespace

    import torch

    from loldu.tasks import ClassificationModule

    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    module = ClassificationModule(
        model, 2, ["acc"], lr=3e-3, scheduler=scheduler, warmup_ratio=warmup_ratio, warmup_steps=warmup_steps
    )
    module._trainer = SimpleNamespace(estimated_stepping_batches=total)
    conf = module.configure_optimizers()
    optimizer, schedule = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, torch.optim.AdamW) and conf["lr_scheduler"]["interval"] == "step"
    factor = _hand_written_factor(total, warmup_steps or math.ceil(warmup_ratio * total), scheduler == "constant")
    for step in range(total + 2):
        assert optimizer.param_groups[0]["lr"] == 3e-3 * factor(step), step
        optimizer.step()
        schedule.step()


def test_paper_vit_from_a_local_folder_runs(tmp_path):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    folder = tmp_path / "vit"
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48, image_size=32)
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    _, metrics = run_composed(
        tmp_path / "run", "model=vit", "task=digits", f"model.builder.name_or_path={folder}", "rank=16"
    )
    assert metrics["model"] == "vit_base" and metrics["task"] == "digits" and "test/acc" in metrics["test"]
    assert metrics["params"]["adapter"] == 4 * 16  # 2 layers x (q, v) x r (the paper's settings: z only)


def test_no_logger_with_the_default_callbacks_and_step_time_in_metrics(tmp_path):
    """logger=none keeps the default callbacks (Lightning refuses its lr monitor without a logger: it is dropped),
    and metrics.json records the median training step time the method comparison tabulates."""
    _, metrics = run_composed(tmp_path, "model=tiny_bert", "method=loldu", "logger=none", "head_lr=0.05")
    assert metrics["head_lr"] == 0.05
    perf = metrics["perf"]
    assert perf["steps"] >= 1 and 0 < perf["step_time_s"] < metrics["wall_time_s"]
    assert perf["peak_mem_mib"] > 0
