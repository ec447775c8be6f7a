"""Instruction tuning of causal language models: masked next-token loss, validation loss and perplexity,
and generations for fixed prompts at every validation (:class:`GenerationLogger`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig
from torch import nn

from loldu.tasks.base import TaskFamily, best_checkpoint, stage_metrics
from loldu.tasks.common import FineTuneModule, loggers_with

IGNORE_INDEX = -100


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token cross-entropy over supervised positions, and their number.

    Position t's logits predict token t + 1; a target of ``-100`` (prompt or padding) is not counted.

    Args:
        logits: ``(batch, seq, vocab)``.
        labels: ``(batch, seq)`` token ids, ``-100`` where nothing is to be learned.

    Returns:
        ``(sum of token losses (float32), number of supervised tokens)``.
    """
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} do not match")
    pred = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    target = labels[:, 1:].reshape(-1)
    total = nn.functional.cross_entropy(pred, target, ignore_index=IGNORE_INDEX, reduction="sum")
    return total, (target != IGNORE_INDEX).sum()


class CausalLMModule(FineTuneModule):
    """Fine-tunes a causal LM on prompt/response pairs.

    The training loss is the mean over the batch's supervised tokens (the response, or every token with
    ``train_on_inputs``: the data module decides which through ``labels``). Validation reports the loss over
    all supervised tokens of the split (token-weighted, not a mean of batch means) as ``val/loss`` and
    ``val/ppl = exp(val/loss)``.

    Args:
        model: the adapted causal LM (``model(input_ids, attention_mask).logits``).
        **optim: see :class:`~loldu.tasks.common.FineTuneModule`.
    """

    def __init__(self, model: nn.Module, **optim: Any):
        super().__init__(**optim)
        self.model = model
        self.save_hyperparameters(ignore=["model", "optimizer"])
        self._sums: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # stage -> (summed loss, tokens)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        total, count = masked_lm_loss(self(batch), batch["labels"])
        loss = total / count.clamp(min=1)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch["labels"]))
        self.log("train/tokens", count.float(), on_step=True, on_epoch=False, reduce_fx="sum")
        return loss

    def _eval_step(self, batch: dict, stage: str) -> None:
        total, count = masked_lm_loss(self(batch), batch["labels"])
        total_so_far, count_so_far = self._sums.get(stage, (0.0, 0.0))
        self._sums[stage] = (total_so_far + total.double(), count_so_far + count.double())

    def _eval_end(self, stage: str) -> None:
        zero = torch.zeros((), dtype=torch.float64, device=self.device)
        total, count = self._sums.pop(stage, (zero, zero))
        if self._trainer is not None:  # trainer=ddp/fsdp: the split's sums over every rank, not a mean of rank means
            total = self.trainer.strategy.reduce(total, reduce_op="sum")
            count = self.trainer.strategy.reduce(count, reduce_op="sum")
        if count.item() == 0:
            raise RuntimeError(f"no supervised tokens in the {stage} split: check the data's cutoff_len")
        loss = (total / count).float()
        self.log(f"{stage}/loss", loss, prog_bar=True)
        self.log(f"{stage}/ppl", torch.exp(loss.clamp(max=80.0)))
        self.log(f"{stage}/tokens", count.float())

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")


