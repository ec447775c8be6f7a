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
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import warnings
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import Sampler

from loldu.methods import adapter_state_dict

log = logging.getLogger(__name__)


class AtomicCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that writes ``<name>.part`` and renames it to ``<name>`` once complete."""

    def _save_checkpoint(self, trainer: Any, filepath: str) -> None:
        part = f"{filepath}.part"
        super()._save_checkpoint(trainer, part)
        if trainer.is_global_zero:
            os.replace(part, filepath)
        self._last_checkpoint_saved = filepath


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
