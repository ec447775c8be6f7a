"""Checkpoints carry a sha256 each, the resumable one keeps its predecessor, and a damaged one is refused on resume
with a message that names the previous checkpoint when that one verifies."""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from loldu.run.checkpointing import (
    AtomicCheckpoint,
    ResumableCheckpoint,
    file_digest,
    matches_digest,
    verify_checkpoint,
    write_digest,
)

pytestmark = pytest.mark.usefixtures("one_thread")


class _Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(run_dir: Path, epochs: int = 1, ckpt_path: str | None = None) -> None:
    """One epoch of 4 batches, a resumable checkpoint every 2 steps: saves at step 2 and at the epoch's end (4)."""
    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(16, 4), torch.randn(16, 1)), batch_size=4)
    callback = ResumableCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="last",
        every_n_train_steps=2,
        save_top_k=1,
        enable_version_counter=False,
    )
    trainer = L.Trainer(
        max_epochs=epochs,
        callbacks=[callback],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        default_root_dir=run_dir,
    )
    trainer.fit(_Tiny(), data, ckpt_path=ckpt_path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("trained")
    _fit(run_dir)
    return run_dir


@pytest.fixture
def run_dir(trained, tmp_path) -> Path:
    """A copy of the trained run's folder, for a test to damage."""
    shutil.copytree(trained / "checkpoints", tmp_path / "checkpoints")
    return tmp_path


def _step(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))


def test_each_save_writes_its_digest_and_the_one_before_is_kept(run_dir):
    ckpts = run_dir / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == [
        "last.ckpt",
        "last.ckpt.sha256",
        "previous.ckpt",
        "previous.ckpt.sha256",
    ]
    for name in ("last.ckpt", "previous.ckpt"):
        assert (ckpts / f"{name}.sha256").read_text() == f"{file_digest(ckpts / name)}  {name}\n"  # sha256sum -c
    assert (_step(ckpts / "previous.ckpt"), _step(ckpts / "last.ckpt")) == (2, 4)
    assert verify_checkpoint(run_dir) == str(ckpts / "last.ckpt")


def test_a_verified_checkpoint_resumes_and_the_next_save_moves_it_to_previous(run_dir):
    _fit(run_dir, epochs=2, ckpt_path=verify_checkpoint(run_dir))
    ckpts = run_dir / "checkpoints"
    assert (_step(ckpts / "previous.ckpt"), _step(ckpts / "last.ckpt")) == (6, 8)
    assert matches_digest(ckpts / "previous.ckpt") and matches_digest(ckpts / "last.ckpt")


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (_flip_byte, r"its bytes changed after it was saved"),
        (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), r"it is incomplete .*cut short"),
    ],
    ids=["flipped_byte", "truncated"],
)
def test_a_damaged_last_checkpoint_is_refused_naming_the_previous_one(run_dir, damage, why):
    last = run_dir / "checkpoints" / "last.ckpt"
    damage(last)
    with pytest.raises(ValueError) as refused:
        verify_checkpoint(run_dir)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"{last} does not match its digest last.ckpt.sha256: ")
    assert re.search(why, message), message
    previous = run_dir / "checkpoints" / "previous.ckpt"
    assert f"previous checkpoint {previous} (step 2) verifies: to resume from it, move it" in message
    assert message.endswith("or start a new run")


def test_when_the_previous_checkpoint_is_damaged_too_the_message_says_so(run_dir):
    _flip_byte(run_dir / "checkpoints" / "last.ckpt")
    _flip_byte(run_dir / "checkpoints" / "previous.ckpt")
    with pytest.raises(ValueError, match=r"previous\.ckpt does not verify either: start a new run$"):
        verify_checkpoint(run_dir)
    (run_dir / "checkpoints" / "previous.ckpt").unlink()
    with pytest.raises(ValueError, match=r"no previous checkpoint to fall back on: start a new run$"):
        verify_checkpoint(run_dir)


def test_a_checkpoint_of_an_older_run_without_a_digest_is_accepted_with_a_warning(run_dir, caplog):
    (run_dir / "checkpoints" / "last.ckpt.sha256").unlink()
    with caplog.at_level(logging.WARNING, logger="loldu.run.checkpointing"):
        assert verify_checkpoint(run_dir) == str(run_dir / "checkpoints" / "last.ckpt")
    assert "has no digest" in caplog.text and "unverified" in caplog.text


def test_a_malformed_digest_file_is_refused(run_dir):
    (run_dir / "checkpoints" / "last.ckpt.sha256").write_text("not a digest\n")
    with pytest.raises(ValueError, match=r"last\.ckpt\.sha256 is not a sha256 digest file.*previous checkpoint"):
        verify_checkpoint(run_dir)


class _NotAllowed:
    """A class a weights-only load refuses to rebuild."""


def test_a_checkpoint_that_verifies_but_cannot_be_read_back_is_one_clear_line(tmp_path):
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    torch.save({"global_step": 1, "odd": _NotAllowed()}, last)
    write_digest(last, file_digest(last))
    with pytest.raises(ValueError) as refused:
        verify_checkpoint(tmp_path)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"{last} matches its digest but cannot be read back as a checkpoint (UnpicklingError")
    assert message.endswith("no previous checkpoint to fall back on: start a new run")


def test_a_missing_last_checkpoint_is_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"last\.ckpt not found: the run has no resumable checkpoint"):
        verify_checkpoint(tmp_path)


class _Killed(Exception):
    pass


@pytest.mark.parametrize("kill_at", [0, 1, 2, 3, 4])
def test_a_kill_anywhere_in_a_save_leaves_a_checkpoint_that_verifies(tmp_path, monkeypatch, kill_at):
    """Kill the save before its ``kill_at``-th rename (0: before the hard link; 4: it completes)."""
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    last, previous = ckpts / "last.ckpt", ckpts / "previous.ckpt"
    for path, data in ((previous, b"checkpoint P"), (last, b"checkpoint A")):
        path.write_bytes(data)
        write_digest(path, file_digest(path))
    Path(f"{last}.part").write_bytes(b"checkpoint B")
    renames = []
    real_replace, real_link = os.replace, os.link

    def replace(src, dst):
        if len(renames) == kill_at:
            raise _Killed
        renames.append(dst)
        real_replace(src, dst)

    def link(src, dst):
        if kill_at == 0:
            raise _Killed
        real_link(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "link", link)
    try:
        ResumableCheckpoint(dirpath=ckpts)._put_in_place(f"{last}.part", str(last))
    except _Killed:
        pass
    monkeypatch.undo()
    verified = {p.name: p.read_bytes() for p in (last, previous) if matches_digest(p)}
    assert verified, f"nothing verifies after a kill before rename {kill_at}"
    if kill_at == 4:
        assert verified == {"last.ckpt": b"checkpoint B", "previous.ckpt": b"checkpoint A"}
    elif "last.ckpt" not in verified:  # between the new digest and the rename: the same checkpoint as previous
        assert verified == {"previous.ckpt": b"checkpoint A"}


def test_a_checkpoint_lightning_drops_takes_its_digest_along(tmp_path):
    class _Trainer:
        is_global_zero = True

        class strategy:  # noqa: N801  (Lightning's attribute name)
            remove_checkpoint = staticmethod(os.remove)

    old = tmp_path / "epoch=0.ckpt"
    old.write_bytes(b"old best")
    write_digest(old, file_digest(old))
    AtomicCheckpoint(dirpath=tmp_path)._remove_checkpoint(_Trainer(), str(old))
    assert list(tmp_path.iterdir()) == []
