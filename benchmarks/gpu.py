"""``make test-gpu``'s benchmark: the paper's model families at real size (random weights) on one GPU.

Run from the project root::

    python -m benchmarks.gpu                           # CUDA, real sizes (a few minutes on one H100)
    python -m benchmarks.gpu --quick --device cpu      # tiny sizes on CPU: what the test suite runs

Every row runs in its own subprocess, so its peak memory is its own. Three parts:

- ``families``: two optimizer steps of each model family in ``bf16-mixed`` through ``train.py``, as a user runs
  it (``model.pretrained=false``: the shipped real architecture with random weights; local data written here):
  ViT-base and RoBERTa-base at LoLDU r=768, a 2-layer real-width slice of LLaMA-2-7B at r=1024, Stable Diffusion
  1.5's UNet at a 64 px DreamBooth step, r=32. Each row reports the run's recorded counts, step time and peak
  memory; it passes when the run finished in bf16-mixed with a finite loss.
- ``memory``: LLaMA-2-7B (all 32 layers, bf16 weights, q and v adapted), LoRA r8 against LoLDU r=1024: peak memory
  of the training steps and median step time. Bar: LoLDU's peak within 10% of LoRA r8's.
- ``paths``: LoLDU's forward paths (``activation``, ``weight``, ``fused``) on a real-size layer under bf16 autocast:
  outputs and z gradients against a float64 computation of the same layer, and against each other.

Writes ``gpu.json`` (every number, the device and the versions) and ``gpu.md`` (the tables) to ``--out-dir``
(default ``benchmarks/results``). Exit status 1 when a row failed or a bar was missed, 0 otherwise.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("families", "memory", "paths")
MEMORY_BAR = 1.10  # LoLDU r=1024's peak over LoRA r8's, LLaMA-2-7B q,v (issue 20)
PATH_TOLERANCE = 2e-2  # relative error of a bf16 autocast layer output or z gradient against float64

#: family row -> (real-size overrides, quick overrides); ``{data}`` is the folder the local data is written to.
FAMILIES: dict[str, tuple[list[str], list[str]]] = {
    "image: ViT-base, LoLDU r=768": (
        ["model=vit", "model.pretrained=false", "rank=768"],
        ["model=tiny_vit", "rank=8"],
    ),
    "text: RoBERTa-base, LoLDU r=768": (
        ["model=roberta", "model.pretrained=false", "rank=768"],
        ["model=tiny_roberta", "rank=8"],
    ),
    "causal LM: LLaMA-2-7B 2-layer slice, LoLDU r=1024": (
        ["model=llama2_7b", "model.pretrained=false", "model.builder.layers=2", "rank=1024"],
        ["model=tiny_llama", "rank=8"],
    ),
    "diffusion: SD-1.5 UNet at 64 px, LoLDU r=32": (
        ["model=sd", "model.pretrained=false", "model.builder.resolution=64", "rank=32"],
        ["model=tiny_sd", "rank=8"],
    ),
}
FIVE_ROWS = ["task.data.val_fraction=5", "task.data.test_fraction=5"]  # carved splits as counts
#: family row -> the task and its local data (the same in both sizes).
TASKS = {
    "image": ["task=imagefolder", "task.data.source_args.root={data}/images", *FIVE_ROWS],
    "text": [
        "task=text_csv",
        *FIVE_ROWS,
        "task.data.source_args.train={data}/pairs.csv",
        "task.data.source_args.text_columns=[premise,hypothesis]",
    ],
    "causal LM": ["task=instruction_json", "task.data.source_args.path={data}/instructions.json"],
    "diffusion": ["task=dreambooth", "task.data.instance_dir={data}/dog", "task.samples.prompts=[]"],
}
#: memory row -> the method applied to LLaMA-2-7B's q_proj and v_proj.
MEMORY_ROWS = {
    "lora r8": {"name": "lora", "r": 8},
    "loldu r1024": {"name": "loldu", "r": 1024},
}
PATHS = ("activation", "weight", "fused")


def write_local_data(root: Path) -> Path:
    """The families' data: an image folder of 2 classes, a sentence-pair CSV, an instruction JSON, 3 photos."""
    from PIL import Image

    for c in range(2):
        for i in range(12):
            path = root / "images" / f"class_{c}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (32, 32), (100 * c, 5 * i, 50)).save(path)
    rows = ["premise,hypothesis,label"]
    rows += [f'"a dog runs in park {i}","an animal is outside {i}",{"yes" if i % 2 else "no"}' for i in range(40)]
    (root / "pairs.csv").write_text("\n".join(rows) + "\n")
    items = [{"instruction": f"Add {i} and {i + 1}.", "input": "", "output": f"{2 * i + 1}"} for i in range(40)]
    (root / "instructions.json").write_text(json.dumps(items))
    (root / "dog").mkdir(exist_ok=True)
    for i in range(3):
        Image.new("RGB", (64, 64), (40 * i, 90, 20)).save(root / "dog" / f"{i}.png")
    return root


