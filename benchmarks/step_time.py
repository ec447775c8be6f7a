"""Training-step time and memory of every method on BERT-base shapes.

Run from the project root: ``python -m benchmarks.step_time`` (quick check: add
``--layers 1 --steps 1 --warmup 1 --seq 32``). Each row runs in its own
subprocess (``--worker ROW``) that prints one JSON line; the parent prints a
markdown table and a PASS/FAIL summary of the project's bars (a report only:
the exit status is 0 whatever it says).

Peak step memory is the step's own peak: on CPU, peak RSS (``ru_maxrss``) during
the steps minus the RSS right after the model was built and the method applied
(the peak mark is reset there through ``/proc/self/clear_refs`` where Linux
allows it, so setup transients such as the LU do not count); on CUDA,
``max_memory_allocated`` minus the memory allocated at that point.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

from loldu.methods.diagonal import dz_grad_costs

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ["query", "value"]
PATHS = ("activation", "weight", "fused", "auto")
REFERENCE = "lora r8"
MIB = 1024 * 1024


class Row(NamedTuple):
    """One benchmark configuration."""

    name: str
    method: str
    r: int | None = None
    path: str | None = None


def all_rows() -> list[Row]:
    """Every configuration, in display order."""
    rows = [Row("none (encoder grads on)", "full"), Row(REFERENCE, "lora", 8)]
    rows += [Row("vera r256", "vera", 256), Row("fourierft n1000", "fourierft", 1000)]
    rows += [Row(f"loldu r{r} {p}", "loldu", r, p) for r in (8, 64, 768) for p in PATHS]
    return rows + [Row("svfit r768 auto", "svfit", 768, "auto")]


def theory_macs(row: Row, tokens: int, targets: list[tuple[int, int]], encoder: list[tuple[int, int]], picks) -> float:
    """Extra multiply-adds per training step the adapter needs in theory, summed over adapted matrices.

    Args:
        row: the configuration.
        tokens: T = batch * seq.
        targets: (in, out) of each adapted matrix.
        encoder: (in, out) of every Linear in the encoder (for full fine-tuning).
        picks: the forward path of each adapted matrix (LoLDU/SVFit), in ``targets`` order.
    """
    t, r = tokens, row.r
    if row.method == "full":
        return float(sum(t * i * o for i, o in encoder))
    total = 0.0
    for k, (i, o) in enumerate(targets):
        if row.method == "lora":
            total += 3 * t * r * (i + o)
        elif row.method == "vera":
            total += 2 * t * r * (i + o) + t * (r + o)
        elif row.method == "fourierft":
            fft = 5 * o * i * math.log2(o * i)
            total += 2 * fft + 3 * t * o * i
        elif picks[k] == "activation":
            total += 2 * t * r * (i + o)
        elif picks[k] == "fused":
            total += o * r * i + min(dz_grad_costs(t, r, i, o))
        else:  # weight
            total += 2 * o * r * i + t * o * i
    return total


def current_rss() -> int:
    """Resident set size now, in bytes (the peak so far where /proc is missing)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return max_rss()


def max_rss() -> int:
    """Peak resident set size from ``getrusage``, in bytes."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark, which ``ru_maxrss`` reads (Linux >= 4.0); True if it worked."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def run_worker(row: Row, args: argparse.Namespace) -> dict:
    """Build the model, apply the method, time the training steps; return the row's measurements."""
    import torch
    from torch import nn
    from transformers import BertConfig, BertModel, set_seed

    from loldu.methods import SVFitLayer, apply_method, count_parameters, frozen_buffer_count
    from loldu.methods.loldu import LoLDULayer

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    set_seed(0)
    model = BertModel(BertConfig(num_hidden_layers=args.layers)).to(device, dtype)
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    encoder = [(m.in_features, m.out_features) for n, m in linears if n.startswith("encoder.")]
    targets = [(m.in_features, m.out_features) for n, m in linears if n.rsplit(".", 1)[-1] in TARGETS]
    spec = {"name": row.method} if row.method == "full" else {"name": row.method, "r": row.r, "target_modules": TARGETS}
    spec["options"] = {"forward_path": row.path} if row.path else {}
    start = time.perf_counter()
    model = apply_method(model, spec)
    setup_s = time.perf_counter() - start
    model.train()

    tokens = args.batch * args.seq
    diag = [m for m in model.modules() if isinstance(m, (LoLDULayer, SVFitLayer))]
    picks = [m.choose_path("default", tokens) for m in diag]
    macs = theory_macs(row, tokens, targets, encoder, picks)
    buffers = frozen_buffer_count(model)
    bar = sum(m.r["default"] * (m.in_features + m.out_features) for m in diag) // max(len(diag), 1)
    params = count_parameters(model)

    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.seq), device=device)
    # Mean square of a fixed random projection: the plain mean square of a LayerNorm output is ~1
    # whatever the input, which would leave only rounding noise in the gradients.
    proj = torch.randn(model.config.hidden_size, device=device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def step() -> float:
        sync()
        t0 = time.perf_counter()
        out = model(input_ids=ids).last_hidden_state
        loss = (out.float() @ proj).pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        return time.perf_counter() - t0

    gc.collect()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base_mem, mem_source = torch.cuda.memory_allocated(), "cuda max_memory_allocated"
    else:
        base_mem = current_rss()
        reset = reset_peak_rss()
        mem_source = "ru_maxrss, peak reset after setup" if reset else "ru_maxrss (lifetime peak)"
    for _ in range(args.warmup):
        step()
    times = [step() for _ in range(args.steps)]
    peak = torch.cuda.max_memory_allocated() if cuda else max_rss()
    device_name = torch.cuda.get_device_name(device) if cuda else "cpu"
    return {
        "name": row.name,
        "median_s": statistics.median(times),
        "times_s": times,
        "peak_mib": (peak - base_mem) / MIB,
        "mem_source": mem_source,
        "adapter": params["adapter"],
        "buffers_per_matrix": buffers / len(diag) if diag else None,
        "bar": bar if diag else None,
        "auto_picked": ",".join(sorted(set(picks))) if row.path == "auto" else None,
        "gmacs": macs / 1e9,
        "setup_s": setup_s,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": device_name,
    }


def run_row(row: Row, args: argparse.Namespace) -> dict:
    """Run one row in a fresh interpreter and parse its JSON line."""
    cmd = [sys.executable, "-m", "benchmarks.step_time", "--worker", row.name]
    for key in ("device", "dtype", "batch", "seq", "layers", "steps", "warmup", "threads"):
        cmd += [f"--{key}", str(getattr(args, key))]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"name": row.name, "error": f"exit {proc.returncode}: {err}"}
    return json.loads(lines[-1])


