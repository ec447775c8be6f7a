"""Checkpoints written atomically, and the resumable checkpoint a killed run continues from (``resume=``).

:class:`AtomicCheckpoint` is Lightning's ModelCheckpoint whose files appear whole or not at all: Lightning
writes a temporary file and moves it into place, but from the system temp folder, and a move across file
systems is a copy that a kill can cut short. Here the file is first completed next to its final name and then
renamed over it (atomic on POSIX), so a kill during a save leaves the previous checkpoint intact.

:class:`ResumableCheckpoint` (``callbacks.resumable``) keeps ``checkpoints/last.ckpt`` every
``every_n_train_steps`` steps and at each epoch end: the trainable state (what
:meth:`~loldu.tasks.common.FineTuneModule.on_save_checkpoint` keeps, never the frozen base), optimizer,
scheduler and loop state (Lightning's own), plus what Lightning leaves out and an identical continuation needs:
the random number generators, the training loader's shuffling generator, and the position in the epoch.

Each checkpoint file has a ``<name>.sha256`` beside it (``sha256sum`` format: ``sha256sum -c last.ckpt.sha256`` in
``checkpoints/`` checks it by hand), and the resumable one keeps its predecessor as ``previous.ckpt``: before a new
``last.ckpt`` replaces the old one, the old one (when it matches its digest) becomes ``previous.ckpt``.
:func:`verify_checkpoint` checks ``last.ckpt`` before a run resumes from it, and names ``previous.ckpt`` when that
one verifies. The order of the renames (:meth:`AtomicCheckpoint._put_in_place`) leaves, wherever a kill falls, at
least one of the two matching its digest.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import random
import shutil
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import Sampler

from loldu.config.run_dir import CHECKPOINT
from loldu.methods import adapter_state_dict
from loldu.run.folder import atomic_write_text

log = logging.getLogger(__name__)


DIGEST_SUFFIX = ".sha256"
#: The resumable checkpoint's predecessor, beside it (``checkpoints/previous.ckpt``).
PREVIOUS_NAME = "previous"
_CHUNK = 1 << 20


def file_digest(path: str | Path, fsync: bool = False) -> str:
    """sha256 of a file's bytes (hex), read once; ``fsync``: its data is then flushed to disk (before the rename
    that publishes it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
        if fsync:
            os.fsync(fh.fileno())
    return digest.hexdigest()


def digest_path(path: str | Path) -> Path:
    """Where the digest of checkpoint ``path`` is kept: ``<path>.sha256``."""
    return Path(f"{path}{DIGEST_SUFFIX}")


def write_digest(path: str | Path, digest: str) -> Path:
    """Write ``<hex>  <name>`` (``sha256sum`` format) to ``<path>.sha256``, atomically; returns that file."""
    return atomic_write_text(digest_path(path), f"{digest}  {Path(path).name}\n")


def read_digest(path: str | Path) -> str | None:
    """The digest ``<path>.sha256`` records (None when there is no such file).

    Raises:
        ValueError: the file does not start with a sha256 (64 hexadecimal digits).
    """
    file = digest_path(path)
    if not file.is_file():
        return None
    words = file.read_text(errors="replace").split()
    digest = words[0].lower() if words else ""
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(
            f"{file} is not a sha256 digest file (it should hold '<64 hex digits>  {Path(path).name}'): it was "
            "damaged or edited; its checkpoint cannot be verified. Start a new run"
        )
    return digest


def matches_digest(path: str | Path) -> bool | None:
    """Whether checkpoint ``path`` matches its ``.sha256`` (None: it has no digest file; False: no file, or a
    digest file that is not one)."""
    try:
        want = read_digest(path)
    except ValueError:
        return False
    if want is None:
        return None
    return Path(path).is_file() and file_digest(path) == want


