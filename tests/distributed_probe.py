"""A callback that multi-process tests add to train.py runs (``+callbacks.probe._target_=distributed_probe.Probe``):
each rank writes ``<path>/rank<N>.json`` with a hash of its decompositions (before the strategy wraps and
broadcasts the model), its training losses step by step, and the val/test metrics it ended with."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import lightning as L


def decomposition_hash(model) -> str:
    """sha256 over every LoLDU/SVFit tensor of ``model`` (factors, orders, diagonal), in name order."""
    digest = hashlib.sha256()
    tensors = dict(model.named_parameters())
    tensors.update(model.named_buffers())
    for name in sorted(n for n in tensors if "loldu_" in n or "svfit_" in n):
        digest.update(name.encode())
        digest.update(tensors[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class Probe(L.Callback):
    """Records what the multi-process tests compare; one file per global rank."""

    def __init__(self, path: str):
        self.path = Path(path)
        self.record: dict = {"losses": []}

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            self.record.update(rank=trainer.global_rank, world=trainer.world_size)
            self.record["decompositions"] = decomposition_hash(pl_module.model)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.record["losses"].append(float(outputs["loss"]))

    def on_validation_end(self, trainer, pl_module) -> None:
        self.record["val"] = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if stage == "test":
            self.record["test"] = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.record))
