"""The ``python -m loldu.eval.lm`` command: check the run folder and tasks, merge the model once, run lm-eval and
write the summary."""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from loldu.eval.lm.model import TOKENIZER_FILES, check_model_dir, is_run_folder, make_lm, resolve_model_dir
from loldu.eval.lm.results import (
    format_table,
    lm_eval_version,
    main_metrics,
    package_version,
    sample_counts,
    shots_used,
    write_summary,
)
from loldu.eval.lm.tasks import (
    PAPER_SUITE,
    check_tasks,
    include_paths,
    parse_tasks,
    task_manager_for,
    unsafe_tasks,
)
from loldu.methods.progress import progress
from loldu.run.logs import quiet

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_OUTPUT",
    "DTYPES",
    "PAPER_SUITE",
    "TOKENIZER_FILES",
    "build_parser",
    "check_model_dir",
    "check_tasks",
    "format_table",
    "main",
    "parse_tasks",
    "resolve_model_dir",
    "run_benchmarks",
    "task_manager_for",
    "unsafe_tasks",
]

DTYPES = ("auto", "bfloat16", "float16", "float32")
DEFAULT_OUTPUT = "benchmarks.json"


# -- running ------------------------------------------------------------------------------
def run_benchmarks(
    model_dir: str | Path,
    tasks: Mapping[str, int | None],
    limit: int | float | None = None,
    include_path: str | Path | Sequence[str | Path] | None = None,
    batch_size: int | str = 1,
    device: str = "cpu",
    dtype: str = "auto",
    allow_code_execution: bool = False,
    output: str | Path | None = None,
) -> dict:
    """Run lm-eval tasks on a Hugging Face causal LM folder, each with its own number of shots.

    The model is loaded once as lm-eval's ``hf`` model (``HFLM`` with
    ``pretrained=model_dir``) and each task runs through
    ``lm_eval.simple_evaluate`` with its ``num_fewshot``. All inputs are
    checked before the model or any data set is loaded.

    Args:
        model_dir: a model folder with ``config.json`` and the tokenizer (e.g. a
            run's ``merged/``).
        tasks: ``{task or group name: shots}``; None shots is the task's default.
            See :data:`PAPER_SUITE`.
        limit: evaluate only the first ``limit`` documents per task (a float < 1:
            that fraction); for smoke tests, not for reported numbers.
        include_path: folder(s) with further task YAMLs (e.g. ``benchmarks/lm_eval_tasks``).
        batch_size: lm-eval batch size (an int, or ``"auto"``).
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        dtype: ``auto`` (the checkpoint's), ``bfloat16``, ``float16`` or ``float32``.
        allow_code_execution: run tasks that execute model-written code (HumanEval).
        output: write the result as JSON here too.

    Returns:
        ``{"results": {task: {metric: value, metric_stderr: value}}, "settings": {...}}``;
        settings hold the shots asked for and used, limit, documents evaluated,
        model folder, device, dtype, and the lm-eval and transformers versions.

    Raises:
        FileNotFoundError: model folder or include path missing or incomplete.
        ValueError: no tasks, bad shots/dtype/limit, unknown task names, or an
            unsafe task without ``allow_code_execution``.
    """
    model_dir = check_model_dir(model_dir)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit <= 0):
        raise ValueError(f"limit must be a positive number or None, got {limit!r}")
    manager = check_tasks(tasks, include_path, allow_code_execution)

    summary = _run_tasks(
        model_dir, tasks, manager, limit, include_path, batch_size, device, dtype, allow_code_execution
    )
    if output is not None:
        write_summary(summary, output)
    return summary