def _fsync_dir(folder: Path) -> None:
    """Make the renames in ``folder`` durable (where the system allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class AtomicCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that writes ``<name>.part`` and renames it to ``<name>`` once complete, with its digest
    ``<name>.sha256`` beside it.

    Attributes:
        keep_previous: keep the checkpoint a save replaces as ``previous.ckpt`` (with its digest), when it
            matches its own; :class:`ResumableCheckpoint` sets it.
    """

    keep_previous = False

    def _save_checkpoint(self, trainer: Any, filepath: str) -> None:
        part = f"{filepath}.part"
        super()._save_checkpoint(trainer, part)
        if trainer.is_global_zero:
            self._put_in_place(part, filepath)
        self._last_checkpoint_saved = filepath

    def _put_in_place(self, part: str, filepath: str) -> None:
        """Publish the complete ``part`` as ``filepath`` with its digest, keeping the old one as previous.

        The order makes every kill leave a checkpoint that matches its digest: (1) the old ``last.ckpt`` is
        hard-linked (or copied) to ``previous.ckpt.part``; (2) ``previous.ckpt.sha256`` gets its digest, then
        ``previous.ckpt.part`` is renamed into place, so ``last.ckpt`` still matches its digest meanwhile; (3)
        ``last.ckpt.sha256`` gets the new digest, then ``last.ckpt.part`` is renamed into place: between the two,
        ``last.ckpt`` does not match its digest but ``previous.ckpt``, the same checkpoint, does (and
        :func:`verify_checkpoint` says so). A sharded checkpoint (a folder) is renamed without a digest.
        """
        if not os.path.isfile(part):
            os.replace(part, filepath)
            return
        digest = file_digest(part, fsync=True)
        if self.keep_previous:
            self._keep_as_previous(Path(filepath))
        write_digest(filepath, digest)
        os.replace(part, filepath)
        _fsync_dir(Path(filepath).parent)

    def _keep_as_previous(self, last: Path) -> None:
        """Keep checkpoint ``last`` as ``previous<ext>`` beside it, if it matches its digest (or has none, as an
        older run's: it gets one now); a damaged one is not kept, so an older good previous stays."""
        if not last.is_file():
            return
        matches = matches_digest(last)
        if matches is False:
            log.warning("%s does not match its digest: not kept as the previous checkpoint", last)
            return
        digest = read_digest(last) if matches else file_digest(last)
        previous = last.with_name(f"{PREVIOUS_NAME}{self.FILE_EXTENSION}")
        part = previous.with_name(f"{previous.name}.part")
        part.unlink(missing_ok=True)
        try:
            os.link(last, part)  # no copy: the new last.ckpt replaces the name, not this file's data
        except OSError:
            shutil.copyfile(last, part)
        write_digest(previous, digest)
        os.replace(part, previous)

    def _remove_checkpoint(self, trainer: Any, filepath: str) -> None:
        """Remove a checkpoint Lightning no longer keeps (``save_top_k``), and its digest."""
        super()._remove_checkpoint(trainer, filepath)
        if trainer.is_global_zero:
            digest_path(filepath).unlink(missing_ok=True)


def _global_step(path: Path) -> int | None:
    """The ``global_step`` a checkpoint records (None where it cannot be read: a tensors-only load, no pickled
    code runs; the tensors are mapped, not read)."""
    try:
        step = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("global_step")
    except Exception:
        return None
    return int(step) if isinstance(step, int) else None


def _previous_hint(last: Path) -> str:
    """What to say about ``previous.ckpt`` beside ``last`` in a refusal."""
    previous = last.with_name(f"{PREVIOUS_NAME}{last.suffix}")
    if not previous.is_file():
        return "There is no previous checkpoint to fall back on: start a new run"
    if not matches_digest(previous):
        return f"Its previous checkpoint {previous} does not verify either: start a new run"
    step = _global_step(previous)
    at = f" (step {step})" if step is not None else ""
    return (
        f"Its previous checkpoint {previous}{at} verifies: to resume from it, move it and its {DIGEST_SUFFIX} "
        f"over {last.name} and {last.name}{DIGEST_SUFFIX}, or start a new run"
    )


def _why_no_match(path: Path) -> str:
    size = path.stat().st_size
    if not zipfile.is_zipfile(path):
        return f"it is incomplete ({size} bytes, not a whole checkpoint archive: cut short or overwritten)"
    return f"its bytes changed after it was saved ({size} bytes; e.g. a flipped bit on disk or an edit)"


