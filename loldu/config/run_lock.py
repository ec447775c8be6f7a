"""One process per run folder: an exclusive lock (``filelock``'s flock on ``<run>/.run.lock``) held from the moment
a process picks the folder until it exits, and a record of its holder (``<run>/.run.lock.json``: pid, host, start
time, command) so that a second process refuses at once, naming who holds it.

The operating system releases an flock when its process dies, however it dies, so a killed run never blocks its
own resumption; the holder record it leaves behind (removed on a normal exit) tells the next process that it took
over a dead run's lock, which it says. Torch-free: ``resume=`` takes the lock before Hydra writes into the folder.
Local file systems only: on a network file system without flock, two machines can still share a folder.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)

LOCK_FILE = ".run.lock"
HOLDER_FILE = ".run.lock.json"
_HELD: dict[Path, FileLock] = {}
_GUARD = threading.Lock()  # threads of one process share its locks


class RunFolderBusy(RuntimeError):
    """Another live process holds the run folder."""


def launched_rank_zero() -> bool:
    """Whether the launcher's environment (``RANK``, ``LOCAL_RANK``, ``NODE_RANK``, ``SLURM_PROCID``...) makes this
    process rank 0 (the one that owns the run folder); True for a single process."""
    ranks = (os.environ.get(k) for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"))
    return all(r.strip() in ("", "0") for r in ranks if r is not None)


def read_holder(run_dir: str | Path) -> dict | None:
    """The holder record of a run folder's lock (None when there is none or it cannot be read)."""
    try:
        record = json.loads((Path(run_dir) / HOLDER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def describe_holder(record: dict | None) -> str:
    """``pid 4242 on host-a since 2026-12-05T23:50:01+00:00`` (or that the holder is unknown)."""
    if not record:
        return "a process that left no record"
    return f"pid {record.get('pid')} on {record.get('host')} since {record.get('started_at')}"


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def hold_run_folder(run_dir: str | Path) -> bool:
    """Take the run folder's lock for the rest of this process (again: a no-op); other ranks than 0 of a
    multi-process run share their rank 0's folder and take nothing.

    Returns:
        True when this call took the lock, False when this process already held it (or is not rank 0).

    Raises:
        RunFolderBusy: another live process holds it, naming its pid, host and start time.
    """
    with _GUARD:
        return _hold(Path(run_dir))


def _hold(run_dir: Path) -> bool:
    folder = run_dir.resolve()
    if folder in _HELD or not launched_rank_zero():
        return False
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / LOCK_FILE), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunFolderBusy(
            f"{run_dir} is in use by {describe_holder(read_holder(folder))}: one process per run folder. Wait for "
            "it to end or stop it (a killed process releases the folder at once), or start a new run"
        ) from None
    previous = read_holder(folder)
    if previous and previous.get("pid") != os.getpid():
        dead = previous.get("host") == socket.gethostname() and not _alive(previous.get("pid"))
        log.warning(
            "%s: took over the run folder from %s, %s",
            run_dir,
            describe_holder(previous),
            "which is no longer running (killed?)" if dead else "which left it without a clean exit",
        )
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started_at": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
        "command": sys.argv,
    }
    tmp = folder / f".{HOLDER_FILE}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, folder / HOLDER_FILE)
    _HELD[folder] = lock
    return True


def release_run_folder(run_dir: str | Path) -> None:
    """Give the run folder's lock back and remove the holder record (at exit for every folder held)."""
    folder = Path(run_dir).resolve()
    with _GUARD:
        lock = _HELD.pop(folder, None)
    if lock is None:
        return
    record = read_holder(folder)
    if record and record.get("pid") == os.getpid():
        (folder / HOLDER_FILE).unlink(missing_ok=True)
    lock.release(force=True)


@atexit.register
def _release_all() -> None:
    for folder in list(_HELD):
        try:
            release_run_folder(folder)
        except OSError:  # a folder removed meanwhile: the lock goes with the process anyway
            pass
