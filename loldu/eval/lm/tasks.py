"""lm-eval task names for :mod:`loldu.eval.lm`: the paper's suite, parsing ``--tasks``, checking names and unsafe tasks.

Every check here runs before lm-eval loads a model or any data set.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Mapping, Sequence
from pathlib import Path

from loldu.eval.lm.results import lm_eval_version

PAPER_SUITE: dict[str, int] = {"mmlu": 5, "bbh_fewshot": 3, "drop": 3, "humaneval": 0}


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


def include_paths(include_path) -> tuple[str, ...]:
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
    paths = include_paths(include_path)
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
        where = f"lm-eval {lm_eval_version()}" + (f" and {', '.join(paths)}" if paths else "")
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
