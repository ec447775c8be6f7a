"""lm-evaluation-harness benchmarks of a finished language-model run.

    python -m loldu.eval.lm RUN_DIR [--tasks paper|name[:shots],...] [--limit N]
        [--include-path DIR] [--batch-size N] [--device cpu|cuda]
        [--dtype auto|bfloat16|float32] [--allow-code-execution] [--out FILE]

``RUN_DIR`` is a run folder of ``train.py`` (it holds ``config.yaml``; its merged
model ``RUN_DIR/merged`` is written first if missing) or directly a Hugging
Face model folder (``config.json`` and tokenizer files). Results go to
``RUN_DIR/benchmarks.json`` unless ``--out`` says otherwise.

The paper's suite (:data:`PAPER_SUITE`), for instruction-tuned LLaMA2-7B, in
lm-eval 0.4.13 task names. The shot counts are those of the InstructEval suite
(MMLU 5, BBH 3, DROP 3, HumanEval 0), whose BBH prompts are answer-only:

* ``mmlu``, 5-shot (accuracy; few-shot examples are the dev split, in order).
* ``bbh_fewshot``, 3-shot: the 27 BIG-Bench Hard subtasks, each with three
  answer-only exemplars built into its YAML, scored by exact match of the
  direct answer. ``bbh_cot_fewshot`` uses chain-of-thought exemplars and
  ``bbh`` is an alias group of those, so neither is the matching task.
  Differences that remain: lm-eval's exemplars and "Q:/A:" format are the
  BBH paper's, and its group score is weighted by subtask size, where
  InstructEval takes the first three test items as exemplars, counts a
  prediction that starts with the target, and averages subtasks unweighted.
* ``drop``, 3-shot (exact match and F1; few-shot examples from the train split).
* ``humaneval``, 0-shot pass@1 with greedy decoding. It runs model-written
  code: it needs ``--allow-code-execution`` (which sets ``HF_ALLOW_CODE_EVAL=1``
  and confirms lm-eval's unsafe-code prompt); use a sandbox.

Prompts are given as plain text without a chat template, as in the paper's
evaluation. Everything (model folder, task names, unsafe tasks) is checked
before lm-eval loads the model or any data.

``benchmarks/lm_eval_tasks`` holds a small offline task (``loldu_local_mc``,
multiple choice; ``loldu_local_gen``, the same items as short generation):
``--tasks loldu_local_mc:2 --include-path benchmarks/lm_eval_tasks``.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

PAPER_SUITE: dict[str, int] = {"mmlu": 5, "bbh_fewshot": 3, "drop": 3, "humaneval": 0}
DTYPES = ("auto", "bfloat16", "float16", "float32")
DEFAULT_OUTPUT = "benchmarks.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


# -- finding the model ---------------------------------------------------------------
def resolve_model_dir(run_dir: str | Path) -> Path:
    """The model folder to evaluate for ``run_dir``.

    A run folder (with ``config.yaml``) gives ``run_dir/merged``, which
    :func:`loldu.runs.ensure_merged` writes first if it is missing; any other
    folder is taken as a Hugging Face model folder.

    Raises:
        FileNotFoundError: ``run_dir`` does not exist, or is neither a run folder
            nor a model folder.
    """
    run_dir = Path(run_dir)
    if not _is_run_folder(run_dir):
        return run_dir
    merged = run_dir / "merged"
    if (merged / "config.json").is_file():
        return merged
    from loldu.runs import ensure_merged

    return Path(ensure_merged(run_dir))


def _is_run_folder(run_dir: Path) -> bool:
    """True for a run folder, False for a model folder; refuses anything else."""
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} does not exist (expected a run folder or a model folder)")
    if (run_dir / "config.yaml").is_file():
        return True
    if (run_dir / "config.json").is_file():
        return False
    raise FileNotFoundError(
        f"{run_dir} is neither a run folder (no config.yaml) nor a Hugging Face model folder (no config.json)"
    )


def check_model_dir(model_dir: str | Path) -> Path:
    """Refuse a folder lm-eval's ``hf`` model cannot load, before loading anything.

    Raises:
        FileNotFoundError: no ``config.json`` or no tokenizer files in ``model_dir``.
    """
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        hint = " (a diffusion run? its merged UNet is not a language model)" if (model_dir / "unet").is_dir() else ""
        raise FileNotFoundError(
            f"{model_dir} has no config.json{hint}: pass a merged model folder (e.g. RUN_DIR/merged, written by "
            "loldu.runs.ensure_merged) or, on the command line, the run folder itself (with config.yaml)"
        )
    if not any((model_dir / name).is_file() for name in TOKENIZER_FILES):
        raise FileNotFoundError(
            f"{model_dir} has no tokenizer files ({', '.join(TOKENIZER_FILES)}); save the tokenizer next to "
            "the model (tokenizer.save_pretrained(model_dir))"
        )
    return model_dir


# -- tasks ------------------------------------------------------------------------------
def parse_tasks(spec: str) -> dict[str, int | None]:
    """``"paper"`` or ``"name[:shots],name,..."`` (``paper`` may be one of the items) to ``{task: shots}``.

    ``shots`` None means the task's own default.

    Raises:
        ValueError: an empty name or a shot count that is not a whole number >= 0.
    """
    tasks: dict[str, int | None] = {}
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        if item == "paper":
            tasks.update(PAPER_SUITE)
            continue
        name, sep, shots = item.partition(":")
        name = name.strip()
        if not name:
            raise ValueError(f"task item {item!r} has no name; use name[:shots]")
        if not sep:
            tasks[name] = None
            continue
        try:
            value = int(shots)
        except ValueError:
            value = -1
        if value < 0:
            raise ValueError(f"task item {item!r}: shots must be a whole number >= 0, got {shots!r}")
        tasks[name] = value
    if not tasks:
        raise ValueError(f"no tasks in {spec!r}; use 'paper' or name[:shots],name,...")
    return tasks


def _include_paths(include_path) -> tuple[str, ...]:
    if include_path is None:
        return ()
    items = [include_path] if isinstance(include_path, (str, Path)) else list(include_path)
    paths = []
    for item in items:
        path = Path(item).expanduser().resolve()
        if not path.is_dir():
            raise FileNotFoundError(f"include path {item} is not a folder of lm-eval task YAML files")
        paths.append(str(path))
    return tuple(paths)


@functools.lru_cache(maxsize=8)
def _task_manager(include_paths: tuple[str, ...], include_defaults: bool):
    """An lm-eval TaskManager, cached: indexing lm-eval's own ~15k YAML files takes a while."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=list(include_paths) or None, include_defaults=include_defaults)