def _run_tasks(
    model_dir: Path,
    tasks: Mapping[str, int | None],
    manager,
    limit,
    include_path,
    batch_size,
    device: str,
    dtype: str,
    allow_code_execution: bool,
) -> dict:
    """Load the model, run every task, and return the summary (inputs already checked by :func:`run_benchmarks`)."""
    if allow_code_execution:
        os.environ["HF_ALLOW_CODE_EVAL"] = "1"
    lm = make_lm(model_dir, batch_size=batch_size, device=device, dtype=dtype)
    started = time.time()
    results, used_shots, samples = _evaluate_tasks(lm, tasks, limit, manager, allow_code_execution)
    summary = {
        "results": results,
        "settings": {
            "model_dir": str(model_dir),
            "shots": dict(tasks),
            "shots_used": used_shots,
            "limit": limit,
            "samples": samples,
            "batch_size": batch_size,
            "device": device,
            "dtype": dtype,
            "include_path": list(include_paths(include_path)),
            "allow_code_execution": allow_code_execution,
            "lm_eval_version": lm_eval_version(),
            "transformers_version": package_version("transformers"),
            "seconds": round(time.time() - started, 1),
        },
    }
    return summary


def _evaluate_tasks(lm, tasks: Mapping[str, int | None], limit, manager, allow_code_execution: bool):
    """Each task through ``lm_eval.simple_evaluate`` with its own shots: ``(results, shots used, samples)``."""
    import lm_eval

    results: dict[str, dict[str, float]] = {}
    used_shots: dict[str, Any] = {}
    samples: dict[str, Any] = {}
    for name, shots in progress(tasks.items(), "lm-eval tasks", total=len(tasks), unit="task", leave=True):
        log.info("evaluating %s (%s-shot)", name, "default" if shots is None else shots)
        raw = lm_eval.simple_evaluate(
            model=lm,
            tasks=[name],
            num_fewshot=shots,
            limit=limit,
            task_manager=manager,
            log_samples=False,
            confirm_run_unsafe_code=allow_code_execution,
        )
        if raw is None:  # not the main process
            continue
        results.update(main_metrics(name, raw))
        used_shots[name] = shots_used(name, raw.get("n-shot", {}))
        samples[name] = sample_counts(name, raw.get("n-samples", {}))
    return results, used_shots, samples


# -- command line --------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loldu.eval.lm",
        description="Run lm-evaluation-harness benchmarks on a finished run (or a Hugging Face model folder).",
    )
    parser.add_argument("run_dir", help="run folder (with config.yaml) or Hugging Face model folder (with config.json)")
    parser.add_argument(
        "--tasks",
        default="paper",
        help="'paper' (mmlu:5,bbh_fewshot:3,drop:3,humaneval:0) or name[:shots],name,... (default: paper)",
    )
    parser.add_argument("--limit", type=float, default=None, help="documents per task (smoke tests only)")
    parser.add_argument("--include-path", action="append", default=None, help="folder of extra task YAMLs")
    parser.add_argument("--batch-size", default="1", help="lm-eval batch size: a number or 'auto' (default 1)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--dtype", default="auto", choices=DTYPES)
    parser.add_argument(
        "--allow-code-execution",
        action="store_true",
        help="run tasks that execute model-written code (HumanEval); use a sandbox",
    )
    parser.add_argument("--out", default=None, help=f"JSON output (default RUN_DIR/{DEFAULT_OUTPUT})")
    return parser


def main(argv: Sequence[str] | None = None) -> dict:
    """Command-line entry point; returns the summary it wrote."""
    args = build_parser().parse_args(argv)
    quiet()
    tasks = parse_tasks(args.tasks)
    limit = args.limit
    if limit is not None and limit >= 1:
        if limit != int(limit):
            raise SystemExit(f"--limit: a count must be a whole number, got {limit}")
        limit = int(limit)
    batch_size = args.batch_size if args.batch_size == "auto" else int(args.batch_size)
    run_dir = Path(args.run_dir)
    # Cheap checks first: resolving a run folder may have to merge and write the model.
    if not is_run_folder(run_dir):
        check_model_dir(run_dir)
    check_tasks(tasks, args.include_path, args.allow_code_execution)
    model_dir = resolve_model_dir(run_dir)
    out = Path(args.out) if args.out else run_dir / DEFAULT_OUTPUT
    summary = run_benchmarks(
        model_dir,
        tasks,
        limit=limit,
        include_path=args.include_path,
        batch_size=batch_size,
        device=args.device,
        dtype=args.dtype,
        allow_code_execution=args.allow_code_execution,
        output=out,
    )
    print(format_table(summary))
    log.info("written to %s", out)
    return summary
