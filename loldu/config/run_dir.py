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

from loldu.config.run_lock import hold_run_folder
from loldu.config.saved import read_saved_overrides

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
        if found is None:
            return new_dir
        hold_run_folder(found)  # before Hydra writes into it; refuses a run another process is resuming
        return str(found)
    if not Path(str(resume)).is_dir():
        raise FileNotFoundError(f"resume={resume}: no such run folder (give a run folder, or resume=auto)")
    return str(resume)


def hydra_record_dir(resume: Any, *, _root_: DictConfig) -> str | None:
    """``hydra.output_subdir``: ``.hydra`` for a new run; None (Hydra writes no record) when the run continues an
    existing run folder (``hydra.run.dir`` holds a config.yaml), so that the folder keeps the record of the run
    that made it: a resumption must match it anyway, and a refused one must not overwrite what the next
    ``resume=<run dir>`` reads."""
    if resume in (None, ""):
        return ".hydra"
    return None if (Path(str(_root_.hydra.run.dir)) / "config.yaml").is_file() else ".hydra"


def run_stamp() -> str:
    """``<date>/<time>-<microseconds>-<pid>`` (``2026-11-25/03-25-01-123456-4242``): the start of a run folder's
    path (conf/hydra/default.yaml) that no other run shares, even one started in the same second."""
    return f"{datetime.now():%Y-%m-%d/%H-%M-%S-%f}-{os.getpid()}"


#: Flags of a command line that runs nothing in the folder it names (or runs several jobs in their own folders).
NO_RUN = {"-m", "--multirun", "--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "--resolve", "-p", "--package"}
#: Overrides a resumed run never takes from the saved ones: where it runs, and Hydra's own settings.
NOT_RESUMED = ("resume", "output_dir", "hydra")


def override_key(override: str) -> str:
    """The key an override sets (``+task.x=1`` -> ``task.x``, ``~logger`` -> ``logger``)."""
    return override.lstrip("+~").split("=", 1)[0].strip()


def run_arguments(argv: list[str]) -> list[str]:
    """The command line a run composes from, with the folder it names locked before Hydra writes into it.

    ``resume=<run dir>``: the run's own overrides (its ``.hydra/overrides.yaml``, read as data) that the command
    line does not set come first, so that ``python train.py resume=<run dir>`` alone continues with the run's
    settings (a sweep job's preset runs as a single run: ``hydra.mode=RUN``). ``hydra.run.dir=<folder>``: that
    folder is locked. Other command lines come back unchanged (a new run's default folder is unique to it;
    ``resume=auto`` picks and locks its folder while composing).

    Raises:
        FileNotFoundError: ``resume`` names no folder, or a folder that holds no run.
        RunFolderBusy: another process holds that run folder.
        UnsafeRunFolder: its saved overrides are not plain data.
    """
    given = [a for a in argv[1:] if not a.startswith("-") and "=" in a]
    values = {override_key(a): a.split("=", 1)[1].strip("'\"") for a in given}
    resume = values.get("resume")
    if resume in (None, "", "auto", "null", "None"):
        if values.get("hydra.run.dir") and not set(argv) & NO_RUN:
            hold_run_folder(values["hydra.run.dir"])
        return argv
    run_dir = Path(resume)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"resume={resume}: no such run folder (give a run folder, or resume=auto)")
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"resume={resume}: {run_dir} is not a run folder (no config.yaml): nothing to resume")
    hold_run_folder(run_dir)
    own = {override_key(a) for a in given}
    saved = [
        o
        for o in read_saved_overrides(run_dir)
        if override_key(o) not in own and override_key(o).split(".")[0].split("/")[0] not in NOT_RESUMED
    ]
    if any(override_key(o) == "sweep" for o in saved):
        saved.append("hydra.mode=RUN")  # the job of a sweep preset: this one job, not the sweep again
    return argv[:1] + saved + argv[1:]