def verify_checkpoint(run_dir: str | Path) -> str:
    """The checkpoint a resumed run continues from: ``<run_dir>/checkpoints/last.ckpt``, once checked.

    It must match its digest ``last.ckpt.sha256``; one without a digest (written before digests existed) is
    accepted with a logged warning. It must then read back as a checkpoint (what Lightning's resume does, without
    the tensors' data). Never falls back silently: when ``last.ckpt`` is refused and ``previous.ckpt`` verifies,
    the message says so and how to resume from it.

    Returns:
        The path of ``last.ckpt``.

    Raises:
        FileNotFoundError: there is no ``last.ckpt``.
        ValueError: ``last.ckpt`` does not match its digest (damaged, cut short, edited), its digest file is
            malformed, or it matches but cannot be read back (one line, naming the file and why).
    """
    last = Path(run_dir) / CHECKPOINT
    if not last.is_file():
        raise FileNotFoundError(f"{last} not found: the run has no resumable checkpoint. {_previous_hint(last)}")
    try:
        want = read_digest(last)
    except ValueError as error:
        raise ValueError(f"{error}. {_previous_hint(last)}") from None
    if want is None:
        log.warning(
            "%s has no digest (%s%s: written before checkpoints had one): resuming from it unverified",
            last,
            last.name,
            DIGEST_SUFFIX,
        )
    elif file_digest(last) != want:
        raise ValueError(
            f"{last} does not match its digest {last.name}{DIGEST_SUFFIX}: {_why_no_match(last)}. "
            f"{_previous_hint(last)}"
        )
    try:
        torch.load(last, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:
        first = (str(error).strip().splitlines() or [""])[0][:200]
        verified = "matches its digest but" if want is not None else "has no digest and"
        raise ValueError(
            f"{last} {verified} cannot be read back as a checkpoint ({type(error).__name__}: {first}): it was "
            f"written by another version of torch or of this code, or damaged before its digest. "
            f"{_previous_hint(last)}"
        ) from None
    return str(last)


def rng_state() -> dict:
    """The global random number generators' states (torch CPU and CUDA, Python, NumPy), checkpoint-safe types."""
    numpy = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(numpy["state"]["key"].astype(np.int64)),
            "pos": int(numpy["state"]["pos"]),
            "has_gauss": int(numpy["has_gauss"]),
            "gauss": float(numpy["gauss"]),
        },
    }


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(state["python"])
    numpy = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": numpy["key"].numpy().astype(np.uint32), "pos": numpy["pos"]},
            "has_gauss": numpy["has_gauss"],
            "gauss": numpy["gauss"],
        }
    )


def check_checkpoint_keys(module: torch.nn.Module, saved: dict) -> None:
    """Refuse a checkpoint that lacks a trainable entry of ``module`` or holds entries it does not have.

    The frozen base is never in a checkpoint (it is rebuilt from its source), so its absence is expected.

    Raises:
        ValueError: names the missing trainable or unknown keys.
    """
    expected = {name for name, p in module.named_parameters() if p.requires_grad}
    if hasattr(module, "model"):
        expected |= {f"model.{k}" for k in adapter_state_dict(module.model)}
    missing = sorted(expected - set(saved))
    unknown = sorted(set(saved) - set(module.state_dict()))
    if missing or unknown:
        raise ValueError(
            "the checkpoint does not match this model: "
            + (f"{len(missing)} trainable entries missing (e.g. {missing[:3]}) " if missing else "")
            + (f"{len(unknown)} entries this model does not have (e.g. {unknown[:3]}) " if unknown else "")
            + "- it was written by another model, method or version of the code; start a new run"
        )


class _SkipFirst(Sampler):
    """``sampler`` whose next pass leaves out its first ``count`` items (its length stays the same)."""

    def __init__(self, sampler: Sampler, count: int):
        self.sampler, self.count = sampler, count

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        count, self.count = self.count, 0
        return itertools.islice(iter(self.sampler), count, None)


def _train_generator(trainer: Any) -> torch.Generator | None:
    """The shuffling generator of the datamodule's training loader (None without one)."""
    if trainer.datamodule is None:
        return None
    return getattr(trainer.datamodule.train_dataloader(), "generator", None)