def task_manager_for(tasks: Sequence[str], include_path=None):
    """The TaskManager that knows ``tasks``, checked.

    Plain tasks found in ``include_path`` alone are served by a manager over
    that path only (fast); otherwise lm-eval's built-in registry is indexed too.

    Raises:
        ValueError: unknown task names, with the closest registered names.
        FileNotFoundError: an include path that is not a folder.
    """
    paths = _include_paths(include_path)
    local = _task_manager(paths, False) if paths else None
    if local is not None and all(_is_self_contained(local, name) for name in tasks):
        return local
    builtin = _task_manager((), True)
    known = set(builtin.all_tasks) | set(local.all_tasks if local is not None else ())
    unknown = [name for name in tasks if name not in known]
    if unknown:
        lines = []
        for name in unknown:
            close = difflib.get_close_matches(name, sorted(known), n=6, cutoff=0.6)
            lines.append(f"  {name}: did you mean {', '.join(close)}?" if close else f"  {name}: no close match")
        where = f"lm-eval {_lm_eval_version()}" + (f" and {', '.join(paths)}" if paths else "")
        raise ValueError(f"unknown lm-eval task(s) (searched {where}):\n" + "\n".join(lines))
    return builtin if local is None else _task_manager(paths, True)


def check_tasks(tasks: Mapping[str, int | None], include_path=None, allow_code_execution: bool = False):
    """Check task names, shots and unsafe tasks; return the TaskManager to run them with.

    Raises:
        ValueError: no tasks, bad shots, unknown names, or an unsafe task
            without ``allow_code_execution``.
        FileNotFoundError: an include path that is not a folder.
    """
    if not tasks:
        raise ValueError("no tasks given; e.g. {'mmlu': 5} or PAPER_SUITE")
    for name, shots in tasks.items():
        if shots is not None and (not isinstance(shots, int) or isinstance(shots, bool) or shots < 0):
            raise ValueError(f"task {name!r}: shots must be None or a whole number >= 0, got {shots!r}")
    manager = task_manager_for(list(tasks), include_path)
    unsafe = unsafe_tasks(manager, list(tasks))
    if unsafe and not allow_code_execution:
        raise ValueError(
            f"tasks {unsafe} execute code the model writes; pass --allow-code-execution "
            "(allow_code_execution=True) to run them, preferably in a sandbox"
        )
    return manager


def _is_self_contained(manager, name: str) -> bool:
    """A task found in ``manager``'s index that is a plain task (not a group that may name outside tasks)."""
    entry = getattr(manager, "task_index", {}).get(name)
    return entry is not None and getattr(getattr(entry, "kind", None), "name", "") in ("TASK", "PY_TASK")


