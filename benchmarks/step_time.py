"""Training-step time and memory of LoRA, LoLDU (every forward path) and SVFit on BERT-base shapes.

Rows run in interleaved rounds (see :mod:`benchmarks.rounds`): every round runs
each row once, in its own subprocess (``--worker ROW``, one JSON line back),
timing ``--steps`` steps in float32 and then as many under bf16 autocast. A row
reports the median over rounds of its per-round ratio to LoRA r8 and the
spread (min-max). Nothing is asserted: bars print PASS/FAIL.

Peak step memory is the float32 steps' own peak: on CPU the RSS high-water
mark reset right after setup (:mod:`benchmarks.rss`); on CUDA
``max_memory_allocated`` minus what was allocated at that point.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

from loldu.methods.diagonal import dz_grad_costs

from .rounds import Series, run_rounds, verdict
from .rss import MIB, current_rss, max_rss, reset_peak_rss

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ["query", "value"]
PATHS = ("activation", "weight", "fused", "auto")
REFERENCE = "lora r8"
KEYS = ("fp32", "bf16")


class Row(NamedTuple):
    """One benchmark configuration."""

    name: str
    method: str
    r: int | None = None
    path: str | None = None


def ranks(hidden: int) -> tuple[int, ...]:
    """LoLDU ranks for a hidden size: 8, 64 and full rank (fewer when the model is tiny)."""
    return tuple(sorted({min(8, hidden), min(64, hidden), hidden}))


def all_rows(hidden: int = 768) -> list[Row]:
    """Every configuration, in display order (the first four only run when ``--rows`` names them)."""
    full = hidden
    rows = [Row("none (encoder grads on)", "full"), Row("vera r256", "vera", 256)]
    rows += [Row("fourierft n1000", "fourierft", 1000), Row(REFERENCE, "lora", 8)]
    rows += [Row(f"loldu r{r} {p}", "loldu", r, p) for r in ranks(hidden) for p in PATHS]
    return rows + [Row(f"svfit r{full} auto", "svfit", full, "auto")]


def theory_macs(row: Row, tokens: int, targets: list[tuple[int, int]], encoder: list[tuple[int, int]], picks) -> float:
    """Extra multiply-adds per training step the adapter needs in theory, summed over adapted matrices."""
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
            total += 2 * 5 * o * i * math.log2(o * i) + 3 * t * o * i
        elif picks[k] == "activation":
            total += 2 * t * r * (i + o)
        elif picks[k] == "fused":
            total += o * r * i + min(dz_grad_costs(t, r, i, o))
        else:  # weight
            total += 2 * o * r * i + t * o * i
    return total


def _build(row: Row, args, torch):
    from transformers import BertConfig, BertModel, set_seed

    from loldu.methods import apply_method

    set_seed(0)
    cfg = BertConfig(
        num_hidden_layers=args.layers,
        hidden_size=args.hidden,
        num_attention_heads=max(1, args.hidden // 64),
        intermediate_size=4 * args.hidden,
    )
    model = BertModel(cfg).to(args.device)
    spec = {"name": row.method} if row.method == "full" else {"name": row.method, "r": row.r, "target_modules": TARGETS}
    spec["options"] = {"forward_path": row.path} if row.path else {}
    start = time.perf_counter()
    model = apply_method(model, spec)
    return model, time.perf_counter() - start


def run_worker(row: Row, args: argparse.Namespace) -> dict:
    """Build the model, apply the method, time float32 and bf16-autocast steps; return the measurements."""
    import torch
    from torch import nn

    from loldu.methods import SVFitLayer, count_parameters
    from loldu.methods.loldu import LoLDULayer

    if args.threads:
        torch.set_num_threads(args.threads)
    model, setup_s = _build(row, args, torch)
    model.train()
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and "base_layer" not in n]
    encoder = [(m.in_features, m.out_features) for n, m in linears if ".encoder." in f".{n}"]
    diag = [m for m in model.modules() if isinstance(m, (LoLDULayer, SVFitLayer))]
    targets = [(m.in_features, m.out_features) for m in diag] or [(args.hidden, args.hidden)] * 2 * args.layers
    tokens = args.batch * args.seq
    picks = [m.choose_path("default", tokens) for m in diag]
    device = torch.device(args.device)
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.seq), device=device)
    # Mean square of a fixed random projection: the plain mean square of a LayerNorm output is ~1 whatever the input.
    proj = torch.randn(model.config.hidden_size, device=device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def step(autocast: bool) -> float:
        sync()
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
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
        base_mem = torch.cuda.memory_allocated()
    else:
        base_mem = current_rss()
        reset_peak_rss()
    for _ in range(args.warmup):
        step(False)
    fp32 = statistics.median([step(False) for _ in range(args.steps)])
    peak = torch.cuda.max_memory_allocated() if cuda else max_rss()
    res = {"fp32": fp32, "peak_mib": (peak - base_mem) / MIB, "setup_s": setup_s, "torch": torch.__version__}
    try:
        for _ in range(args.warmup):
            step(True)
        res["bf16"] = statistics.median([step(True) for _ in range(args.steps)])
    except Exception as err:  # report, do not hide: helper A fixes autocast paths
        res["error:bf16"] = f"error: {str(err).splitlines()[0][:80]}"
    res.update(
        adapter=count_parameters(model)["adapter"],
        auto_picked=",".join(sorted(set(picks))) if row.path == "auto" else None,
        gmacs=theory_macs(row, tokens, targets, encoder, picks) / 1e9,
        threads=torch.get_num_threads(),
        device=torch.cuda.get_device_name(device) if cuda else "cpu",
    )
    return res


WORKER_KEYS = ("device", "batch", "seq", "layers", "hidden", "steps", "warmup", "threads")


def run_row(row: Row, args: argparse.Namespace) -> dict:
    """Run one row once in a fresh interpreter and parse its JSON line (in this one with ``--in-process``)."""
    if args.in_process:
        return run_worker(row, args)
    cmd = [sys.executable, "-m", "benchmarks.run", "--worker", row.name]
    for key in WORKER_KEYS:
        cmd += [f"--{key}", str(getattr(args, key))]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {proc.returncode}: {err}"}
    return json.loads(lines[-1])


HEADER = (
    "| method | r | path | auto picked | adapter params | fp32 step (s) | x LoRA r8 (median) | spread | "
    "bf16 autocast x LoRA r8 | peak step mem (MiB) | extra GMACs (theory) |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
)


def fmt_row(row: Row, s: Series) -> str:
    """One markdown table line."""
    head = f"| {row.method if row.method != 'full' else row.name} | {row.r or '-'} | {row.path or '-'} | "
    if "row" in s.errors:
        return head + f"- | - | {s.errors['row']} | | | | | |"
    e = s.extra
    bf16 = s.errors.get("bf16") or (f"{s.ratio('bf16'):.2f}x ({s.spread('bf16')})" if s.ratio("bf16") else "-")
    ratio = f"{s.ratio('fp32'):.2f}x" if s.ratio("fp32") else "-"
    return head + (
        f"{e['auto_picked'] or '-'} | {e['adapter']:,} | {s.time('fp32'):.4f} | {ratio} | {s.spread('fp32')} | "
        f"{bf16} | {e['peak_mib']:.0f} | {e['gmacs']:.3f} |"
    )


def bars(series: dict[str, Series], hidden: int) -> list[str]:
    """PASS/FAIL table of the project's step-time bars (a report: nothing is asserted)."""
    lines = ["| bar | measured (median per-round ratio) | verdict |", "|---|---|---|"]
    for r in ranks(hidden):
        auto = series.get(f"loldu r{r} auto")
        limit = 1.03 if r <= 64 else 1.10
        val = auto.ratio("fp32") if auto else None
        shown = f"{val:.2f}x" if val else "n/a"
        ok = None if val is None else val <= limit
        lines.append(f"| LoLDU auto r{r} <= {limit:.2f}x LoRA r8 | {shown} | {verdict(ok)} |")
    for r in ranks(hidden):
        auto = series.get(f"loldu r{r} auto")
        paths = [series.get(f"loldu r{r} {p}") for p in PATHS[:3]]
        vals = [x.ratio("fp32") if x else None for x in [auto, *paths]]
        ok = None if None in vals else vals[0] <= 1.05 * min(vals[1:])
        shown = f"{vals[0] / min(vals[1:]):.2f}x best path" if ok is not None else "n/a"
        lines.append(f"| LoLDU auto r{r} within 5% of its best path | {shown} | {verdict(ok)} |")
    return lines


