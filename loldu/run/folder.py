"""Run folders that can be trusted: files appear complete or not at all, one run per folder, and ``status.json``
says whether the run is running, finished or failed (with the error's first line).

``status.json`` holds ``{"status": "running" | "finished" | "failed" | "skipped", "error": <one line or null>,
"warning": <why a finished run's numbers are doubtful (diverged, at chance) or null>,
"started_at": <ISO time>, "ended_at": <ISO time or null>, "pid": <int>, "host": <str>}``. A folder with a
``metrics.json`` and no ``status.json`` is a finished run of an older version of this project.

Files are written to a temporary name in the same folder and renamed (:func:`os.replace`) once complete, so a
reader (``python -m loldu.report``, a crashed run's folder) never sees half a file. Under several processes
(DDP) only rank 0 writes. Imports no torch.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import secrets
import shutil
import socket
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from loldu.config.refusal import USER_ERRORS, mark_refusal
from loldu.config.run_dir import STATUS_FILE, is_finished
from loldu.config.run_lock import hold_run_folder, launched_rank_zero, release_run_folder

log = logging.getLogger(__name__)

# any of these in a folder: a run has used it (older runs wrote no status.json)
RUN_FILES = (STATUS_FILE, "config.yaml", "metrics.json")
# skipped: the run decided before any work not to run (RunSkipped), e.g. a sweep's rank above the full rank
STATUSES = ("running", "finished", "failed", "skipped")


def is_rank_zero() -> bool:
    """Whether this process writes the run folder: global rank 0 of a multi-process run, or a single process.

    Once Lightning is loaded its rank (set by the strategy when it starts) decides; before that, and without
    torch, the launcher's environment (``RANK``, ``LOCAL_RANK``, ``NODE_RANK``, ``SLURM_PROCID``...).
    """
    if "lightning" in sys.modules:
        from lightning.fabric.utilities.rank_zero import rank_zero_only

        if getattr(rank_zero_only, "rank", 0) != 0:
            return False
    return launched_rank_zero()


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (nan, inf) replaced by None, in nested dicts, lists and tuples."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder, renamed once complete.

    Returns:
        ``path``.
    """
    path = Path(path)
    tmp = _write_temporary(path, text)
    try:
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _write_temporary(path: Path, text: str) -> Path:
    """``text`` in a new file ``.<name>.tmp-<pid>-<random>`` next to ``path``, flushed to disk."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(tmp, "x", encoding="utf-8") as fh:  # the usual permissions (umask), unlike mkstemp's 0600
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as strict JSON (non-finite floats become null, see :func:`json_safe`), atomically."""
    return atomic_write_text(path, json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Fill a folder under a temporary name (``<name>.tmp-<pid>-<random>``) and rename it to ``path`` once the
    block ends without an error (unless nothing was written into it); on an error the temporary folder is removed
    and ``path`` is left as it was.

    Yields:
        the temporary folder to write into.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if any(tmp.iterdir()):  # nothing written (e.g. a model without save_pretrained): no folder
            _replace_dir(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _replace_dir(tmp: Path, path: Path, attempts: int = 3) -> None:
    """Rename folder ``tmp`` to ``path``; an existing ``path`` (non-empty folders cannot be renamed over) is moved
    aside first and removed after, also when another process put it there in the meantime."""
    old = tmp.with_name(tmp.name.replace(".tmp-", ".old-", 1))
    for attempt in range(attempts):
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                os.replace(path, old)
        try:
            os.replace(tmp, path)
            break
        except OSError:  # ENOTEMPTY/EEXIST: another process renamed its folder in between
            if attempt == attempts - 1:
                raise
    shutil.rmtree(old, ignore_errors=True)


def _now() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def _record(status: str, error: str | None = None, started_at: str | None = None, warning: str | None = None) -> dict:
    now = _now()
    ended = None if status == "running" else now
    return {
        "status": status,
        "error": error,
        "warning": warning,
        "started_at": started_at or now,
        "ended_at": ended,
        "pid": os.getpid(),
        "host": socket.gethostname(),
    }


def one_line(error: BaseException) -> str:
    """``"<ExceptionType>: <first line of the message>"`` (at most 500 characters)."""
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return text if len(text) <= 500 else text[:497] + "..."


def write_status(
    run_dir: str | Path,
    status: str,
    error: str | None = None,
    started_at: str | None = None,
    warning: str | None = None,
) -> dict:
    """Write ``run_dir/status.json`` atomically (rank 0 only); returns the record.

    Args:
        run_dir: the run folder.
        status: ``running``, ``finished``, ``failed`` or ``skipped``.
        error: the error's one line (``failed``), or why the run was skipped.
        started_at: when the run started (ISO time); None: now.
        warning: what makes a finished run's numbers doubtful (it diverged, or ended at chance), or None.
    """
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
    record = _record(status, error, started_at, warning)
    if is_rank_zero():
        write_json(Path(run_dir) / STATUS_FILE, record)
    return record


def claim_run_dir(run_dir: str | Path, reuse: bool = False) -> dict:
    """Make ``run_dir`` this run's folder: create it, take its lock (:func:`loldu.config.run_lock.hold_run_folder`,
    held until :func:`tracked_run` ends), refuse it if a run already used it, mark it ``running``.

    The ``running`` status is linked into place only if no ``status.json`` exists, so of two processes started
    on one folder exactly one gets it, even where the lock cannot work (a network file system). Other ranks than 0
    of a multi-process run only create the folder.

    Args:
        run_dir: the run folder (created if missing).
        reuse: take a folder that holds a run anyway (resuming it).

    Returns:
        the ``running`` status record.

    Raises:
        RunFolderBusy: another live process holds the folder (naming its pid, host and start time).
        FileExistsError: ``run_dir`` already holds a run (naming what it found and the fix).
        ValueError: ``reuse`` of a folder whose run finished (a result is never marked running again).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    record = _record("running")
    if not is_rank_zero():
        return record
    if not reuse and (found := [name for name in RUN_FILES if (run_dir / name).exists()]) and not _refused(run_dir):
        raise FileExistsError(f"{run_dir} already holds a run ({_describe(run_dir, found)}): {_REUSE_HINT}")
    took = hold_run_folder(run_dir)
    try:
        return _claim(run_dir, record, reuse)
    except BaseException:
        if took and not _claimed_here(run_dir):  # refused: the folder is left to whoever holds it
            release_run_folder(run_dir)
        raise


def _claimed_here(run_dir: Path) -> bool:
    """Whether ``status.json`` was written by this process (another thread of it won the claim)."""
    try:
        return json.loads((run_dir / STATUS_FILE).read_text()).get("pid") == os.getpid()
    except (OSError, ValueError, AttributeError):
        return False


def _claim(run_dir: Path, record: dict, reuse: bool) -> dict:
    if reuse:
        if is_finished(run_dir):  # a finished run is a result: never mark it running again
            raise ValueError(f"resume={run_dir}: that run finished; nothing to resume (start a new run)")
        write_json(run_dir / STATUS_FILE, record)
        return record
    found = [name for name in RUN_FILES if (run_dir / name).exists()]
    if found == [STATUS_FILE] and _refused(run_dir):  # a run refused before any work: nothing to keep, retry here
        (run_dir / STATUS_FILE).unlink(missing_ok=True)
        found = []
    if not found:
        if _create_exclusive(run_dir / STATUS_FILE, json.dumps(record, indent=2) + "\n"):
            return record
        found = [STATUS_FILE]
    raise FileExistsError(f"{run_dir} already holds a run ({_describe(run_dir, found)}): {_REUSE_HINT}")


_REUSE_HINT = "each run needs its own folder; leave hydra.run.dir at its default (unique per run) or pick a new one"


def _refused(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds only a run refused before it wrote anything (failed, no config.yaml)."""
    try:
        return json.loads((run_dir / STATUS_FILE).read_text()).get("status") == "failed"
    except (OSError, ValueError, AttributeError):
        return False


def _create_exclusive(path: Path, text: str) -> bool:
    """Create ``path`` holding ``text`` unless it exists (False then); readers never see it half written."""
    tmp = _write_temporary(path, text)
    try:
        os.link(tmp, path)  # atomic, and fails if the file exists
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links: exclusive creation, then the content
        try:
            with open(path, "x", encoding="utf-8") as fh:
                fh.write(text)
        except FileExistsError:
            return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


def _describe(run_dir: Path, found: list[str]) -> str:
    try:
        status = json.loads((run_dir / STATUS_FILE).read_text())
        return f"status.json: {status.get('status')}, pid {status.get('pid')} on {status.get('host')}"
    except (OSError, ValueError, AttributeError):
        return "it has " + ", ".join(found)


def run_warning(run_dir: Path) -> str | None:
    """The ``health.reason`` of the run's metrics.json (a run that diverged or ended at chance), else None."""
    try:
        return (json.loads((run_dir / "metrics.json").read_text()).get("health") or {}).get("reason")
    except (OSError, ValueError, AttributeError):
        return None


def mark_failed(run_dir: Path, error: BaseException, started: str) -> None:
    """Mark the run ``failed`` with the error's one line. When the folder cannot take the atomic write (a full
    disk: no room for the temporary copy; a folder made read-only), the record is written in place; when even that
    fails, the reason is logged, so the failure is never hidden behind the write's own error."""
    try:
        write_status(run_dir, "failed", one_line(error), started)
    except OSError as write_error:
        record = json.dumps(_record("failed", one_line(error), started)) + "\n"
        try:
            with open(run_dir / STATUS_FILE, "w", encoding="utf-8") as fh:
                fh.write(record)
        except OSError:
            log.error("run failed (%s) and %s could not be marked: %s", one_line(error), run_dir, one_line(write_error))
            return
    log.error("run failed; marked in %s: %s", run_dir / STATUS_FILE, one_line(error))


class RunSkipped(Exception):
    """Raised by a run that decides, before any work, not to run (e.g. a sweep's rank above the model's full rank
    with ``skip_unfit_ranks``): :func:`tracked_run` marks its folder ``skipped`` with the message and returns None."""


def tracked_run(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate ``train(cfg)``: claim ``cfg.output_dir`` (:func:`claim_run_dir`), then mark it ``finished`` when
    ``fn`` returns, ``skipped`` with the reason when it raises :class:`RunSkipped` (None is returned), or ``failed``
    with the error's one line when it raises anything else (the error is raised on)."""

    @functools.wraps(fn)
    def wrapper(cfg: Any, *args: Any, **kwargs: Any) -> Any:
        run_dir = Path(cfg.output_dir)
        try:
            started = claim_run_dir(run_dir, reuse=bool(getattr(cfg, "resume", None)))["started_at"]  # resume=
        except USER_ERRORS as error:  # a folder another run holds is left as it is
            mark_refusal(error)
            raise
        try:
            result = fn(cfg, *args, **kwargs)
        except RunSkipped as skipped:
            write_status(run_dir, "skipped", str(skipped), started)
            log.warning("run skipped; marked in %s: %s", run_dir / STATUS_FILE, skipped)
            return None
        except BaseException as error:  # KeyboardInterrupt and SystemExit too: the run did not finish
            mark_failed(run_dir, error, started)
            raise
        else:
            try:
                write_status(run_dir, "finished", None, started, warning=run_warning(run_dir))
            except OSError as error:  # a full disk at the very end: the run is not a result
                mark_failed(run_dir, error, started)
                raise
        finally:
            release_run_folder(run_dir)
        return result

    return wrapper
