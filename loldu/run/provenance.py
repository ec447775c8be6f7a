"""What a run's ``metrics.json`` records so that two runs can be compared: the size of the adapter on disk, the
package versions, the git commit of the source tree that ran, and the device (:func:`run_record`).

Torch-light: torch is imported inside the functions that need it, and nothing here raises for a missing package,
git binary or checkout (the value is null instead). ``loldu.run.skeleton`` calls :func:`run_record` on rank zero,
after the adapter and its card are written.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

#: Packages whose versions a run records (``versions``), besides ``python`` and ``cuda``.
PACKAGES = ("torch", "transformers", "peft", "lightning", "loldu")

#: Files of ``adapter/`` counted in ``adapter_bytes``: the weights, not the configs and cards beside them.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")

#: Seconds each git command may take before its value is recorded as null.
GIT_TIMEOUT_S = 5

_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # SHA-1 and SHA-256 repositories


def run_record(trainer: Any, out: str | Path) -> dict[str, Any]:
    """The keys a run adds to ``metrics.json``: :func:`adapter_sizes` of ``out/adapter``, ``versions``
    (:func:`versions`), ``git`` (:func:`source_git`) and ``device`` (:func:`device_record` of ``trainer``)."""
    return {
        **adapter_sizes(Path(out) / "adapter"),
        "versions": versions(),
        "git": source_git(),
        "device": device_record(trainer),
    }


def adapter_sizes(folder: str | Path) -> dict[str, int | None]:
    """``{"adapter_bytes": bytes of the weight files (WEIGHT_SUFFIXES) under folder, "adapter_dir_bytes": bytes of
    every file under it}``, subfolders included and links not followed; both None when ``folder`` is no folder."""
    folder = Path(folder)
    if not folder.is_dir():
        return {"adapter_bytes": None, "adapter_dir_bytes": None}
    weights = total = 0
    for path in folder.rglob("*"):
        if path.is_symlink() or not path.is_file():
            continue
        size = path.stat().st_size
        total += size
        if path.name.endswith(WEIGHT_SUFFIXES):
            weights += size
    return {"adapter_bytes": weights, "adapter_dir_bytes": total}


def package_version(name: str) -> str | None:
    """The installed distribution's version of ``name``; None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    """``{"python", "torch", "transformers", "peft", "lightning", "loldu", "cuda"}``: versions of the interpreter,
    the installed distributions (None when one is not installed) and the CUDA torch was built with (None for a CPU
    build or without torch). torch's is ``torch.__version__``, which keeps the build's label (``2.5.1+cu124``,
    ``+cpu``) that its distribution's metadata may drop."""
    record: dict[str, str | None] = {"python": platform.python_version()}
    record.update({name: package_version(name) for name in PACKAGES})
    try:
        import torch
    except ImportError:
        record["cuda"] = None
    else:
        record["torch"] = str(torch.__version__)
        record["cuda"] = torch.version.cuda
    return record


def source_root() -> Path:
    """The folder above the running ``loldu`` package (a checkout's root when it runs from one)."""
    import loldu

    return Path(loldu.__file__).resolve().parent.parent


@functools.cache
def source_git() -> dict[str, str | bool | None]:
    """:func:`git_record` of :func:`source_root`, asked once per process; nulls unless ``loldu/__init__.py`` is a
    tracked file there (an installed copy under a checkout's ignored ``.venv`` is not that checkout's code)."""
    return git_record(source_root(), tracked="loldu/__init__.py")


def git_record(folder: str | Path, tracked: str | None = None) -> dict[str, str | bool | None]:
    """``{"commit": HEAD's sha or None, "dirty": whether a tracked file differs from HEAD, or None}`` of the git
    checkout holding ``folder``. Both None when ``folder`` is in no checkout, git is missing or slow
    (:data:`GIT_TIMEOUT_S` per command), or ``tracked`` (a path relative to ``folder``) is not a tracked file.
    Untracked files do not make a tree dirty."""
    nothing = {"commit": None, "dirty": None}
    if tracked is not None and _git(folder, "ls-files", "--error-unmatch", "--", tracked) is None:
        return nothing
    head = _git(folder, "rev-parse", "--verify", "HEAD")
    status = _git(folder, "status", "--porcelain", "--untracked-files=no")
    commit = head.strip() if head is not None and _SHA.fullmatch(head.strip()) else None
    return {"commit": commit, "dirty": None if status is None else bool(status.strip())}


def _git(folder: str | Path, *args: str) -> str | None:
    """The stdout of ``git -C folder *args``; None when it fails, times out or git is not installed."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0"}  # status takes no index lock
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return done.stdout if done.returncode == 0 else None


def device_record(trainer: Any) -> dict[str, Any]:
    """``{"accelerator": "cuda", "cpu", "mps"..., "name": the device's model, "count": trainer.num_devices}`` of
    the device the trainer's strategy ran the module on (its root device: Lightning moves the module back to the
    CPU when fit ends, so the module's own device no longer says)."""
    device = trainer.strategy.root_device
    return {"accelerator": device.type, "name": device_name(device), "count": trainer.num_devices}


def device_name(device: Any) -> str:
    """The model of ``device`` (a ``torch.device``): ``torch.cuda.get_device_name`` for CUDA, the CPU's model
    otherwise (:func:`cpu_name`)."""
    if device.type == "cuda":
        import torch

        try:
            return torch.cuda.get_device_name(device)
        except Exception:  # noqa: BLE001 - a name is not worth failing a finished run
            return "cuda"
    return cpu_name()


@functools.cache
def cpu_name() -> str:
    """The CPU's model: ``model name`` of ``/proc/cpuinfo`` (Linux), else ``platform.processor()``, else ``"cpu"``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or "cpu"
