"""trainer=ddp and trainer=fsdp: train.py in two CPU processes (gloo) against one process, on tiny models.

Each run goes through ``train.py`` in a subprocess, as a user runs it: Lightning's launcher starts the second
process itself. ``distributed_probe.Probe`` records on every rank its decomposition hash (before the strategy
wraps the model), its step losses and its final metrics.

The comparison with one process is full-batch training: debug=fast reads 64 training examples, one process takes
them as one batch of 64 and each of two processes as one batch of 32, so every optimizer step sees the same examples
whatever order the samplers deal them in (DistributedSampler's shuffle is not the data module's). On deterministic
models (tiny ViT and LLaMA have no dropout; augmentation off) the mean of the ranks' step losses is then the
one-process loss of that step over three epochs, and the validation metrics, synced over ranks, match.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def train_py(out: Path, *overrides: str, devices: int = 1, strategy: str = "ddp") -> subprocess.CompletedProcess:
    """Run train.py with debug=fast and the probe into ``out``; ``devices`` > 1: trainer=<strategy> on CPU."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
    cmd = [sys.executable, "train.py", "debug=fast", "logger=none", "callbacks=none", f"hydra.run.dir={out}"]
    cmd += ["+callbacks.probe._target_=distributed_probe.Probe", f"+callbacks.probe.path={out / 'probe'}"]
    if devices > 1:
        cmd += [f"trainer={strategy}", f"trainer.devices={devices}", "trainer.accelerator=cpu"]
    result = subprocess.run([*cmd, *overrides], cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def probes(out: Path) -> list[dict]:
    """The probe records of the run in ``out``, by rank."""
    return [json.loads((out / "probe" / f"rank{r}.json").read_text()) for r in range(len(list(out.glob("probe/*"))))]


def assert_ranks_agree(records: list[dict], keys: tuple[str, ...] = ("val", "test")) -> None:
    """Same decompositions on every rank, and the same (synced) metrics."""
    assert len(records) == 2 and [r["rank"] for r in records] == [0, 1] and records[0]["world"] == 2
    assert records[0]["decompositions"] == records[1]["decompositions"]
    for key in keys:
        assert records[0][key] and records[0][key] == pytest.approx(records[1][key], rel=1e-6), key


def assert_rank_zero_wrote(out: Path, result: subprocess.CompletedProcess) -> None:
    """The run folder is rank 0's: written once (one summary printed), no folder of rank 1 elsewhere."""
    for name in ("config.yaml", "metrics.json", "adapter/method.json"):
        assert (out / name).exists(), name
    assert result.stdout.count("outputs: ") == 1, result.stdout[-2000:]
    assert (out / "train_ddp_process_1.log").exists()  # rank 1 ran in this folder (Hydra's log only)


def mean_losses(records: list[dict]) -> list[float]:
    """The global step losses: the mean of the ranks' (equal-sized) batch losses."""
    return [sum(step) / len(step) for step in zip(*(r["losses"] for r in records), strict=True)]


IMAGE = ("model=tiny_vit", "task=digits", "task.data.augment=false", "method=loldu", "rank=8", "epochs=3")
FULL_EVAL = ("trainer.limit_val_batches=1.0", "trainer.limit_test_batches=1.0")


def test_ddp_image_classification_matches_one_process(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    train_py(one, *IMAGE, *FULL_EVAL, "batch_size=64")
    result = train_py(two, *IMAGE, *FULL_EVAL, "batch_size=32", devices=2)
    records, single = probes(two), probes(one)[0]
    assert_ranks_agree(records)
    assert records[0]["decompositions"] == single["decompositions"]
    assert len(single["losses"]) == 3
    assert mean_losses(records) == pytest.approx(single["losses"], rel=1e-4)
    assert records[0]["val"]["val/acc"] == pytest.approx(single["val"]["val/acc"])  # the same 32 examples
    assert records[0]["val"]["val/loss"] == pytest.approx(single["val"]["val/loss"], rel=1e-4)
    assert_rank_zero_wrote(two, result)
    metrics = json.loads((two / "metrics.json").read_text())
    assert metrics["test"]["test/acc"] == pytest.approx(records[0]["test"]["test/acc"])


LM = (
    "model=tiny_llama",
    "task=chatterbot",
    "epochs=2",
    "task.generation.max_new_tokens=2",
    "task.generation.num_prompts=1",
)


@pytest.mark.slow
def test_ddp_causal_lm_val_loss_is_token_weighted_over_ranks(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    train_py(one, *LM, *FULL_EVAL, "batch_size=64")
    result = train_py(two, *LM, *FULL_EVAL, "batch_size=32", devices=2)
    records, single = probes(two), probes(one)[0]
    assert_ranks_agree(records, keys=("val",))
    # Summed token losses and token counts are all-reduced: the split's loss, not a mean of the ranks' losses.
    assert records[0]["val"]["val/tokens"] == single["val"]["val/tokens"]
    before_one = json.loads((one / "metrics.json").read_text())["val_before"]
    before_two = json.loads((two / "metrics.json").read_text())["val_before"]
    assert before_two["val/loss"] == pytest.approx(before_one["val/loss"], rel=1e-5)  # the same weights
    # Training loss is a mean over each rank's tokens, so steps agree only approximately with one process.
    assert mean_losses(records) == pytest.approx(single["losses"], rel=0.05)
    assert_rank_zero_wrote(two, result)
    rows = (two / "generations.jsonl").read_text().splitlines()
    assert len(rows) == 3  # one prompt: before training and after each of 2 epochs, written by rank 0 only


@pytest.mark.slow
def test_ddp_text_classification_syncs_metrics(tmp_path):
    out = tmp_path / "run"
    result = train_py(out, "model=tiny_bert", "method=loldu", *FULL_EVAL, "batch_size=32", devices=2)
    assert_ranks_agree(probes(out))  # torchmetrics accuracy and F1 over both ranks' examples
    assert_rank_zero_wrote(out, result)


@pytest.mark.slow
def test_ddp_diffusion_trains_in_two_processes(tmp_path):
    out = tmp_path / "run"
    overrides = ("model=tiny_sd", "task=dreambooth_animal", "batch_size=1", "task.samples.every_n_steps=0")
    result = train_py(out, *overrides, devices=2)
    records = probes(out)
    assert_ranks_agree(records, keys=())
    assert len(records[0]["losses"]) == len(records[1]["losses"]) == 3
    assert_rank_zero_wrote(out, result)
    assert (out / "lora" / "pytorch_lora_weights.safetensors").exists()


@pytest.mark.slow
def test_fsdp_image_classification_matches_one_process(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    train_py(one, *IMAGE, *FULL_EVAL, "batch_size=64")
    result = train_py(two, *IMAGE, *FULL_EVAL, "batch_size=32", devices=2, strategy="fsdp")
    records, single = probes(two), probes(one)[0]
    assert_ranks_agree(records)
    assert mean_losses(records) == pytest.approx(single["losses"], rel=1e-4)
    assert_rank_zero_wrote(two, result)
    # The adapter is gathered from the shards: the same size as one process's, and it reloads.
    from loldu.run.finished import load_run

    _, _, model = load_run(two)
    assert sum(p.numel() for n, p in model.named_parameters() if "loldu_z" in n) == 4 * 8


@pytest.mark.slow
def test_ddp_in_a_multirun_runs_each_job_once_in_its_own_folder(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "train.py", "-m", "debug=fast", "logger=none", "callbacks=none", "model=tiny_vit"]
    cmd += ["task=digits", "trainer=ddp", "trainer.accelerator=cpu", "rank=4,8", f"hydra.sweep.dir={tmp_path}"]
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = {p.parent.name: json.loads(p.read_text())["rank"] for p in tmp_path.glob("*/metrics.json")}
    assert ranks == {"0": 4, "1": 8}
    assert result.stdout.count("outputs: ") == 2  # two jobs, each summarised once
    assert sorted(p.parent.name for p in tmp_path.glob("*/train_ddp_process_1.log")) == ["0", "1"]


def test_child_command_runs_this_job_once_in_this_folder(tmp_path):
    from loldu.run.distributed import child_command

    argv = ["train.py", "-m", "--config-dir", "/x/conf", "-cn=train", "rank=4,16", "output_dir=/old"]
    job = ["model=tiny_bert", "rank=16", "output_dir=/old"]  # a multirun job's overrides: its own rank
    cmd = child_command(argv, job, tmp_path)
    assert cmd == ["train.py", "--config-dir", "/x/conf", "-cn=train", "model=tiny_bert", "rank=16"] + [
        f"output_dir={tmp_path.resolve()}",
        "hydra.mode=RUN",
    ]


@pytest.mark.parametrize(
    "trainer,launches",
    [
        ({"devices": 1, "strategy": "auto"}, False),
        ({"devices": 2, "strategy": "ddp"}, True),
        ({"devices": [0, 1], "strategy": "ddp"}, True),
        ({"devices": 2, "strategy": "ddp_spawn"}, False),
        ({"devices": 1, "num_nodes": 2, "strategy": "ddp"}, True),
        ({"devices": 2, "strategy": {"_target_": "loldu.run.distributed.FSDPStrategy"}}, True),
    ],
)
def test_launches_processes(trainer, launches, monkeypatch):
    from loldu.run.distributed import launches_processes

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert launches_processes(trainer) is launches
    monkeypatch.setenv("LOCAL_RANK", "1")  # a child launches nothing
    assert launches_processes(trainer) is False


def test_causal_lm_val_loss_sums_tokens_over_ranks():
    from types import SimpleNamespace

    import torch

    from loldu.tasks.causal_lm import CausalLMModule, masked_lm_loss

    torch.manual_seed(0)
    logits = torch.randn(2, 6, 11)
    labels = torch.tensor([[-100, 1, 2, 3, 4, 5], [-100, -100, -100, -100, 6, 7]])  # 5 and 2 supervised tokens
    other_total, other_count = masked_lm_loss(logits[1:], labels[1:])  # what the other rank summed

    module = CausalLMModule(torch.nn.Identity(), lr=1e-3)
    module.forward = lambda batch: logits[:1]
    logged = {}
    module.log = lambda name, value, **kw: logged.__setitem__(name, float(value))
    module._trainer = SimpleNamespace(strategy=SimpleNamespace(reduce=lambda t, reduce_op: t))
    module.validation_step({"labels": labels[:1]}, 0)
    sums = module._sums["val"]
    # a two-rank all-reduce of the sums: this rank's plus the other rank's
    module._trainer.strategy.reduce = lambda t, reduce_op: t + (other_total if t is sums[0] else other_count)
    module._eval_end("val")
    total, count = masked_lm_loss(logits, labels)
    assert logged["val/tokens"] == 7
    assert logged["val/loss"] == pytest.approx((total / count).item(), rel=1e-6)  # not the mean of rank means


def test_prepare_launch_and_end_processes_leave_the_next_job_a_clean_process(tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from loldu.run.distributed import end_processes, prepare_launch

    for key in ("LOCAL_RANK", "MASTER_PORT", "WORLD_SIZE", "NODE_RANK"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MASTER_ADDR", "10.1.2.3")  # the user's: kept
    monkeypatch.setattr(sys, "argv", ["train.py", "-m", "trainer=ddp", "rank=4,16"])
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["trainer=ddp", "rank=16"], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        prepare_launch(cfg, tmp_path)
        assert sys.argv == ["train.py", "trainer=ddp", "rank=16", f"output_dir={tmp_path.resolve()}", "hydra.mode=RUN"]
        assert HydraConfig.get().run.dir == str(tmp_path.resolve())  # Lightning passes it as hydra.run.dir
    GlobalHydra.instance().clear()
    # what Lightning's launcher sets in the launching process
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="4567", NODE_RANK="0", LOCAL_RANK="0", WORLD_SIZE="2")
    end_processes()
    assert os.environ["MASTER_ADDR"] == "10.1.2.3"
    assert not {"MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE"} & set(os.environ)
