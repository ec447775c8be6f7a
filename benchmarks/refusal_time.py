"""How fast a mistaken command is refused, against ``--cfg job`` of the same command (composing and printing
the config, nothing else): ``python -m benchmarks.refusal_time [--rounds N]``.

Each round runs every case once both ways, interleaved, so the machine's load falls on both alike; the table has
the medians and their ratio (the goal: under 2.5x). The commands are the compose-time cases of
``tests/test_refusals.py`` that a new user hits most.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "save_merged=maybe": ["save_merged=maybe"],
    "method.options.train_sigma=maybe": ["method.options.train_sigma=maybe"],
    "++task.num_label=3": ["++task.num_label=3"],
    "task.max_length=0": ["task.max_length=0"],
    "trainer.max_epochs=5": ["trainer.max_epochs=5"],
    "task.monitor=val/accuracy": ["task.monitor=val/accuracy"],
    "missing data file": ["task=text_csv", "task.data.source_args.train=missing.csv"],
    "resume=/nonexistent": ["resume=/nonexistent"],
    "task.max_lenght=5 (typo)": ["task.max_lenght=5"],
}


def _seconds(args: list[str], cwd: str) -> tuple[float, int]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env, capture_output=True)
    return time.perf_counter() - start, done.returncode


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    refused: dict[str, list[float]] = {k: [] for k in CASES}
    composed: dict[str, list[float]] = {k: [] for k in CASES}
    codes: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as cwd:
        for round_ in range(args.rounds):
            for name, case in CASES.items():
                seconds, codes[name] = _seconds(case, cwd)
                refused[name].append(seconds)
                composed[name].append(_seconds([*case, "--cfg", "job"], cwd)[0])
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)
    print("| command | exit | refused (s) | `--cfg job` (s) | ratio |\n| --- | --- | --- | --- | --- |")
    for name in CASES:
        a, b = statistics.median(refused[name]), statistics.median(composed[name])
        print(f"| `{name}` | {codes[name]} | {a:.2f} | {b:.2f} | {a / b:.2f}x |")


if __name__ == "__main__":
    main()
