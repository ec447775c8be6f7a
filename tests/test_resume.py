"""Resuming a killed run (``resume=<run dir>``) ends as if it had never stopped; bad resumes are refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from loldu.config.run_dir import CHECKPOINT, find_unfinished
from loldu.run import train
from loldu.run.checkpointing import AtomicCheckpoint, ResumableCheckpoint, check_checkpoint_keys
from loldu.run.resume import config_differences

ROOT = Path(__file__).resolve().parents[1]
# Two epochs of 5 batches, a resumable checkpoint every 2 steps: kills fall mid-epoch and across epochs.
RUN = (
    "model=tiny_bert",
    "task=rotten_tomatoes",
    "debug=fast",
    "epochs=2",
    "trainer.limit_train_batches=5",
    "batch_size=8",
    "callbacks.resumable.every_n_train_steps=2",
    "logger=csv",
    "+trainer.enable_progress_bar=false",
    "callbacks.progress_bar=null",
    "callbacks.lr_monitor=null",
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _train(out: Path, *overrides: str) -> dict:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("train", overrides=[*RUN, f"output_dir={out}", *overrides], return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)
            with open_dict(cfg):
                del cfg["hydra"]
            train(cfg)
    finally:
        GlobalHydra.instance().clear()
    return json.loads((out / "metrics.json").read_text())


def _results(metrics: dict) -> dict:
    return {"test": metrics["test"], "val": metrics["val"]}


class _Killed(Exception):
    pass


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The metrics of the run never killed."""
    return _results(_train(tmp_path_factory.mktemp("reference")))


def _kill_after(monkeypatch, step: int) -> None:
    """Make the run die right after optimizer step ``step`` (its checkpoints up to then are written)."""
    original = ResumableCheckpoint.on_train_batch_end

    def dying(self, trainer, *args):
        original(self, trainer, *args)
        if trainer.global_step >= step:
            raise _Killed(f"killed after step {step}")

    monkeypatch.setattr(ResumableCheckpoint, "on_train_batch_end", dying)


@pytest.mark.parametrize("step", [3, 7])  # mid first epoch (checkpoint at 2), mid second (checkpoint at 6)
def test_killed_run_resumes_to_the_same_metrics(tmp_path, monkeypatch, reference, step):
    with monkeypatch.context() as patch:
        _kill_after(patch, step)
        with pytest.raises(_Killed):
            _train(tmp_path)
    assert (tmp_path / CHECKPOINT).is_file() and not (tmp_path / "metrics.json").exists()
    saved = torch.load(tmp_path / CHECKPOINT, weights_only=False, map_location="cpu")
    assert saved["global_step"] == step - 1
    assert saved["optimizer_states"] and saved["lr_schedulers"], "optimizer and scheduler state kept"
    assert not any("word_embeddings" in k for k in saved["state_dict"]), "the frozen base is not in it"
    logged_before_kill = (tmp_path / "csv" / "metrics.csv").read_text()
    assert _results(_train(tmp_path, f"resume={tmp_path}")) == reference
    assert (tmp_path / "csv" / "metrics.before_resume_1.csv").read_text() == logged_before_kill, "history kept"
    assert "test/acc" in (tmp_path / "csv" / "metrics.csv").read_text()


# AdaLoRA over the same 10 steps: reallocation from step 2 to 7, then its final ranks. A kill at step 5 falls in
# the budgeting phase (the importance averages must come back), one at 9 in the final phase (the rank pattern).
ADALORA = ("method=adalora", "method.options.tinit=1", "method.options.tfinal=2", "method.options.deltaT=1")


@pytest.fixture(scope="module")
def adalora_reference(tmp_path_factory) -> dict:
    return _results(_train(tmp_path_factory.mktemp("adalora"), *ADALORA))


@pytest.mark.parametrize("step", [5, 9])
def test_killed_adalora_run_resumes_with_its_rank_allocator(tmp_path, monkeypatch, adalora_reference, step):
    with monkeypatch.context() as patch:
        _kill_after(patch, step)
        with pytest.raises(_Killed):
            _train(tmp_path, *ADALORA)
    saved = torch.load(tmp_path / CHECKPOINT, weights_only=True, map_location="cpu")
    assert saved["method_state"]["exp_avg_ipt"] and saved["method_state"]["rank_pattern"], "allocator state kept"
    assert _results(_train(tmp_path, f"resume={tmp_path}", *ADALORA)) == adalora_reference


def test_epoch_end_checkpoint_resumes_to_the_same_metrics(tmp_path, monkeypatch, reference):
    with monkeypatch.context() as patch:
        _kill_after(patch, 6)  # the step-6 checkpoint would be kept: never save by steps here
        with pytest.raises(_Killed):
            _train(tmp_path, "callbacks.resumable.every_n_train_steps=0")
    assert torch.load(tmp_path / CHECKPOINT, weights_only=False)["global_step"] == 5  # the first epoch's end
    resumed = _train(tmp_path, f"resume={tmp_path}", "callbacks.resumable.every_n_train_steps=0")
    assert _results(resumed) == reference


@pytest.mark.parametrize(
    "overrides,match",
    [
        (("lr=0.5",), r"differs from the saved one in lr \(0\.0\d+ -> 0\.5\)"),
        (("seed=1", "rank=8"), r"method\.r .*seed"),
        (("+ckpt_path=x",), r"resume=<run dir>"),
    ],
)
def test_resume_with_other_settings_is_refused(tmp_path, monkeypatch, overrides, match):
    with monkeypatch.context() as patch:
        _kill_after(patch, 3)
        with pytest.raises(_Killed):
            _train(tmp_path)
    with pytest.raises(ValueError, match=match):
        _train(tmp_path, f"resume={tmp_path}", *overrides)


