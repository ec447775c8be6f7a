"""Run folders are written atomically, say their status, and are never shared by two runs."""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from pathlib import Path

import pytest
from helpers import ROOT, run_composed, strict_json, train_py
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

from loldu.run.folder import atomic_dir, claim_run_dir, tracked_run, write_json

pytestmark = pytest.mark.usefixtures("one_thread")


# -- atomic files and folders ----------------------------------------------------------------------------------
def test_metrics_are_strict_json_with_null_for_non_finite_values(tmp_path):
    path = write_json(tmp_path / "metrics.json", {"val": {"val/pearson": float("nan"), "x": [float("inf"), 1.5]}})
    assert strict_json(path) == {"val": {"val/pearson": None, "x": [None, 1.5]}}


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = write_json(tmp_path / "metrics.json", {"a": 1})
    with pytest.raises(TypeError):
        write_json(path, {"b": object()})
    assert strict_json(path) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_adapter_folder_appears_complete_or_not_at_all(tmp_path):
    target = tmp_path / "adapter"
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "part.safetensors").write_text("half")
        raise RuntimeError("crash while saving")
    assert list(tmp_path.iterdir()) == []
    for text in ("first", "second"):  # a second save replaces the first whole
        with atomic_dir(target) as tmp:
            assert tmp != target and tmp.name.startswith(f"adapter.tmp-{os.getpid()}-")
            (tmp / "method.json").write_text(text)
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"] and (target / "method.json").read_text() == "second"
    with atomic_dir(tmp_path / "merged"):
        pass  # nothing saved (a model without save_pretrained): no empty folder that looks like a merged model
    assert not (tmp_path / "merged").exists() and len(list(tmp_path.iterdir())) == 1


def test_folders_saved_at_once_end_as_one_complete_folder(tmp_path):
    barrier = threading.Barrier(4)

    def save(i: int):
        with atomic_dir(tmp_path / "adapter") as tmp:
            (tmp / "a.txt").write_text(str(i))
            barrier.wait()
            (tmp / "b.txt").write_text(str(i))

    _in_threads(save, 4)
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]
    files = {p.name: p.read_text() for p in (tmp_path / "adapter").iterdir()}
    assert set(files) == {"a.txt", "b.txt"} and files["a.txt"] == files["b.txt"]  # one save's, whole