def family_command(row: str, data: Path, out: Path, device: str, quick: bool) -> list[str]:
    """The ``train.py`` command line of one family row: two bf16-mixed optimizer steps of batch 2."""
    model = FAMILIES[row][1 if quick else 0]
    task = [arg.format(data=data) for arg in TASKS[row.split(":")[0]]]
    return [
        sys.executable,
        "train.py",
        *model,
        *task,
        "method=loldu",
        "debug=fast",
        "batch_size=2",
        "trainer.limit_train_batches=2",
        "task.max_steps=2",
        "task.data.limit_train=16",
        "task.data.limit_eval=5",
        f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}",
        "trainer.precision=bf16-mixed",
        "logger=csv",  # csv/metrics.csv: every step's training loss
        "callbacks=none",
        f"output_dir={out}",
    ]


def run_family(row: str, data: Path, out: Path, device: str, quick: bool) -> dict[str, Any]:
    """Runs one family row; returns its record (``error`` set when the run did not finish)."""
    cmd = family_command(row, data, out, device, quick)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    record: dict[str, Any] = {"row": row, "command": " ".join(cmd[1:]), "wall_s": time.perf_counter() - start}
    metrics_file = out / "metrics.json"
    if proc.returncode or not metrics_file.is_file():
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {**record, "error": f"exit {proc.returncode}: {tail}"}
    from omegaconf import OmegaConf

    metrics = json.loads(metrics_file.read_text())
    precision = OmegaConf.select(OmegaConf.load(out / "config.yaml"), "trainer.precision")
    health = metrics.get("health") or {}
    losses = train_losses(out / "csv" / "metrics.csv")
    loss = losses[-1] if losses else None
    perf = metrics.get("perf") or {}
    record.update(
        adapter=metrics["params"]["adapter"],
        trainable=metrics["params"]["trainable"],
        base=metrics["params"]["base"],
        precision=precision,
        train_losses=losses,
        train_loss=loss,
        step_time_s=perf.get("step_time_s"),
        peak_mem_mib=perf.get("peak_mem_mib"),
        peak_mem_kind=perf.get("peak_mem_kind"),
    )
    finite = bool(losses) and all(math.isfinite(v) for v in losses)
    record["passed"] = precision == "bf16-mixed" and finite and not health.get("diverged", False)
    return record


def train_losses(path: Path) -> list[float]:
    """The per-step training losses a run's CSV logger wrote (``train/loss_step`` where the loss is also logged
    per epoch, else ``train/loss``), in step order; empty when there are none."""
    import csv

    if not path.is_file():
        return []
    with path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    key = "train/loss_step" if rows and "train/loss_step" in rows[0] else "train/loss"
    return [float(row[key]) for row in rows if row.get(key)]


def llama_config(quick: bool) -> Any:
    """LLaMA-2-7B's architecture (quick: the same shape family at hidden 128, 2 layers)."""
    from loldu.models.architectures import architecture

    if quick:
        return architecture(
            "meta-llama/Llama-2-7b-hf",
            hidden_size=128,
            intermediate_size=344,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            vocab_size=512,
        )
    return architecture("meta-llama/Llama-2-7b-hf")


def memory_worker(row: str, device: str, quick: bool, seq: int, steps: int) -> dict[str, Any]:
    """One memory row in this process: the model built on ``device`` in bf16, the method applied there, AdamW
    over the trained parameters, ``steps`` timed steps of batch 1 x ``seq`` under bf16 autocast after one warm-up.
    Peak: CUDA's ``max_memory_allocated`` (reset before the model is built) or, on CPU, the RSS high-water mark."""
    import torch
    from transformers import AutoModelForCausalLM, set_seed

    from loldu.methods import apply_method, count_parameters

    from .rss import MIB, max_rss

    set_seed(0)
    cfg = llama_config(quick)
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    start = time.perf_counter()
    with dev:
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    spec = {**MEMORY_ROWS[row], "target_modules": ["q_proj", "v_proj"]}
    if spec["name"] == "loldu":
        spec["r"] = min(spec["r"], cfg.hidden_size)
    model = apply_method(model, spec)
    _sync(dev)
    setup_s = time.perf_counter() - start
    model.train()
    trained = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trained, lr=1e-4)
    ids = torch.randint(0, cfg.vocab_size, (1, seq), device=dev)
    times = []
    for k in range(steps + 1):
        begin = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(dev)
        if k:  # the first step is the warm-up (allocator, kernels, optimizer state)
            times.append(time.perf_counter() - begin)
    if dev.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated(dev) / MIB, "cuda_max_allocated"
    else:
        peak, kind = max_rss() / MIB, "cpu_max_rss"
    return {
        "row": row,
        "adapter": count_parameters(model)["adapter"],
        "setup_s": setup_s,
        "step_time_s": statistics.median(times),
        "peak_mem_mib": peak,
        "peak_mem_kind": kind,
        "loss": float(loss),
    }