class ResumableCheckpoint(AtomicCheckpoint):
    """``last.ckpt`` with everything a killed run needs to continue as if it had never stopped.

    Lightning restores the weights, optimizer, scheduler and loops. This callback adds the random generators,
    the training loader's generator as of the current epoch's start, and the batches done in it; resuming
    mid-epoch then draws the same shuffle and skips the batches already trained on. The saved trainable state
    is checked against the model (missing trainable entries are an error; the frozen base is expected absent).
    Takes ModelCheckpoint's arguments (``conf/callbacks/default.yaml`` sets them).
    """

    resumable = True  # not a best-epoch checkpoint: the task families test the best one (loldu.tasks.base)
    keep_previous = True  # checkpoints/previous.ckpt: what to resume from when last.ckpt is damaged

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._every_n_epochs = 1  # as well as every_n_train_steps, which ModelCheckpoint's arguments cannot say
        self._epoch_start_generator: torch.Tensor | None = None
        self._batches_in_epoch = 0
        self._fresh_fit = False
        self._restored: dict | None = None
        self._trainer: Any = None
        self._batches_per_epoch = 0

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        generator = _train_generator(self._trainer) if self._trainer is not None else None
        state["resume"] = {
            "rng": rng_state(),
            "generator": generator.get_state() if generator is not None else None,
            "epoch_start_generator": self._epoch_start_generator,
            "batches_in_epoch": self._batches_in_epoch,
            "mid_epoch": 0 < self._batches_in_epoch < self._batches_per_epoch,
        }
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Before Lightning builds the training loader: put its generator where the interrupted epoch (or, after a
        whole epoch, the next) began, and make it skip the batches done. The global RNG follows at fit start."""
        super().load_state_dict(state_dict)
        self._restored = state_dict.get("resume")
        if self._restored is None or self._trainer is None:
            return
        mid_epoch = self._restored["mid_epoch"]
        generator = _train_generator(self._trainer)
        state = self._restored["epoch_start_generator" if mid_epoch else "generator"]
        if generator is not None and state is not None:
            generator.set_state(state)
            self._epoch_start_generator = state
            # Lightning warns that a mid-epoch resume with a plain DataLoader is unreliable: handled here.
            warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch")
        elif mid_epoch:
            log.warning("the training loader has no generator: the resumed epoch will not see the same batches")
        if mid_epoch:
            self._skip_next_train_batches(self._trainer, self._restored["batches_in_epoch"])

    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        check_checkpoint_keys(pl_module, checkpoint["state_dict"])

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Note the training loader's generator before Lightning draws from it (a checkpoint may replace it)."""
        super().setup(trainer, pl_module, stage)
        self._trainer, self._fresh_fit, self._batches_in_epoch = trainer, True, 0
        generator = _train_generator(trainer) if stage == "fit" else None
        self._epoch_start_generator = generator.get_state() if generator is not None else None

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        """Restore the global random generators as they were when the checkpoint was saved."""
        restored, self._restored = self._restored, None
        if restored is not None:
            self._batches_in_epoch = restored["batches_in_epoch"] if restored["mid_epoch"] else 0
            # Lightning skips on_train_epoch_start for the epoch it resumes in the middle: the next call is the next's
            self._fresh_fit = not restored["mid_epoch"]
            set_rng_state(restored["rng"])

    def _skip_next_train_batches(self, trainer: Any, count: int) -> None:
        """Make the next training loader the datamodule builds skip its first ``count`` batches once."""
        datamodule = trainer.datamodule

        def loader():
            del datamodule.train_dataloader  # back to the class's method
            result = datamodule.train_dataloader()
            batches = result.batch_sampler
            batches.sampler = _SkipFirst(batches.sampler, count * batches.batch_size)
            return result

        datamodule.train_dataloader = loader

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if not self._fresh_fit:  # later epochs start their loader after this hook; the first already did
            generator = _train_generator(trainer)
            self._epoch_start_generator = generator.get_state() if generator is not None else None
            self._batches_in_epoch = 0
        self._fresh_fit = False

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._batches_in_epoch += 1
        self._batches_per_epoch = trainer.num_training_batches
        if self._batches_in_epoch < trainer.num_training_batches:  # the epoch's last: the epoch-end save follows
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
