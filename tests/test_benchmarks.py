"""The benchmark's smallest configuration runs end to end, so it cannot rot (its numbers are not checked)."""

from __future__ import annotations

import io

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