def paths_worker(device: str, quick: bool) -> list[dict[str, Any]]:
    """LoLDU's three forward paths on one real-size layer under bf16 autocast, against float64.

    The layer: LLaMA-2-7B's q_proj shape (4096 x 4096) at r=1024 (quick: 128 x 128 at r=32), z moved away from its
    start so the update is not zero, a batch of 2 x 64 tokens. Each path's output and z gradient are compared with
    the float64 layer's (relative Frobenius error), and with the ``weight`` path's."""
    import torch

    from loldu.methods import apply_method

    dev = torch.device(device)
    width, r = (128, 32) if quick else (4096, 1024)
    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(width, width, bias=False))
    x = torch.randn(2, 64, width)
    got = {}  # path -> (output, z gradient), float64 on the CPU
    for path in ("float64", *PATHS):
        spec = {"name": "loldu", "r": r, "target_modules": ["0"]}
        spec["options"] = {"forward_path": "weight" if path == "float64" else path}
        model = apply_method(copy.deepcopy(base), spec)
        with torch.no_grad():
            _z(model).mul_(1.5).add_(0.01)  # away from the start, where the update is zero
        if path == "float64":
            out = model.double()(x.double())
        else:
            model = model.to(dev)
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                out = model(x.to(dev))
        out.float().pow(2).mean().backward()
        got[path] = (out.detach().double().cpu(), _z(model).grad.detach().double().cpu())
    (ref_out, ref_grad), (w_out, w_grad) = got["float64"], got["weight"]
    results = []
    for path in PATHS:
        out, grad = got[path]
        res = {"path": path, "out_err": _rel(out, ref_out), "grad_err": _rel(grad, ref_grad)}
        res.update(out_vs_weight=_rel(out, w_out), grad_vs_weight=_rel(grad, w_grad))
        res["passed"] = max(res["out_err"], res["grad_err"]) <= PATH_TOLERANCE
        results.append(res)
    return results


def _z(model: Any) -> Any:
    return next(p for name, p in model.named_parameters() if "loldu_z" in name)


def _rel(a: Any, b: Any) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _sync(dev: Any) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _worker_call(args: argparse.Namespace, *worker: str) -> dict[str, Any] | list[dict[str, Any]]:
    cmd = [sys.executable, "-m", "benchmarks.gpu", "--device", args.device, "--seq", str(args.seq),
           "--steps", str(args.steps), *(["--quick"] if args.quick else []), "--worker", *worker]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(("{", "["))]
    if proc.returncode or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"row": " ".join(worker), "error": f"exit {proc.returncode}: {tail}"}
    return json.loads(lines[-1])


def _fmt(value: Any, spec: str = ".3g") -> str:
    if value is None:
        return "n/a"
    return format(value, spec) if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value)


