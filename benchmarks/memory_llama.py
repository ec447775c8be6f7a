"""Peak training-step memory on a LLaMA-7B-shaped stack: LoRA r8 against LoLDU r=1024 on q_proj/v_proj.

A few decoder layers at hidden 4096 / intermediate 11008 with random float32
weights on CPU and a short sequence. Each configuration runs in a fresh
subprocess; its peak is the RSS high-water mark of two training steps over
the RSS right after setup (:mod:`benchmarks.rss`), so the LU and the weights
themselves do not count. LoLDU runs with its default options (``auto`` picks the
activation path at short sequences), on the fused path (which keeps the merged
weight for the backward), and on the fused path with the ``recompute`` option
``never`` and ``always`` where :class:`LoLDUConfig` has that field (n/a otherwise).
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time

from .rss import MIB, current_rss, max_rss, reset_peak_rss
from .step_time import ROOT

CONFIGS = {
    "llama lora r8": {},
    "llama loldu auto": {},
    "llama loldu fused": {"forward_path": "fused"},
    "llama loldu fused recompute=never": {"forward_path": "fused", "recompute": "never"},
    "llama loldu fused recompute=always": {"forward_path": "fused", "recompute": "always"},
}


def has_recompute() -> bool:
    """Whether this checkout's LoLDUConfig has the ``recompute`` field."""
    from loldu.methods.loldu.config import LoLDUConfig

    return "recompute" in LoLDUConfig.__dataclass_fields__


def run_worker(name: str, args: argparse.Namespace) -> dict:
    """Build the stack, apply the configuration, run two steps; return peak and setup time."""
    import torch
    from transformers import LlamaConfig, LlamaModel, set_seed

    from loldu.methods import apply_method

    if args.threads:
        torch.set_num_threads(args.threads)
    set_seed(0)
    cfg = LlamaConfig(
        hidden_size=args.llama_hidden,
        intermediate_size=args.llama_intermediate,
        num_hidden_layers=args.llama_layers,
        num_attention_heads=max(1, args.llama_hidden // 128),
        num_key_value_heads=max(1, args.llama_hidden // 128),
        vocab_size=512,
    )
    model = LlamaModel(cfg)
    r = min(args.llama_r, args.llama_hidden)
    spec = {"name": "lora", "r": 8} if "lora" in name else {"name": "loldu", "r": r}
    spec["target_modules"] = ["q_proj", "v_proj"]
    spec["options"] = dict(CONFIGS[name]) if "loldu" in name else {}
    start = time.perf_counter()
    model = apply_method(model, spec)
    setup_s = time.perf_counter() - start
    model.train()
    ids = torch.randint(0, cfg.vocab_size, (1, args.llama_seq))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    gc.collect()
    base = current_rss()
    reset_peak_rss()
    t0 = time.perf_counter()
    for _ in range(2):
        loss = model(input_ids=ids).last_hidden_state.float().pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return {"peak_mib": (max_rss() - base) / MIB, "setup_s": setup_s, "step_s": (time.perf_counter() - t0) / 2}


WORKER_KEYS = ("threads", "llama_hidden", "llama_intermediate", "llama_layers", "llama_seq", "llama_r")


def run_memory(args: argparse.Namespace) -> list[str]:
    """One subprocess per configuration; returns (and prints) the markdown table."""
    head = (
        f"LLaMA-shaped stack: {args.llama_layers} decoder layers, hidden {args.llama_hidden}, intermediate "
        f"{args.llama_intermediate}, LoLDU r={min(args.llama_r, args.llama_hidden)}, "
        f"float32, CPU, batch 1 x seq {args.llama_seq}; peak = RSS high-water over 2 steps "
        "minus RSS after setup"
    )
    lines = [
        head,
        "",
        "| config | setup, all adapted matrices (s) | step (s) | peak step mem (MiB) |",
        "|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    recompute_ok = has_recompute()
    for name in CONFIGS:
        if "recompute" in CONFIGS[name] and not recompute_ok:
            lines.append(f"| {name} | n/a (no `recompute` field in LoLDUConfig on this branch) | | |")
        elif args.in_process:
            res = run_worker(name, args)
            lines.append(f"| {name} | {res['setup_s']:.1f} | {res['step_s']:.2f} | {res['peak_mib']:.0f} |")
        else:
            cmd = [sys.executable, "-m", "benchmarks.run", "--worker", name]
            for key in WORKER_KEYS:
                cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            out = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            if proc.returncode or not out:
                err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                lines.append(f"| {name} | error: exit {proc.returncode}: {err} | | |")
            else:
                res = json.loads(out[-1])
                lines.append(f"| {name} | {res['setup_s']:.1f} | {res['step_s']:.2f} | {res['peak_mib']:.0f} |")
        print(lines[-1], flush=True)
    return lines
