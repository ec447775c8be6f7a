"""Each run's metrics.json records what a comparison of runs needs: the adapter's size on disk, the package
versions, the git commit of the code that ran, the device and the spread of the step time (issue 22); the W&B run
summary carries the same values under the keys a dashboard names."""

from __future__ import annotations

import importlib.metadata
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import ROOT, run_composed, strict_json

from loldu.run import provenance
from loldu.run.callbacks import PerfLogger, peak_memory_mib
from loldu.run.provenance import (
    adapter_sizes,
    cpu_name,
    device_record,
    git_record,
    package_version,
    source_git,
    versions,
)
from loldu.run.tracking import summary_values

VERSION_KEYS = {"python", "torch", "transformers", "peft", "lightning", "loldu", "cuda"}
PERF_KEYS = {"step_time_s", "step_time_iqr_s", "step_time_p10_s", "step_time_p90_s", "steps", "peak_mem_mib"}
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]


def _git(folder: Path, *args: str) -> str:
    return subprocess.run([*GIT, "-C", str(folder), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A git repository with one committed file, ``tracked.txt``; no repository above it is searched."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    folder = tmp_path / "repo"
    folder.mkdir()
    _git(folder, "init", "-q")
    (folder / "tracked.txt").write_text("one\n")
    _git(folder, "add", "tracked.txt")
    _git(folder, "commit", "-q", "-m", "first")
    return folder


# -- git ------------------------------------------------------------------------------------------------------------
def test_the_commit_of_this_checkout():
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("the tests do not run from a git checkout")
    status = _git(ROOT, "status", "--porcelain", "--untracked-files=no")
    expected = {"commit": head.stdout.strip(), "dirty": bool(status.strip())}
    assert git_record(ROOT, tracked="loldu/__init__.py") == expected
    assert provenance.source_root() == ROOT.resolve()
    assert source_git() == expected and source_git() is source_git()  # asked once per process


def test_a_modified_tracked_file_makes_the_tree_dirty(repo):
    head = _git(repo, "rev-parse", "HEAD").strip()
    assert git_record(repo) == {"commit": head, "dirty": False}
    (repo / "untracked.txt").write_text("new\n")  # untracked files do not count
    assert git_record(repo) == {"commit": head, "dirty": False}
    (repo / "tracked.txt").write_text("two\n")
    assert git_record(repo) == {"commit": head, "dirty": True}


def test_no_checkout_no_git_or_a_slow_git_give_nulls(repo, tmp_path, monkeypatch):
    plain = tmp_path / "plain"
    plain.mkdir()
    nothing = {"commit": None, "dirty": None}
    assert git_record(plain) == nothing  # not a repository
    assert git_record(tmp_path / "missing") == nothing
    assert git_record(repo, tracked="loldu/__init__.py") == nothing  # a checkout, but not of this code
    assert git_record(repo, tracked="tracked.txt")["commit"] is not None

    slow = tmp_path / "bin"
    slow.mkdir()
    (slow / "git").write_text("#!/bin/sh\nexec sleep 10\n")
    (slow / "git").chmod(0o755)
    monkeypatch.setenv("PATH", str(slow))
    monkeypatch.setattr(provenance, "GIT_TIMEOUT_S", 0.2)
    assert git_record(repo) == nothing  # timed out
    monkeypatch.setenv("PATH", str(plain))  # no git at all
    assert git_record(repo) == nothing


# -- versions, device, adapter size ---------------------------------------------------------------------------------
def test_versions():
    record = versions()
    assert set(record) == VERSION_KEYS
    assert record["python"] == ".".join(map(str, sys.version_info[:3]))
    assert record["torch"] == torch.__version__ and record["cuda"] == torch.version.cuda
    assert record["loldu"] == importlib.metadata.version("loldu")
    assert all(isinstance(record[name], str) for name in VERSION_KEYS - {"cuda"})
    assert package_version("no-such-distribution-here") is None


def test_device_record_of_the_trainer_that_ran():
    trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cpu")), num_devices=2)
    assert device_record(trainer) == {"accelerator": "cpu", "name": cpu_name(), "count": 2}
    assert isinstance(cpu_name(), str) and cpu_name()
    if Path("/proc/cpuinfo").is_file() and "model name" in Path("/proc/cpuinfo").read_text():
        assert cpu_name() != "cpu"


def test_adapter_sizes(tmp_path):
    assert adapter_sizes(tmp_path / "adapter") == {"adapter_bytes": None, "adapter_dir_bytes": None}
    folder = tmp_path / "adapter"
    (folder / "sub").mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(b"x" * 100)
    (folder / "sub" / "extra.bin").write_bytes(b"x" * 20)
    (folder / "old.pt").write_bytes(b"x" * 3)
    (folder / "method.json").write_bytes(b"x" * 7)
    (folder / "README.md").write_bytes(b"x" * 5)
    assert adapter_sizes(folder) == {"adapter_bytes": 123, "adapter_dir_bytes": 135}


# -- step time and memory -------------------------------------------------------------------------------------------
def test_step_time_quantiles_leave_out_the_warm_up():
    perf = PerfLogger(skip=2)
    perf.step_times = [9.0, 9.0, 1.0, 2.0, 3.0, 4.0, 5.0]  # two warm-up steps, then 1..5
    perf.peak_mem_mib, perf.peak_mem_kind = 10.0, "cpu_max_rss"
    summary = perf.summary()
    assert summary["step_time_s"] == 3.0 and summary["steps"] == 5
    assert summary["step_time_iqr_s"] == pytest.approx(2.0)  # p75 4 - p25 2
    assert summary["step_time_p10_s"] == pytest.approx(1.4)
    assert summary["step_time_p90_s"] == pytest.approx(4.6)
    assert summary["peak_mem_mib"] == 10.0 and summary["peak_mem_kind"] == "cpu_max_rss"


def test_step_time_of_one_or_no_step():
    perf = PerfLogger(skip=3)
    assert perf.summary() == {}
    perf.step_times = [0.5]  # fewer than skip: all of them
    summary = perf.summary()
    assert summary["steps"] == 1 and summary["step_time_iqr_s"] == 0.0
    assert summary["step_time_s"] == summary["step_time_p10_s"] == summary["step_time_p90_s"] == 0.5
    perf.step_times = [0.5, 1.5]
    summary = perf.summary()
    assert summary["step_time_s"] == 1.0 and summary["step_time_iqr_s"] == pytest.approx(0.5)


def test_peak_memory_on_the_cpu_is_the_process_rss():
    peak, kind = peak_memory_mib(torch.device("cpu"))
    assert kind == "cpu_max_rss" and peak > 10  # the interpreter with torch loaded: tens of MiB at least


# -- the W&B summary ------------------------------------------------------------------------------------------------
def test_summary_values_carry_the_run_record():
    metrics = {
        "params": {"trainable": 10},
        "test": {"test/acc": 0.5},
        "wall_time_s": 2.0,
        "adapter_bytes": 1234,
        "adapter_dir_bytes": 2000,
        "perf": {
            "step_time_s": 0.1,
            "step_time_iqr_s": float("nan"),
            "step_time_p10_s": 0.05,
            "step_time_p90_s": 0.2,
            "steps": 3,
            "peak_mem_mib": 50.0,
            "peak_mem_kind": "cpu_max_rss",
        },
        "git": {"commit": "a" * 40, "dirty": True},
        "device": {"accelerator": "cpu", "name": "Some CPU", "count": 1},
        "versions": {"python": "3.11.7", "torch": "2.5.0", "cuda": None},
    }
    values = summary_values(metrics)
    assert values == {
        "params/trainable": 10,
        "test/acc": 0.5,
        "wall_time_s": 2.0,
        "adapter_bytes": 1234,
        "perf/step_time_s": 0.1,
        "perf/step_time_iqr_s": None,  # non-finite
        "perf/peak_mem_mib": 50.0,
        "perf/peak_mem_kind": "cpu_max_rss",
        "git/commit": "a" * 40,
        "git/dirty": True,
        "device/name": "Some CPU",
        "device/accelerator": "cpu",
        "versions/python": "3.11.7",
        "versions/torch": "2.5.0",
        "versions/cuda": None,
    }
    old = summary_values({"params": {}, "val": {"val/acc": 0.4}})  # a run from before: the keys, empty
    assert old["perf/step_time_s"] is None and old["git/commit"] is None and old["adapter_bytes"] is None


# -- one real run ---------------------------------------------------------------------------------------------------
def test_a_run_records_adapter_size_versions_git_device_and_step_spread(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _, metrics = run_composed(tmp_path, "model=tiny_bert", "method=lora", "logger=none", "callbacks=none")
    finally:
        torch.set_num_threads(threads)
    assert metrics == strict_json(tmp_path / "metrics.json")

    adapter = tmp_path / "adapter"
    files = [p for p in adapter.rglob("*") if p.is_file()]
    weights = [p for p in files if p.suffix in (".safetensors", ".bin", ".pt")]
    assert weights, "the adapter's weights"
    assert metrics["adapter_bytes"] == sum(p.stat().st_size for p in weights) > 0
    assert metrics["adapter_dir_bytes"] == sum(p.stat().st_size for p in files) > metrics["adapter_bytes"]

    assert set(metrics["versions"]) == VERSION_KEYS
    assert metrics["versions"]["torch"] == torch.__version__
    assert metrics["versions"]["loldu"] == importlib.metadata.version("loldu")
    assert metrics["git"] == source_git()
    assert set(metrics["git"]) == {"commit", "dirty"}
    if metrics["git"]["commit"] is not None:
        assert len(metrics["git"]["commit"]) == 40 and isinstance(metrics["git"]["dirty"], bool)
    assert metrics["device"] == {"accelerator": "cpu", "name": cpu_name(), "count": 1}

    perf = metrics["perf"]
    assert PERF_KEYS | {"peak_mem_kind"} == set(perf)
    assert perf["peak_mem_kind"] == "cpu_max_rss" and perf["peak_mem_mib"] > 0
    assert isinstance(perf["steps"], int) and perf["steps"] >= 1
    assert all(isinstance(perf[key], float) and math.isfinite(perf[key]) for key in PERF_KEYS - {"steps"})
    assert perf["step_time_p10_s"] <= perf["step_time_s"] <= perf["step_time_p90_s"]
    assert 0 <= perf["step_time_iqr_s"] <= perf["step_time_p90_s"] - perf["step_time_p10_s"]

    values = summary_values(metrics)
    assert values["adapter_bytes"] == metrics["adapter_bytes"] and values["device/accelerator"] == "cpu"
    assert values["versions/torch"] == torch.__version__ and values["perf/peak_mem_kind"] == "cpu_max_rss"
    assert (adapter / "README.md").is_file()  # the run's card, counted in adapter_dir_bytes