def test_resume_without_checkpoint_or_of_a_finished_run_is_refused(tmp_path, reference):
    _train(tmp_path, "callbacks.resumable=null", "epochs=1")
    (tmp_path / "metrics.json").unlink()  # as if killed: not finished
    (tmp_path / "status.json").unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError, match="has no resumable checkpoint"):
        _train(tmp_path, f"resume={tmp_path}", "callbacks.resumable=null", "epochs=1")
    finished = tmp_path / "finished"
    _train(finished, "epochs=1")
    with pytest.raises(ValueError, match="that run finished"):
        _train(finished, f"resume={finished}", "epochs=1")


def test_a_missing_trainable_entry_is_an_error_and_the_frozen_base_is_not():
    from helpers import build

    from loldu.methods import apply_method
    from loldu.tasks import FineTuneModule

    model, targets, heads, _ = build("bert")
    module = FineTuneModule(lr=1e-3)
    module.model = apply_method(model, {"name": "lora", "r": 2, "target_modules": targets, "head_modules": heads})
    trainable = {k: v for k, v in module.state_dict().items() if "lora_" in k or "classifier" in k}
    check_checkpoint_keys(module, trainable)  # the frozen base absent: fine
    with pytest.raises(ValueError, match="trainable entries missing"):
        check_checkpoint_keys(module, {k: v for k, v in trainable.items() if "lora_A" not in k})
    with pytest.raises(ValueError, match="this model does not have"):
        check_checkpoint_keys(module, {**trainable, "model.other.weight": torch.zeros(1)})


def test_a_kill_during_a_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    class _Trainer:
        is_global_zero = True
        global_step = 0
        loggers = []

        def save_checkpoint(self, path, weights_only=False):
            Path(path).write_bytes(b"half a checkpo")
            raise _Killed("killed while writing")

    target = tmp_path / "last.ckpt"
    target.write_bytes(b"the previous checkpoint")
    with pytest.raises(_Killed):
        AtomicCheckpoint(dirpath=tmp_path)._save_checkpoint(_Trainer(), str(target))
    assert target.read_bytes() == b"the previous checkpoint"


def test_config_differences_ignore_what_does_not_change_results():
    saved = {"lr": 0.1, "logger": {"csv": {}}, "resume": None, "trainer": {"log_every_n_steps": 10, "max_epochs": 2}}
    now = {"lr": 0.1, "logger": {}, "resume": "x", "trainer": {"log_every_n_steps": 1, "max_epochs": 3}}
    assert config_differences(saved, now) == ["trainer.max_epochs (2 -> 3)"]


def _run_folder(root: Path, name: str, model: str, status: str | None, ckpt: bool = True) -> Path:
    run = root / "2026-01-01" / name
    (run / ".hydra").mkdir(parents=True)
    choices = {"model": model, "task": "rotten_tomatoes", "method": "loldu"}
    OmegaConf.save({"hydra": {"runtime": {"choices": choices}}}, run / ".hydra" / "hydra.yaml")
    if ckpt:
        (run / CHECKPOINT).parent.mkdir()
        (run / CHECKPOINT).write_bytes(b"x")
    if status:
        (run / "status.json").write_text(json.dumps({"status": status}))
    return run


def test_resume_auto_finds_the_newest_unfinished_run_of_the_same_choices(tmp_path):
    old = _run_folder(tmp_path, "a", "tiny_bert", "running")
    newer = _run_folder(tmp_path, "b", "tiny_bert", "failed")
    _run_folder(tmp_path, "c", "tiny_bert", "finished")
    _run_folder(tmp_path, "d", "minilm", "running")
    _run_folder(tmp_path, "e", "tiny_bert", None, ckpt=False)
    os.utime(old / CHECKPOINT, (1, 1))
    assert find_unfinished(tmp_path, "tiny_bert", "rotten_tomatoes", "loldu") == newer
    assert find_unfinished(tmp_path, "tiny_bert", "rotten_tomatoes", "lora") is None


@pytest.mark.slow
def test_sigkilled_process_resumed_with_the_switch_ends_like_a_run_never_killed(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, str(ROOT / "train.py"), *RUN, "epochs=3", "trainer.limit_train_batches=8"]

    def run(folder: Path, *extra: str) -> subprocess.Popen:
        return subprocess.Popen([*command, f"hydra.run.dir={folder}", *extra], cwd=tmp_path, env=env)

    assert run(tmp_path / "reference").wait(timeout=300) == 0
    killed = run(tmp_path / "killed")
    deadline = time.monotonic() + 300
    while not (tmp_path / "killed" / CHECKPOINT).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "killed" / "metrics.json").exists(), "killed before it finished"
    resumed = subprocess.run([*command, f"resume={tmp_path / 'killed'}"], cwd=tmp_path, env=env, timeout=300)
    assert resumed.returncode == 0
    read = [json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("reference", "killed")]
    assert _results(read[1]) == _results(read[0])


def _hydra_run_dir(*overrides: str) -> str:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("train", overrides=["model=tiny_bert", *overrides], return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)
            return str(cfg.hydra.run.dir)
    finally:
        GlobalHydra.instance().clear()


def test_the_switch_picks_the_run_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _hydra_run_dir().startswith("outputs/") and _hydra_run_dir().endswith("_tiny_bert_rotten_tomatoes_loldu")
    assert _hydra_run_dir("resume=auto").startswith("outputs/"), "nothing to resume: a new run"
    unfinished = _run_folder(tmp_path / "outputs", "x", "tiny_bert", "running")
    assert Path(_hydra_run_dir("resume=auto")).resolve() == unfinished.resolve()
    assert _hydra_run_dir(f"resume={unfinished}") == str(unfinished)
    with pytest.raises(Exception, match="no such run folder"):
        _hydra_run_dir("resume=outputs/nope")
