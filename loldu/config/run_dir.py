"""Which folder a run writes to, chosen while Hydra composes the config (``conf/hydra/default.yaml``): a new
stamped folder, the folder of ``resume=<run dir>``, or for ``resume=auto`` the newest unfinished run of the same
model, task and method. Torch-free: it reads only what a run folder records (``status.json``, ``.hydra/``).
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig

#: A run folder's status record (written by :mod:`loldu.run.folder`).
STATUS_FILE = "status.json"
#: The resumable checkpoint inside a run folder (written by :class:`loldu.run.checkpointing.ResumableCheckpoint`).
CHECKPOINT = Path("checkpoints") / "last.ckpt"


def hydra_choices(run_dir: str | Path) -> dict[str, str]:
    """The config-group choices (model, task, method...) Hydra recorded for a run (``.hydra/hydra.yaml``); empty for
    a run outside Hydra or an unreadable file."""
    try:
        choices = yaml.safe_load((Path(run_dir) / ".hydra" / "hydra.yaml").read_text())["hydra"]["runtime"]["choices"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return {}
    return {k: v for k, v in choices.items() if v is not None} if isinstance(choices, dict) else {}


def is_finished(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a finished run (``status.json`` says so; older runs: a ``metrics.json``)."""
    status = run_dir / STATUS_FILE
    if status.is_file():
        try:
            return json.loads(status.read_text()).get("status") == "finished"
        except (OSError, ValueError, AttributeError):
            return False
    return (run_dir / "metrics.json").is_file()


def find_unfinished(root: Path, model: str, task: str, method: str) -> Path | None:
    """The newest run folder under ``root`` of this model, task and method with a resumable checkpoint and
    no finished run (None when there is none)."""
    want = {"model": model, "task": task, "method": method}
    candidates = []
    for ckpt in root.glob(f"**/{CHECKPOINT.as_posix()}"):
        run_dir = ckpt.parents[1]
        choices = hydra_choices(run_dir)
        if not is_finished(run_dir) and all(choices.get(k) == v for k, v in want.items()):
            candidates.append((ckpt.stat().st_mtime, run_dir))
    return max(candidates)[1] if candidates else None


def resume_run_dir(resume: Any, new_dir: str, *, _root_: DictConfig) -> str:
    """``hydra.run.dir``: ``new_dir`` for a new run, the folder of ``resume=<run dir>``, or for ``resume=auto``
    the newest unfinished run of the same model/task/method under ``outputs/`` (``new_dir`` when none).

    Raises:
        FileNotFoundError: ``resume`` names a folder that does not exist.
    """
    if resume in (None, ""):
        return new_dir
    if resume == "auto":
        choices = _root_.hydra.runtime.choices
        root = Path(new_dir).parents[1]  # outputs/<date>/<run>: search all of outputs/
        found = find_unfinished(root, choices.model, choices.task, choices.method)
        return str(found) if found is not None else new_dir
    if not Path(str(resume)).is_dir():
        raise FileNotFoundError(f"resume={resume}: no such run folder (give a run folder, or resume=auto)")
    return str(resume)


def run_stamp() -> str:
    """``<date>/<time>-<microseconds>-<pid>`` (``2026-11-25/03-25-01-123456-4242``): the start of a run folder's
    path (conf/hydra/default.yaml) that no other run shares, even one started in the same second."""
    return f"{datetime.now():%Y-%m-%d/%H-%M-%S-%f}-{os.getpid()}"
