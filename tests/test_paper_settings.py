"""The short commands compose the paper's settings (arXiv 2410.13618, shared/docs/method.md "Settings from the
paper"): one table of the paper's values, compared with every (model, task) pair's composed config, so configs,
README and paper cannot drift apart. And a GPU precision falls back to 32-true on a machine without a GPU."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

from loldu.run import fit_to_machine, resolve_defaults

ROOT = Path(__file__).resolve().parents[1]
IMAGE_TASKS = ("fgvc", "stanford_cars", "cifar10", "cifar100", "eurosat", "flowers102", "dtd", "oxford_pets")
# task -> (lr, epochs, max length): the paper's GLUE table
GLUE = {
    "mnli": (3e-4, 10, 128),
    "sst2": (4e-4, 10, 128),
    "mrpc": (3e-4, 20, 512),
    "cola": (2e-4, 20, 128),
    "qnli": (2e-4, 10, 512),
    "qqp": (3e-4, 20, 512),
    "rte": (4e-4, 20, 512),
    "stsb": (2e-4, 30, 512),
}
VIT = {
    "rank": 768,
    "lr": 3e-3,
    "batch": 128,
    "epochs": 10,
    "schedule": ("linear", 30, None),  # (scheduler, warmup steps, warmup ratio)
    "precision": "bf16-mixed",
    "targets": ["q_proj", "v_proj"],
    "heads": ["classifier"],
    "weight_decay": 0.0,
}
#: (short model, short task) -> the paper's values. Effective batch = batch_size x accumulate_grad_batches.
PAPER = {
    **{("vit", task): VIT for task in IMAGE_TASKS},
    **{
        ("roberta", task): {
            "rank": 768,
            "lr": lr,
            "batch": 32,
            "epochs": epochs,
            "max_length": length,
            "schedule": ("linear", 0, 0.06),
            "precision": "32-true",
            "targets": ["query", "value"],
            "heads": ["classifier"],
            "weight_decay": 0.0,
        }
        for task, (lr, epochs, length) in GLUE.items()
    },
    ("llama2", "alpaca"): {
        "rank": 1024,
        "lr": 1e-3,
        "batch": 128,
        "micro_batch": 1,
        "epochs": 3,
        "cutoff_len": 256,
        "precision": "bf16-mixed",
        "targets": ["q_proj", "v_proj"],
        "heads": [],
        "weight_decay": 0.0,
    },
    ("sd", "dreambooth"): {
        "rank": 32,
        "lr": 5e-4,
        "batch": 1,
        "max_steps": 1000,
        "schedule": ("constant", 15, None),
        "precision": "16-mixed",  # the authors' scripts: fp16
        "targets": ["to_q", "to_k", "to_v", "to_out.0"],
        "heads": [],
        "weight_decay": 0.01,
        "resolution": 512,
    },
}


def _compose(*overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.mark.parametrize(("model", "task"), list(PAPER), ids=[f"{m}-{t}" for m, t in PAPER])
def test_the_short_command_composes_the_papers_setting(model, task):
    paper = PAPER[(model, task)]
    cfg = _compose(f"model={model}", f"task={task}", "method=loldu", f"rank={paper['rank']}")
    resolve_defaults(cfg)
    assert cfg.method.name == "loldu" and cfg.method.r == paper["rank"]
    assert cfg.method.alpha is None  # alpha = r: sigma0 = 1, the paper's r = alpha
    assert cfg.method.options.train_sigma is False  # z only, as the authors' code trains (ViT-base r=768: 18,432)
    assert cfg.lr == paper["lr"]
    assert cfg.batch_size * cfg.trainer.get("accumulate_grad_batches", 1) == paper["batch"]
    assert cfg.batch_size == paper.get("micro_batch", paper["batch"])
    assert cfg.trainer.precision == paper["precision"]
    assert cfg.trainer.accelerator == "auto"  # the same command on a GPU machine and on this CPU
    assert list(cfg.method.target_modules) == paper["targets"] and list(cfg.method.head_modules) == paper["heads"]
    assert cfg.weight_decay == paper["weight_decay"] and cfg.optimizer._target_ == "torch.optim.AdamW"
    if "epochs" in paper:
        assert cfg.epochs == paper["epochs"] and cfg.trainer.max_epochs == paper["epochs"]
    if "schedule" in paper:
        scheduler, warmup_steps, warmup_ratio = paper["schedule"]
        assert cfg.task_schedule.scheduler == scheduler and cfg.task_schedule.warmup_steps == warmup_steps
        if warmup_ratio is not None:
            assert cfg.task_schedule.warmup_ratio == warmup_ratio
    if "max_length" in paper:
        assert cfg.task.max_length == paper["max_length"]
    if "cutoff_len" in paper:
        assert cfg.task.data.cutoff_len == paper["cutoff_len"]
    if "max_steps" in paper:
        assert cfg.task.max_steps == paper["max_steps"] and cfg.model.builder.resolution == paper["resolution"]


@pytest.mark.parametrize(
    ("model", "task", "experiment"),
    [
        ("vit", "cifar10", "vit_base_image6"),
        ("roberta", "rte", "glue_roberta_base"),
        ("llama2", "alpaca", "llama2_instruct"),
        ("sd", "dreambooth", "sd_dreambooth"),
    ],
)
def test_the_experiment_launcher_composes_the_same_run(model, task, experiment):
    """experiment= files launch a table; the settings themselves are the pair's (conf/model_task/)."""
    short = _compose(f"model={model}", f"task={task}", "method=loldu", f"rank={PAPER[(model, task)]['rank']}")
    launched = _compose(f"experiment={experiment}", f"task={task}")
    for cfg in (short, launched):
        resolve_defaults(cfg)
        cfg.output_dir = "x"  # the folder names carry a time stamp
    for key in ("model", "task", "method", "lr", "batch_size", "epochs", "weight_decay", "task_schedule", "trainer"):
        assert launched[key] == short[key], key


def test_a_gpu_precision_falls_back_to_fp32_without_a_gpu_with_one_line(caplog):
    cfg = _compose("model=vit", "task=fgvc", "method=loldu", "rank=768")
    with caplog.at_level(logging.INFO, logger="loldu"):
        fit_to_machine(cfg, cuda=False)
    assert cfg.trainer.precision == "32-true"
    lines = [r.getMessage() for r in caplog.records if "no GPU found" in r.getMessage()]
    assert lines == ["no GPU found: precision bf16-mixed -> 32-true (trainer.accelerator=auto); the numbers are fp32's"]


def test_a_gpu_keeps_the_papers_precision():
    cfg = _compose("model=sd", "task=dreambooth", "method=loldu", "rank=32")
    fit_to_machine(cfg, cuda=True)
    assert cfg.trainer.precision == "16-mixed"


def test_a_named_accelerator_keeps_its_precision():
    """CPU autocast stays possible on purpose: trainer=cpu with bf16-mixed is what it says."""
    cfg = _compose("model=vit", "task=fgvc", "trainer=cpu", "trainer.precision=bf16-mixed")
    fit_to_machine(cfg, cuda=False)
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.accelerator == "cpu"