def _in_threads(fn, n: int) -> None:
    threads = [threading.Thread(target=fn, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# -- status and refused runs -------------------------------------------------------------------------------------
def test_status_says_running_then_finished_or_failed_with_the_error(tmp_path):
    cfg = type("Cfg", (), {})()
    seen = {}

    @tracked_run
    def work(cfg, fail: bool):
        seen["during"] = strict_json(Path(cfg.output_dir) / "status.json")
        if fail:
            raise ValueError("rank=9 does not fit\nsecond line")
        return 0.5

    cfg.output_dir = str(tmp_path / "ok")
    assert work(cfg, False) == 0.5
    assert seen["during"]["status"] == "running" and seen["during"]["ended_at"] is None
    done = strict_json(tmp_path / "ok" / "status.json")
    assert done["status"] == "finished" and done["error"] is None and done["pid"] == os.getpid()
    assert done["started_at"] == seen["during"]["started_at"] and done["ended_at"] and done["host"]
    cfg.output_dir = str(tmp_path / "bad")
    with pytest.raises(ValueError, match="second line"):
        work(cfg, True)
    failed = strict_json(tmp_path / "bad" / "status.json")
    assert failed["status"] == "failed" and failed["error"] == "ValueError: rank=9 does not fit"


def test_refused_run_leaves_no_config_and_is_marked_failed(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        run_composed(tmp_path, "model=tiny_bert", "task=text_csv", "task.data.source_args.train=nope.csv")
    assert not (tmp_path / "config.yaml").exists(), "a refused run must not look like a real run"
    status = strict_json(tmp_path / "status.json")
    assert status["status"] == "failed" and "FileNotFoundError" in status["error"] and "nope.csv" in status["error"]


@pytest.mark.parametrize("existing", ["status.json", "config.yaml", "metrics.json"])
def test_a_folder_that_holds_a_run_is_refused_untouched(tmp_path, existing):
    text = '{"status": "running", "pid": 1, "host": "h"}'
    (tmp_path / existing).write_text(text)
    cfg = type("Cfg", (), {"output_dir": str(tmp_path)})()
    with pytest.raises(FileExistsError, match=f"{tmp_path} already holds a run.*hydra.run.dir"):
        tracked_run(lambda cfg: pytest.fail("ran in a folder that holds a run"))(cfg)
    assert [p.name for p in tmp_path.iterdir()] == [existing] and (tmp_path / existing).read_text() == text
    if existing == "metrics.json":  # an older run's result: finished, never marked running again
        with pytest.raises(ValueError, match="that run finished; nothing to resume"):
            claim_run_dir(tmp_path, reuse=True)
    else:
        assert claim_run_dir(tmp_path, reuse=True)["status"] == "running"  # resuming takes it on purpose


def test_a_folder_of_a_refused_run_can_be_used_again_and_a_finished_one_not_resumed(tmp_path):
    (tmp_path / "status.json").write_text('{"status": "failed", "error": "ValueError: bad column"}')
    assert claim_run_dir(tmp_path)["status"] == "running"  # refused before it wrote anything: nothing to keep
    (tmp_path / "status.json").write_text('{"status": "finished"}')
    with pytest.raises(ValueError, match="that run finished"):
        claim_run_dir(tmp_path, reuse=True)
    assert json.loads((tmp_path / "status.json").read_text())["status"] == "finished"


def test_of_runs_claiming_one_folder_at_once_exactly_one_gets_it(tmp_path):
    barrier, outcomes = threading.Barrier(8), []

    def claim(i: int):
        barrier.wait()
        try:
            outcomes.append(claim_run_dir(tmp_path)["status"])
        except FileExistsError:
            outcomes.append("refused")

    _in_threads(claim, 8)
    assert sorted(outcomes) == ["refused"] * 7 + ["running"]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [".run.lock", ".run.lock.json", "status.json"]  # the winner's lock; no temporary files left


# -- unique folders --------------------------------------------------------------------------------------------
def _run_and_sweep_dirs() -> tuple[str, str]:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["model=tiny_bert"], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        dirs = str(cfg.hydra.run.dir), str(cfg.hydra.sweep.dir)
        assert (str(cfg.hydra.run.dir), str(cfg.hydra.sweep.dir)) == dirs  # resolved once per config
    GlobalHydra.instance().clear()
    return dirs


def test_runs_started_in_the_same_second_get_their_own_folders(monkeypatch):
    import hydra.core.utils

    class Frozen(dt.datetime):  # Hydra's ${now:...} answers the same second every time
        @classmethod
        def now(cls, tz=None):
            return cls(2026, 11, 25, 3, 0, 0)

    monkeypatch.setattr(hydra.core.utils, "datetime", Frozen)
    (run1, sweep1), (run2, sweep2) = _run_and_sweep_dirs(), _run_and_sweep_dirs()
    assert run1 != run2 and sweep1 != sweep2
    assert run1.startswith("outputs/") and run1.endswith("_tiny_bert_rotten_tomatoes_loldu")
    assert str(os.getpid()) in run1 and sweep1.startswith("multirun/")


@pytest.mark.slow  # two train.py processes; test_of_runs_claiming_one_folder_at_once... is the fast check
def test_two_runs_on_one_folder_at_once_one_runs_one_is_refused(tmp_path):
    run = tmp_path / "run"
    procs = [train_py("logger=csv", f"hydra.run.dir={run}", cwd=tmp_path) for _ in range(2)]
    results = [(p.pid, p.returncode, p.communicate(timeout=600)[1]) for p in procs]
    results = [(pid, p.returncode, err) for (pid, _, err), p in zip(results, procs, strict=True)]
    ok = [r for r in results if r[1] == 0]
    refused = [r for r in results if r[1] != 0]
    assert len(ok) == 1 and len(refused) == 1, [err[-2000:] for _, _, err in results]
    assert f"{run} already holds a run" in refused[0][2], refused[0][2][-2000:]
    status = strict_json(run / "status.json")
    assert status["status"] == "finished" and status["pid"] == ok[0][0]
    assert strict_json(run / "metrics.json")["test"]["test/acc"] >= 0


def test_two_runs_started_at_once_both_finish_in_their_own_folders(tmp_path):
    procs = [train_py("logger=csv", cwd=tmp_path) for _ in range(2)]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for e in errors]
    folders = sorted(tmp_path.glob("outputs/*/*"))
    assert len(folders) == 2, folders
    for folder in folders:
        assert strict_json(folder / "status.json")["status"] == "finished"
        assert (folder / "csv" / "metrics.csv").is_file() and (folder / "adapter" / "method.json").is_file()
