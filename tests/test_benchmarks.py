"""The benchmark's smallest configuration runs end to end, so it cannot rot (its numbers are not checked)."""

from __future__ import annotations

import io
import json

import pytest
import torch

from benchmarks import run
from benchmarks.rounds import run_rounds


def test_quick_benchmark_runs_every_part(tmp_path, capsys):
    out = tmp_path / "report.md"
    report = run.main(["--quick", "--in-process", "--rows", "r8 auto", "--out", str(out)])
    text = out.read_text()
    assert report and text.startswith("## Setup")
    for needle in ("| 64x64 | 64 |", "| lora | 8 |", "| loldu | 8 | auto |", "LoLDU auto r8 <= 1.03x", "llama lora r8"):
        assert needle in text, needle
    # Every bar has a verdict, and the progress lines went to stderr.
    assert all(("PASS" in ln or "FAIL" in ln or "n/a" in ln) for ln in text.splitlines() if ln.startswith("| LoLDU"))
    assert "[round 1/1]" in capsys.readouterr().err


def test_rounds_interleave_and_take_per_round_ratios():
    calls = []
    times = {("ref", 0): 1.0, ("a", 0): 2.0, ("ref", 1): 3.0, ("a", 1): 3.0}

    def measure(name, k):
        calls.append(name)
        return {"time": times[name, k]}

    log = io.StringIO()
    series = run_rounds(["a", "ref"], "ref", 2, measure, log=log)
    assert calls == ["ref", "a", "ref", "a"], "rows alternate, the reference first in each round"
    # Per-round ratios 2.0 and 1.0: their median, not the ratio of medians (2.5 / 2.0).
    assert series["a"].ratios["time"] == [2.0, 1.0] and series["a"].ratio() == 1.5
    assert series["a"].spread() == "1.00-2.00"


def test_rounds_print_each_row_as_its_measurement_finishes():
    lines = []

    class Log(io.StringIO):
        def write(self, text):
            lines.append((text, list(calls)))  # what had been measured when the line was written
            return len(text)

    calls = []
    times = {"ref": {"time": 0.5}, "a": {"time": 1.0}, "b": {"error": "out of memory"}}

    def measure(name, k):
        calls.append(name)
        return times[name]

    run_rounds(["a", "b", "ref"], "ref", 1, measure, log=Log())
    rows = [(text, seen) for text, seen in lines if text.strip()]
    assert rows[0] == ("[round 1/1] ref: 0.5000s", ["ref"])  # printed before the next row is measured
    assert rows[1] == ("[round 1/1] a: 1.0000s (2.00x ref)", ["ref", "a"])
    assert rows[2] == ("[round 1/1] b: error: out of memory", ["ref", "a", "b"])
    assert rows[3][0].startswith("[round 1/1] ref 0.5000s | a 2.00x")


def test_gpu_benchmark_runs_every_part_at_quick_sizes_on_cpu(tmp_path):
    """make test-gpu's benchmark on CPU at tiny sizes: the same commands, workers and report a GPU run takes."""
    from benchmarks import gpu

    assert gpu.main(["--quick", "--device", "cpu", "--out-dir", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu.json").read_text())
    assert report["passed"] and report["size"] == "quick" and report["versions"]["torch"]
    assert [rec["row"] for rec in report["families"]] == list(gpu.FAMILIES)
    for rec in report["families"]:
        assert rec["passed"] and rec["precision"] == "bf16-mixed", rec  # CPU autocast: the bf16 backward ran
        assert len(rec["train_losses"]) == 2 and rec["adapter"] > 0 and rec["step_time_s"] > 0
    rows = {rec["row"]: rec for rec in report["memory"]["rows"]}
    assert rows["lora r8"]["adapter"] == 2 * 2 * 8 * (128 + 128)  # 2 layers x (q, v) x r (in + out)
    assert rows["loldu r1024"]["adapter"] == 2 * 2 * 128  # r capped at the quick width: z only
    assert rows["lora r8"]["peak_ratio"] == 1.0 and report["memory"]["verdict"] == "PASS"
    assert [rec["path"] for rec in report["paths"]] == list(gpu.PATHS) and all(r["passed"] for r in report["paths"])
    text = (tmp_path / "gpu.md").read_text()
    for needle in ("## Families", "| lora r8 | 8,192 |", "| fused |", "Bar: LoLDU r=1024's peak <= 1.10x"):
        assert needle in text, needle


def test_gpu_benchmark_fails_a_missed_bar_and_refuses_cuda_without_a_gpu(tmp_path, monkeypatch, capsys):
    from benchmarks import gpu

    monkeypatch.setattr(gpu, "MEMORY_BAR", 0.5)  # LoLDU's peak cannot be half of LoRA's: the bar must fail
    assert gpu.main(["--quick", "--device", "cpu", "--only", "memory", "--out-dir", str(tmp_path)]) == 1
    report = json.loads((tmp_path / "gpu.json").read_text())
    assert report["memory"]["verdict"] == "FAIL" and not report["passed"]
    if not torch.cuda.is_available():
        assert gpu.main(["--out-dir", str(tmp_path / "cuda")]) == 2
        assert "no CUDA device" in capsys.readouterr().err and not (tmp_path / "cuda").exists()
    assert gpu.main(["--device", "cpu", "--only", "nonsense", "--out-dir", str(tmp_path)]) == 2


def test_gpu_benchmark_real_size_commands_compose_and_pass_the_run_checks(tmp_path):
    """The real-size rows are not run on CPU, so their command lines are composed and checked here instead."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from benchmarks import gpu
    from loldu.run.skeleton import check_run

    data = gpu.write_local_data(tmp_path / "data")
    for row in gpu.FAMILIES:
        cmd = gpu.family_command(row, data, tmp_path / "run", "cuda", quick=False)
        assert cmd[1] == "train.py" and "trainer.accelerator=gpu" in cmd and "trainer.precision=bf16-mixed" in cmd
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(gpu.ROOT / "conf"), version_base="1.3"):
            cfg = compose("train", overrides=cmd[2:])
        check_run(cfg)
        assert cfg.model.pretrained is False and cfg.method.name == "loldu"
    GlobalHydra.instance().clear()
    real = gpu.llama_config(quick=False)
    assert (real.hidden_size, real.intermediate_size, real.num_hidden_layers) == (4096, 11008, 32)


def test_a_real_width_llama_slice_builds_only_its_layers_and_a_checkpoint_refuses_it():
    from loldu.models.causal_lm import hf_causal_lm

    with torch.device("meta"):
        bundle = hf_causal_lm("meta-llama/Llama-2-7b-hf", pretrained=False, layers=2)
    cfg = bundle.model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, len(bundle.model.model.layers)) == (2, 4096, 2)
    for bad in (
        {"pretrained": True, "layers": 2},
        {"pretrained": False, "layers": 0},
        {"pretrained": False, "layers": True},
    ):
        with pytest.raises(ValueError, match="model.builder.layers"):
            hf_causal_lm("meta-llama/Llama-2-7b-hf", **bad)
