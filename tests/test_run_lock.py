"""One process per run folder, and ``resume=<run dir>`` alone continuing with the run's own settings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, TRAIN_ENV, train_py

from loldu.config.run_lock import HOLDER_FILE, RunFolderBusy, hold_run_folder, release_run_folder

HOLD = (
    "import sys, time; from loldu.config.run_lock import hold_run_folder; hold_run_folder(sys.argv[1]); "
    "print('held', flush=True); time.sleep(600)"
)


def _holder(folder: Path) -> subprocess.Popen:
    """A process holding ``folder``'s lock until killed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)], env=TRAIN_ENV, stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_process_is_refused_at_once_naming_the_holder(tmp_path):
    holder = _holder(tmp_path)
    try:
        start = time.monotonic()
        with pytest.raises(RunFolderBusy, match=rf"in use by pid {holder.pid} on .* since "):
            hold_run_folder(tmp_path)
        assert time.monotonic() - start < 1
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_of_a_killed_process_is_taken_over_with_a_note(tmp_path, caplog):
    holder = _holder(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert json.loads((tmp_path / HOLDER_FILE).read_text())["pid"] == holder.pid, "the dead holder's record stays"
    with caplog.at_level("WARNING"):
        assert hold_run_folder(tmp_path)
    assert f"took over the run folder from pid {holder.pid}" in caplog.text and "no longer running" in caplog.text
    assert hold_run_folder(tmp_path) is False, "held already: a no-op"
    release_run_folder(tmp_path)
    assert not (tmp_path / HOLDER_FILE).exists(), "a clean release leaves no record"


def _finished_run(tmp_path: Path, *overrides: str) -> Path:
    """A tiny run with a resumable checkpoint, made to look killed (no metrics.json, status running)."""
    folder = tmp_path / "run"
    proc = train_py("callbacks=default", "logger=csv", f"hydra.run.dir={folder}", *overrides, cwd=tmp_path)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    assert (folder / "checkpoints" / "last.ckpt").is_file()
    (folder / "metrics.json").unlink()
    status = json.loads((folder / "status.json").read_text())
    (folder / "status.json").write_text(json.dumps({**status, "status": "running"}))
    return folder


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> Path:
    return _finished_run(tmp_path_factory.mktemp("killed"), "lr=0.02", "seed=3")


def _train(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=cwd,
        env=TRAIN_ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_resume_of_a_folder_in_use_is_refused_before_anything_is_written(killed, tmp_path):
    before = {p: p.stat().st_mtime_ns for p in killed.rglob("*") if p.is_file() and p.name != HOLDER_FILE}
    holder = _holder(killed)
    try:
        start = time.monotonic()
        done = _train(f"resume={killed}", cwd=tmp_path)
        took = time.monotonic() - start
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.startswith(f"error: {killed} is in use by pid {holder.pid} on "), done.stderr
    assert "Traceback" not in done.stderr
    assert took < 5, "refused before torch or Hydra start"
    after = {p: p.stat().st_mtime_ns for p in killed.rglob("*") if p.is_file() and p.name != HOLDER_FILE}
    assert after == before, "nothing in the folder changed (not even Hydra's .hydra/)"


def test_resume_with_a_setting_that_changes_the_result_lists_the_differences(killed, tmp_path):
    done = _train(f"resume={killed}", "lr=0.5", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "differs from the saved one in lr (0.02 -> 0.5)" in done.stderr, done.stderr[-2000:]


def test_a_tampered_override_file_cannot_make_the_resumed_run_build_code(killed, tmp_path):
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(killed), str(copy)], check=True)
    marker = tmp_path / "marker"
    overrides = yaml.safe_load((copy / ".hydra" / "overrides.yaml").read_text())
    overrides += ["model.builder._target_=os.system", f"+model.builder.command='touch {marker}'"]
    (copy / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    done = _train(f"resume={copy}", cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "model.builder._target_ = 'os.system' is not allowed" in done.stderr
    assert not marker.exists()


def test_resume_alone_continues_with_the_runs_own_settings(killed, tmp_path):
    done = _train(f"resume={killed}", cwd=tmp_path)  # no model, task, lr or seed given
    assert done.returncode == 0, done.stderr[-3000:]
    config = yaml.safe_load((killed / "config.yaml").read_text())
    assert (config["lr"], config["seed"], config["model"]["builder"]["_target_"]) == (
        0.02,
        3,
        "loldu.models.tiny.tiny_text_classifier",
    )
    assert json.loads((killed / "status.json").read_text())["status"] == "finished"
    assert not (killed / HOLDER_FILE).exists(), "the lock's record goes with a clean exit"


def test_a_new_run_in_a_folder_in_use_is_refused(tmp_path):
    folder = tmp_path / "busy"
    holder = _holder(folder)
    try:
        proc = train_py(f"hydra.run.dir={folder}", cwd=tmp_path)
        _, err = proc.communicate(timeout=600)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 2 and f"is in use by pid {holder.pid}" in err, err[-2000:]
    assert not (folder / "status.json").exists() and not (folder / "config.yaml").exists()


@pytest.mark.skipif(sys.platform != "linux", reason="flock semantics checked on Linux")
def test_the_lock_is_per_folder(tmp_path):
    holder = _holder(tmp_path / "a")
    try:
        assert hold_run_folder(tmp_path / "b")
        release_run_folder(tmp_path / "b")
    finally:
        holder.kill()
        holder.wait()
    assert os.path.exists(tmp_path / "a" / ".run.lock")


def test_resume_auto_refuses_the_unfinished_run_another_process_is_resuming(tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    unfinished = tmp_path / "outputs" / "2026-01-01" / "x_tiny_bert_rotten_tomatoes_loldu"
    (unfinished / "checkpoints").mkdir(parents=True)
    (unfinished / "checkpoints" / "last.ckpt").write_bytes(b"ckpt")
    (unfinished / ".hydra").mkdir()
    choices = {"model": "tiny_bert", "task": "rotten_tomatoes", "method": "loldu"}
    (unfinished / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"runtime": {"choices": choices}}}))
    monkeypatch.chdir(tmp_path)
    holder = _holder(unfinished)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("train", overrides=["model=tiny_bert", "resume=auto"], return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)
            with pytest.raises(Exception, match=rf"is in use by pid {holder.pid}"):
                str(cfg.hydra.run.dir)
    finally:
        GlobalHydra.instance().clear()
        holder.kill()
        holder.wait()
