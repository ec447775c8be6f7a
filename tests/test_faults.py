"""Faults: a diverged run stops with an error, exits non-zero and saves nothing (run folders: test_run_folders.py)."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from helpers import run_composed, strict_json, train_py
from torch import nn

from loldu.run.guards import NonFiniteError, NonFiniteGuard

pytestmark = pytest.mark.usefixtures("one_thread")


# -- the non-finite guard on a tiny LightningModule ------------------------------------------------------------
class _Tiny(L.LightningModule):
    """One weight; ``loss(w)`` is the training loss, ``val`` the logged val/loss; SGD at ``lr``."""

    def __init__(self, loss, lr: float = 0.1, val: float | None = None, init: float = 1.0):
        super().__init__()
        self.w = nn.Parameter(torch.full((3,), init))
        self.loss, self.lr, self.val = loss, lr, val
        self.optim_settings = {"lr": lr}

    def training_step(self, batch, batch_idx):
        return self.loss(self.w) + 0 * batch.sum()

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", torch.tensor(self.val))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def _fit(module: _Tiny, steps: int = 3) -> L.Trainer:
    data = torch.utils.data.DataLoader(torch.ones(8, 1), batch_size=2)
    trainer = L.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=1 if module.val is not None else 0,
        val_check_interval=1 if module.val is not None else None,
        callbacks=[NonFiniteGuard()],
    )
    trainer.fit(module, data, data if module.val is not None else None)
    return trainer


@pytest.mark.parametrize(
    "loss,options,steps,message",
    [
        (lambda w: (w * float("nan")).sum(), {}, 3, "training loss is nan at step 0"),
        (lambda w: w.sqrt().sum(), {"init": 0.0}, 3, "gradient norm is inf at step 0"),  # finite loss, inf grad
        # one step: its update overflows the weight, and no later loss sees it
        (lambda w: (w * 10).sum(), {"lr": 1e38, "init": 0.0}, 1, "trained weight w holds inf/nan after step 1"),
        (lambda w: (w**2).sum(), {"val": float("nan")}, 3, "val/loss is nan after step 1"),
    ],
    ids=["loss", "gradient", "last-update", "val-loss"],
)
def test_guard_stops_a_diverged_run_naming_where_and_the_fix(loss, options, steps, message):
    hint = "lower the learning rate \\(lr=[0-9.e+]+\\)"
    with pytest.raises(NonFiniteError, match=f"training diverged: .*{message}.*{hint}"):
        _fit(_Tiny(loss, **options), steps)


def test_guard_lets_a_healthy_run_finish():
    trainer = _fit(_Tiny(lambda w: (w**2).sum(), val=0.5))
    assert trainer.global_step == 3 and not trainer.interrupted


# -- diverged runs end to end ------------------------------------------------------------------------------------
def test_diverged_classifier_exits_nonzero_marked_failed_without_adapter(tmp_path):
    run = tmp_path / "run"
    proc = train_py("task=rotten_tomatoes", "method=full", "lr=1e6", f"hydra.run.dir={run}", cwd=tmp_path)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode != 0, "a diverged run must not exit 0"
    assert "training diverged" in err and "lower the learning rate (lr=1e+06)" in err, err[-3000:]
    status = strict_json(run / "status.json")
    assert status["status"] == "failed" and status["error"].startswith("NonFiniteError: training diverged")
    assert "\n" not in status["error"] and status["ended_at"] and status["pid"] == proc.pid
    assert not (run / "adapter").exists() and not (run / "metrics.json").exists()
    assert not list(run.glob("*.tmp-*")), "no temporary files left behind"


def test_diverged_language_model_raises_before_saving(tmp_path):
    fast = (
        "batch_size=4",
        "task.validate_before=false",
        "task.generation.num_prompts=0",
        "logger=none",
        "callbacks=none",
    )
    with pytest.raises(NonFiniteError, match="training diverged"):  # today: exit 0, val/loss nan, a NaN adapter
        run_composed(tmp_path, "model=tiny_llama", "task=chatterbot", "method=full", "lr=1e6", *fast)
    assert strict_json(tmp_path / "status.json")["status"] == "failed"
    assert not (tmp_path / "adapter").exists() and not (tmp_path / "metrics.json").exists()