def unsafe_tasks(manager, tasks: Sequence[str]) -> list[str]:
    """The tasks (or groups containing tasks) marked ``unsafe_code`` (they execute model-written code)."""
    index = getattr(manager, "task_index", {})

    def unsafe(name_or_cfg, depth: int = 0) -> bool:
        if depth > 8:
            return False
        if isinstance(name_or_cfg, dict):
            if name_or_cfg.get("unsafe_code"):
                return True
            children = name_or_cfg.get("task")
            if isinstance(children, list):
                return any(unsafe(child, depth + 1) for child in children)
            return False
        entry = index.get(name_or_cfg)
        if entry is None:
            return False
        if getattr(entry, "cfg", None):
            return unsafe(entry.cfg, depth + 1)
        return any(unsafe(child, depth + 1) for child in sorted(getattr(entry, "tags", ()) or ()))

    return [name for name in tasks if unsafe(name)]


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

    import lm_eval

    if allow_code_execution:
        os.environ["HF_ALLOW_CODE_EVAL"] = "1"
    lm = _make_lm(model_dir, batch_size=batch_size, device=device, dtype=dtype)
    results: dict[str, dict[str, float]] = {}
    used_shots: dict[str, Any] = {}
    samples: dict[str, Any] = {}
    started = time.time()
    for name, shots in tasks.items():
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
        results.update(_main_metrics(name, raw))
        used_shots[name] = _shots_used(name, raw.get("n-shot", {}))
        samples[name] = _sample_counts(name, raw.get("n-samples", {}))
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
            "include_path": list(_include_paths(include_path)),
            "allow_code_execution": allow_code_execution,
            "lm_eval_version": _lm_eval_version(),
            "transformers_version": _version("transformers"),
            "seconds": round(time.time() - started, 1),
        },
    }
    if output is not None:
        output = Path(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def _make_lm(model_dir: Path, batch_size, device: str, dtype: str):
    """lm-eval's ``hf`` model, built once and shared by all tasks (as ``simple_evaluate(model="hf")`` builds it)."""
    from lm_eval.api.registry import get_model

    return get_model("hf").create_from_arg_obj(
        {"pretrained": str(model_dir), "dtype": dtype},
        {"batch_size": batch_size, "device": device},
    )


def _main_metrics(name: str, raw: dict) -> dict[str, dict[str, float]]:
    """``{name: {metric: value, metric_stderr: value}}`` from lm-eval's results (filter suffix dropped when unique).

    A group without aggregate metrics reports its subtasks instead.
    """
    table = raw.get("results", {})
    metrics = _row_metrics(table.get(name, {}))
    if metrics:
        return {name: metrics}
    return {task: m for task, row in table.items() if (m := _row_metrics(row))}


def _shots_used(name: str, n_shot: Mapping):
    """The shots lm-eval used: one number, or per subtask where a group's subtasks differ."""
    if name in n_shot:
        return n_shot[name]
    values = set(n_shot.values())
    return values.pop() if len(values) == 1 else dict(n_shot)


def _sample_counts(name: str, n_samples: Mapping) -> dict:
    """``{"original": N, "effective": n}`` documents, summed over a group's subtasks."""
    if name in n_samples:
        return dict(n_samples[name])
    return {key: sum(int(v.get(key) or 0) for v in n_samples.values()) for key in ("original", "effective")}


def _row_metrics(row: Mapping) -> dict[str, float]:
    parsed = []
    for key, value in row.items():
        if "," not in key or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        metric, _, filt = key.partition(",")
        parsed.append((metric, filt, float(value)))
    filters = {filt for _, filt, _ in parsed}
    out = {}
    for metric, filt, value in parsed:
        out[metric if len(filters) == 1 else f"{metric},{filt}"] = value
    return out


def _lm_eval_version() -> str | None:
    return _version("lm_eval")


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def format_table(summary: Mapping) -> str:
    """The results as a small text table: task, shots, metric, value, stderr."""
    rows = [("task", "shots", "metric", "value", "stderr")]
    shots = summary.get("settings", {}).get("shots_used", {})
    for task, metrics in summary.get("results", {}).items():
        for metric, value in metrics.items():
            if "_stderr" in metric:
                continue
            base, _, filt = metric.partition(",")
            stderr = metrics.get(f"{base}_stderr" + (f",{filt}" if filt else ""))
            shot = shots.get(task)
            if shot is None:  # a subtask reported for a group without aggregate metrics
                shot = next((v.get(task) for v in shots.values() if isinstance(v, dict) and task in v), None)
            rows.append(
                (
                    task,
                    "" if shot is None or isinstance(shot, dict) else str(shot),
                    metric,
                    f"{value:.4f}",
                    f"{stderr:.4f}" if isinstance(stderr, float) else "",
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


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
    tasks = parse_tasks(args.tasks)
    limit = args.limit
    if limit is not None and limit >= 1:
        if limit != int(limit):
            raise SystemExit(f"--limit: a count must be a whole number, got {limit}")
        limit = int(limit)
    batch_size = args.batch_size if args.batch_size == "auto" else int(args.batch_size)
    run_dir = Path(args.run_dir)
    # Cheap checks first: resolving a run folder may have to merge and write the model.
    if not _is_run_folder(run_dir):
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
    print(f"\nwritten to {out}", file=sys.stderr)
    return summary


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