class CausalLMFamily(TaskFamily):
    """Instruction tuning: validation loss before and after training, generations, the data's split sizes."""

    def module(self, cfg: DictConfig, model: Any, bundle: Any, datamodule: Any, out: Path, **optim: Any):
        return CausalLMModule(model=model, **optim)

    def callbacks(self, cfg: DictConfig, bundle: Any, datamodule: Any, out: Path) -> list:
        gen = cfg.task.generation
        examples = datamodule.generation_examples(gen.num_prompts) if gen.num_prompts else []
        return [GenerationLogger(bundle.tokenizer, examples, gen.max_new_tokens, datamodule.add_special_tokens, out)]

    def fit(self, cfg: DictConfig, trainer: Any, module: Any, datamodule: Any, ckpt_path: str | None = None) -> dict:
        generations = next(cb for cb in trainer.callbacks if isinstance(cb, GenerationLogger))
        before, generations_before = {}, []
        if cfg.task.validate_before:
            before = stage_metrics(trainer.validate(module, datamodule=datamodule, verbose=False)[0], "")
            generations_before = generations.last_generations
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        val = stage_metrics(trainer.callback_metrics, "val/")
        generations_after = generations.last_generations
        test = []
        if datamodule.has_test:
            test = trainer.test(module, datamodule=datamodule, ckpt_path=best_checkpoint(trainer), verbose=False)
        return {
            "test": stage_metrics(test[0] if test else {}, ""),
            "val": val,
            "val_before": before,
            "generations_before": generations_before,
            "generations_after": generations_after,
            "data": {
                "sizes": datamodule.split_sizes(),
                "dropped_over_cutoff": dict(datamodule.dropped),
                "duplicates_removed": datamodule.duplicates_removed,
            },
        }

    def headline(self, cfg: DictConfig, metrics: dict, out: Path) -> str:
        before = metrics["val_before"].get("val/loss")
        after = f"val/loss = {metrics['val'].get('val/loss', float('nan')):.4f}"
        return after + (f" (before training {before:.4f})" if before is not None else "")


FAMILY = CausalLMFamily()


class GenerationLogger(L.Callback):
    """Greedy generations for fixed prompts after every validation (not the sanity check).

    Rows ``{step, prompt, generation, reference}`` are appended to ``out_dir/generations.jsonl``, logged to W&B
    as the table ``val/generations``, and kept in :attr:`last_generations`.

    Args:
        tokenizer: the model's tokenizer (pads on the left for generation).
        examples: dicts with ``prompt`` (formatted) and ``reference``.
        max_new_tokens: generation length.
        add_special_tokens: tokenize the prompts as training prompts were.
        out_dir: the run folder (None: no file).
    """

    COLUMNS = ("step", "prompt", "generation", "reference")

    def __init__(
        self,
        tokenizer: Any,
        examples: list[dict],
        max_new_tokens: int = 48,
        add_special_tokens: bool = False,
        out_dir: str | Path | None = None,
    ):
        self.tokenizer = tokenizer
        self.examples = list(examples)
        self.max_new_tokens = int(max_new_tokens)
        self.add_special_tokens = bool(add_special_tokens)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.last_generations: list[dict] = []

    @torch.no_grad()
    def generate(self, model: torch.nn.Module, prompts: list[str]) -> list[str]:
        """Greedy continuations of ``prompts`` by ``model`` (special tokens dropped)."""
        tok = self.tokenizer
        side, tok.padding_side = tok.padding_side, "left"
        try:
            enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=self.add_special_tokens)
        finally:
            tok.padding_side = side
        enc = enc.to(next(model.parameters()).device)
        was_training = model.training
        model.eval()
        try:
            out = model.generate(
                **enc,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
            )
        finally:
            model.train(was_training)
        return tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.examples or trainer.sanity_checking or not trainer.is_global_zero:  # ddp: rank 0 writes
            return
        texts = self.generate(pl_module.model, [ex["prompt"] for ex in self.examples])
        step = int(trainer.global_step)
        rows = [
            {"step": step, "prompt": ex["prompt"], "generation": text, "reference": ex.get("reference", "")}
            for ex, text in zip(self.examples, texts, strict=True)
        ]
        self.last_generations = rows
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with open(self.out_dir / "generations.jsonl", "a", encoding="utf-8") as fh:
                fh.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        for logger in loggers_with(trainer, "log_table"):
            data = [[r[c] for c in self.COLUMNS] for r in rows]
            logger.log_table(key="val/generations", columns=list(self.COLUMNS), data=data)