def selected_rows(args: argparse.Namespace) -> list[Row]:
    """The rows ``--rows`` asks for (default: LoRA r8, LoLDU per rank and path, SVFit)."""
    rows = all_rows(args.hidden)
    wanted = [w.strip() for w in args.rows.split(",") if w.strip()]
    if not wanted:
        return [r for r in rows if r.method in ("lora", "loldu", "svfit")]
    return [r for r in rows if r.name == REFERENCE or any(w in r.name for w in wanted)]


def run_step(args: argparse.Namespace) -> list[str]:
    """The step-time table, rows printed as they become final; returns the report lines."""
    rows = selected_rows(args)
    by_name = {r.name: r for r in rows}
    head = (
        f"device {args.device} | threads {args.threads or 'default'} | batch {args.batch} x seq {args.seq} | "
        f"layers {args.layers} | hidden {args.hidden} | {args.rounds} rounds x {args.steps} steps "
        f"(warmup {args.warmup})"
    )
    print(head + "\n\n" + HEADER, flush=True)
    lines = [head, "", HEADER]

    def final(s: Series) -> None:
        lines.append(fmt_row(by_name[s.name], s))
        print(lines[-1], flush=True)

    series = run_rounds(list(by_name), REFERENCE, args.rounds, lambda n, k: run_row(by_name[n], args), KEYS, final)
    table = bars(series, args.hidden)
    print("\n" + "\n".join(table), flush=True)
    return [*lines, "", *table]