def _table(head: str, columns: list[str], recs: list[dict], cells: Any, verdict: bool) -> list[str]:
    """A markdown table: a row per record, ``cells(rec)`` its cells after the name; a failed record says its error
    (and FAIL where the table has a verdict column)."""
    lines = [head, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for rec in recs:
        name = rec.get("path") or rec["row"]
        if "error" in rec:
            blanks = [""] * (len(columns) - 2 - verdict)
            lines.append(" | ".join([f"| {name}", f"error: {rec['error']}", *blanks, *(["FAIL"] * verdict)]) + " |")
            continue
        row = [name, *cells(rec)] + (["PASS" if rec["passed"] else "FAIL"] if verdict else [])
        lines.append("| " + " | ".join(row) + " |")
    return lines


def markdown(report: dict[str, Any]) -> str:
    """The report's tables."""
    lines = [f"# GPU benchmark ({report['size']} sizes, {report['device']['name']})", ""]
    if "families" in report:
        lines += _table(
            "## Families: two bf16-mixed optimizer steps through train.py",
            ["row", "adapter", "trainable", "precision", "train loss", "step (s)", "peak (MiB)", "wall (s)", "verdict"],
            report["families"],
            lambda rec: [
                _fmt(rec["adapter"]),
                _fmt(rec["trainable"]),
                rec["precision"],
                _fmt(rec["train_loss"]),
                _fmt(rec["step_time_s"]),
                f"{_fmt(rec['peak_mem_mib'], '.0f')} ({rec['peak_mem_kind']})",
                f"{rec['wall_s']:.0f}",
            ],  # fmt: skip
            verdict=True,
        )
        lines.append("")
    if "memory" in report:
        mem = report["memory"]
        shape = " (quick shape)" if report["size"] == "quick" else ""
        lines += _table(
            f"## Memory: LLaMA-2-7B{shape}, q and v, bf16 weights, batch 1 x {report['seq']}",
            ["row", "adapter", "setup (s)", "step (s)", "peak (MiB)", "peak / LoRA r8"],
            mem["rows"],
            lambda rec: [
                _fmt(rec["adapter"]),
                f"{rec['setup_s']:.1f}",
                f"{rec['step_time_s']:.3f}",
                f"{rec['peak_mem_mib']:.0f} ({rec['peak_mem_kind']})",
                _fmt(rec.get("peak_ratio"), ".3f"),
            ],  # fmt: skip
            verdict=False,
        )
        lines += ["", f"Bar: LoLDU r=1024's peak <= {MEMORY_BAR:.2f}x LoRA r8's: {mem['verdict']}", ""]
    if "paths" in report:
        lines += _table(
            "## Forward paths: LoLDU on one real-size layer under bf16 autocast, against float64",
            [
                "path",
                "output rel. error",
                "z grad rel. error",
                "output vs weight path",
                "z grad vs weight path",
                "verdict",
            ],  # fmt: skip
            report["paths"],
            lambda rec: [f"{rec[k]:.2e}" for k in ("out_err", "grad_err", "out_vs_weight", "grad_vs_weight")],
            verdict=True,
        )
        lines += ["", f"Bar: each path's errors <= {PATH_TOLERANCE:g}.", ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--quick", action="store_true", help="tiny sizes: a check that it runs, not a measurement")
    p.add_argument("--only", default="", help="comma-separated parts: families, memory, paths (default all)")
    p.add_argument("--seq", type=int, default=512, help="memory part: tokens per step")
    p.add_argument("--steps", type=int, default=5, help="memory part: timed steps after one warm-up")
    p.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        kind, *rest = args.worker
        result = (
            paths_worker(args.device, args.quick)
            if kind == "paths"
            else memory_worker(" ".join(rest), args.device, args.quick, args.seq, args.steps)
        )
        print(json.dumps(result), flush=True)
        return 0
    import torch

    from loldu.run.provenance import device_name, versions

    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "benchmarks.gpu: no CUDA device here; use a GPU machine, or --device cpu --quick for a check",
            file=sys.stderr,
        )
        return 2
    parts = [p for p in (args.only.split(",") if args.only else PARTS) if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        print(f"benchmarks.gpu: unknown part(s) {unknown}; choose from {list(PARTS)}", file=sys.stderr)
        return 2
    report: dict[str, Any] = {
        "size": "quick" if args.quick else "real",
        "device": {"accelerator": args.device, "name": device_name(torch.device(args.device))},
        "versions": versions(),
        "seq": args.seq,
    }
    ok = True
    with tempfile.TemporaryDirectory(prefix="loldu-gpu-bench-") as tmp:
        if "families" in parts:
            data = write_local_data(Path(tmp) / "data")
            report["families"] = []
            for k, row in enumerate(FAMILIES):
                rec = run_family(row, data, Path(tmp) / f"run{k}", args.device, args.quick)
                report["families"].append(rec)
                ok &= bool(rec.get("passed"))
                print(f"[families] {row}: {'error: ' + rec['error'] if 'error' in rec else 'done'}", file=sys.stderr)
    if "memory" in parts:
        rows = [_worker_call(args, "memory", row) for row in MEMORY_ROWS]
        by = {rec["row"]: rec for rec in rows}
        lora, loldu = by.get("lora r8", {}), by.get("loldu r1024", {})
        verdict = "not measured (a row failed)"
        if "peak_mem_mib" in lora and "peak_mem_mib" in loldu:
            for rec in rows:
                rec["peak_ratio"] = rec["peak_mem_mib"] / lora["peak_mem_mib"]
            verdict = "PASS" if loldu["peak_ratio"] <= MEMORY_BAR else "FAIL"
        ok &= verdict == "PASS"
        report["memory"] = {"rows": rows, "bar": MEMORY_BAR, "verdict": verdict}
        print(f"[memory] {verdict}", file=sys.stderr)
    if "paths" in parts:
        res = _worker_call(args, "paths")
        report["paths"] = res if isinstance(res, list) else [res]
        ok &= all(rec.get("passed") for rec in report["paths"])
        print("[paths] done", file=sys.stderr)
    report["passed"] = ok
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "gpu.md").write_text(markdown(report))
    print(markdown(report))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