def fmt_row(row: Row, res: dict, ref: float | None) -> str:
    """One markdown table line."""
    method = row.name if row.method == "full" else row.method
    r = "-" if row.r is None else str(row.r)
    head = f"| {method} | {r} | {row.path or '-'} | "
    if "error" in res:
        return head + f"- | {res['error']} | | | | | |"
    bufs = "-" if res["buffers_per_matrix"] is None else f"{res['buffers_per_matrix']:,.0f} (bar {res['bar']:,})"
    ratio = f"{res['median_s'] / ref:.2f}x" if ref else "-"
    return head + (
        f"{res['auto_picked'] or '-'} | {res['adapter']:,} | {bufs} | {res['median_s']:.4f} | {ratio} | "
        f"{res['peak_mib']:.0f} | {res['gmacs']:.3f} |"
    )


def summary(results: dict[str, dict], ref: float | None) -> list[str]:
    """PASS/FAIL lines for the project's bars (a report: nothing is asserted)."""

    def median(name: str) -> float | None:
        res = results.get(name)
        return res["median_s"] if res and "error" not in res else None

    def verdict(ok: bool | None) -> str:
        return "SKIP (rows not run)" if ok is None else ("PASS" if ok else "FAIL")

    lines = []
    for r in (8, 64, 768):
        auto, limit = median(f"loldu r{r} auto"), (1.03 if r <= 64 else 1.20)
        ok = None if auto is None or not ref else auto / ref <= limit
        shown = f"{auto / ref:.2f}x" if ok is not None else "n/a"
        lines.append(f"- LoLDU auto r{r} <= {limit:.2f}x LoRA r8: {shown} -> {verdict(ok)}")
    for r in (8, 64, 768):
        auto = median(f"loldu r{r} auto")
        paths = [median(f"loldu r{r} {p}") for p in PATHS[:3]]
        ok = None if auto is None or None in paths else auto <= 1.05 * min(paths)
        shown = f"{auto / min(paths):.2f}x best path" if ok is not None else "n/a"
        lines.append(f"- LoLDU auto r{r} within 5% of its best path: {shown} -> {verdict(ok)}")
    diag = [res for res in results.values() if "error" not in res and res["buffers_per_matrix"] is not None]
    over = [res["name"] for res in diag if res["buffers_per_matrix"] > res["bar"]]
    ok = None if not diag else not over
    lines.append(f"- frozen buffers per adapted matrix <= r*(in+out) ({len(diag)} rows): {verdict(ok)}")
    if over:
        lines.append(f"  over the bar: {', '.join(over)}")
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--layers", type=int, default=12, help="encoder layers (shrink for quick checks)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per row")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before timing")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--rows", default="", help="comma-separated substrings selecting rows (LoRA r8 always runs)")
    p.add_argument("--out", default=None, help="also write the report (markdown) to this file")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run every selected row in its own subprocess and print the table and summary."""
    args = parse_args(argv)
    rows = all_rows()
    if args.worker:
        row = {r.name: r for r in rows}[args.worker]
        print(json.dumps(run_worker(row, args)), flush=True)
        return
    wanted = [s.strip() for s in args.rows.split(",") if s.strip()]
    rows = [r for r in rows if r.name == REFERENCE or not wanted or any(s in r.name for s in wanted)]
    results = {}
    for row in sorted(rows, key=lambda r: r.name != REFERENCE):  # the reference runs first
        print(f"running {row.name} ...", file=sys.stderr, flush=True)
        results[row.name] = run_row(row, args)
    ref_res = results[REFERENCE]
    ref = ref_res.get("median_s")
    info = ref_res if "error" not in ref_res else {"torch": "?", "threads": "?", "device": args.device}
    header = (
        f"torch {info['torch']} | device {info['device']} | {args.dtype} | threads {info['threads']} | "
        f"batch {args.batch} x seq {args.seq} | layers {args.layers} | steps {args.steps} (warmup {args.warmup}) "
        f"| memory: {ref_res.get('mem_source', '?')}"
    )
    table = [
        "| method | r | path | auto picked | adapter params | buffers/matrix (bar r*(in+out)) | median step (s) "
        "| x LoRA r8 | peak step mem (MiB) | extra GMACs (theory) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    table += [fmt_row(r, results[r.name], ref) for r in rows]
    report = [header, "", *table, "", "Bars:", *summary(results, ref)]
    text = "\n".join(report)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
