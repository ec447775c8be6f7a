"""``make bench``: setup time, step time and memory tables, printed as they are measured.

Run from the project root::

    python -m benchmarks.run                      # everything (long: tens of minutes on 2 cores)
    python -m benchmarks.run --quick              # tiny sizes, 1 round: checks that it runs
    python -m benchmarks.run --only setup --rounds 5
    python -m benchmarks.run --only step --rows "r64,r768" --layers 4

Tables go to stdout (and ``--out FILE``); progress to stderr: a line per row as its measurement finishes and a
line per round. The exit status is 0 whatever the bars say: they are a report.
"""

from __future__ import annotations

import argparse
from pathlib import Path

PARTS = ("setup", "step", "memory")
QUICK = {
    "rounds": 1, "layers": 1, "hidden": 64, "batch": 2, "seq": 8, "steps": 1, "warmup": 1,
    "llama_hidden": 128, "llama_intermediate": 344, "llama_layers": 1, "llama_seq": 8, "llama_r": 64,
}  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (``--quick`` overrides the sizes with tiny ones)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="", help="comma-separated parts to run: setup, step, memory (default all)")
    p.add_argument("--quick", action="store_true", help="tiny sizes and 1 round: a smoke run, not a measurement")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (each row once per round)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=0, help="torch threads in the workers (0: torch's default)")
    p.add_argument("--out", default=None, help="also write the report (markdown) to this file")
    g = p.add_argument_group("step time (BERT-base shapes)")
    g.add_argument("--batch", type=int, default=8)
    g.add_argument("--seq", type=int, default=128)
    g.add_argument("--layers", type=int, default=12, help="encoder layers")
    g.add_argument("--hidden", type=int, default=768, help="hidden size (LoLDU ranks: 8, 64 and this)")
    g.add_argument("--steps", type=int, default=3, help="timed steps per row per round and per dtype")
    g.add_argument("--warmup", type=int, default=1, help="untimed steps before timing, per dtype")
    g.add_argument("--rows", default="", help="comma-separated substrings selecting rows (LoRA r8 always runs)")
    g = p.add_argument_group("memory (LLaMA-7B-shaped layers)")
    g.add_argument("--llama-hidden", type=int, default=4096)
    g.add_argument("--llama-intermediate", type=int, default=11008)
    g.add_argument("--llama-layers", type=int, default=2)
    g.add_argument("--llama-seq", type=int, default=32)
    g.add_argument("--llama-r", type=int, default=1024)
    p.add_argument("--in-process", action="store_true", help="no subprocess per row (for tests: memory less exact)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    parts = [x.strip() for x in args.only.split(",") if x.strip()] or list(PARTS)
    bad = sorted(set(parts) - set(PARTS))
    if bad:
        p.error(f"--only takes {', '.join(PARTS)}; got {', '.join(bad)}")
    args.parts = parts
    return args


def main(argv: list[str] | None = None) -> list[str]:
    """Run the selected parts (or one worker row) and return the report lines."""
    import json
    import sys

    from loldu.run.logs import quiet

    from . import memory_llama, setup_time, step_time

    args = parse_args(argv)
    quiet()  # the same warning filters as a run (workers too)
    if args.worker:
        if args.worker in memory_llama.CONFIGS:
            res = memory_llama.run_worker(args.worker, args)
        else:
            row = {r.name: r for r in step_time.all_rows(args.hidden)}[args.worker]
            res = step_time.run_worker(row, args)
        print(json.dumps(res), flush=True)
        return []
    report: list[str] = []
    if "setup" in args.parts:
        print("## Setup: lu_factors vs torch.linalg.lu_factor\n", flush=True)
        shapes = setup_time.QUICK_SHAPES if args.quick else setup_time.SHAPES
        report += ["## Setup", "", *setup_time.run_setup(shapes, args.rounds, args.device), ""]
    if "step" in args.parts:
        print("\n## Step time\n", flush=True)
        report += ["## Step time", "", *step_time.run_step(args), ""]
    if "memory" in args.parts:
        print("\n## Memory\n", flush=True)
        report += ["## Memory", "", *memory_llama.run_memory(args), ""]
    if args.out:
        Path(args.out).write_text("\n".join(report) + "\n")
    print("done", file=sys.stderr, flush=True)
    return report


if __name__ == "__main__":
    main()
