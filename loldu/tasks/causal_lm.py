"""Instruction tuning of causal language models: masked next-token loss, validation loss and perplexity,
and generations for fixed prompts at every validation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .common import FineTuneModule

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
    ``val/ppl = exp(val/loss)``, then generates greedily for fixed prompts; the generations go to W&B as a
    table and to ``generations.jsonl`` in the run folder.

    Args:
        model: the adapted causal LM (``model(input_ids, attention_mask).logits``; ``model.generate``).
        tokenizer: its tokenizer (pads on the left for generation).
        generation_examples: dicts with ``prompt`` (the formatted prompt) and ``reference``.
        max_new_tokens: generation length.
        add_special_tokens: tokenize generation prompts as training prompts were (True for the Alpaca template on
            tokenizers that add BOS; False for chat templates, which contain their special tokens).
        out_dir: where ``generations.jsonl`` goes (None: not written).
        **optim: see :class:`~loldu.tasks.common.FineTuneModule`.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        generation_examples: list[dict] | None = None,
        max_new_tokens: int = 48,
        add_special_tokens: bool = False,
        out_dir: str | Path | None = None,
        **optim: Any,
    ):
        super().__init__(**optim)
        self.model = model
        self.tokenizer = tokenizer
        self.generation_examples = list(generation_examples or [])
        self.max_new_tokens = int(max_new_tokens)
        self.add_special_tokens = bool(add_special_tokens)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.save_hyperparameters(ignore=["model", "tokenizer", "generation_examples"])
        self._sums: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # stage -> (summed loss, tokens)
        self.last_generations: list[dict] = []

    def forward(self, batch: dict) -> torch.Tensor:
        return self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        total, count = masked_lm_loss(self(batch), batch["labels"])
        loss = total / count.clamp(min=1)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch["labels"]))
        self.log("train/tokens", count.float(), on_step=True, on_epoch=False, reduce_fx="sum")
        return loss

    # -- evaluation ---------------------------------------------------------------------------------------
    def _eval_step(self, batch: dict, stage: str) -> None:
        total, count = masked_lm_loss(self(batch), batch["labels"])
        total_so_far, count_so_far = self._sums.get(stage, (0.0, 0.0))
        self._sums[stage] = (total_so_far + total.double(), count_so_far + count.double())

    def _eval_end(self, stage: str) -> None:
        total, count = self._sums.pop(stage, (torch.zeros(()), torch.zeros(())))
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
        if self.generation_examples and not self.trainer.sanity_checking:
            self._log_generations()

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")

    # -- generations ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, prompts: list[str]) -> list[str]:
        """Greedy continuations of ``prompts`` (special tokens dropped), ``max_new_tokens`` at most."""
        tok = self.tokenizer
        side = tok.padding_side
        tok.padding_side = "left"
        try:
            enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=self.add_special_tokens).to(
                self.device
            )
        finally:
            tok.padding_side = side
        was_training = self.model.training
        self.model.eval()
        try:
            out = self.model.generate(
                **enc,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
            )
        finally:
            self.model.train(was_training)
        return tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)

    def _log_generations(self) -> None:
        prompts = [ex["prompt"] for ex in self.generation_examples]
        texts = self.generate(prompts)
        step = int(self.global_step)
        rows = [
            {"step": step, "prompt": ex["prompt"], "generation": text, "reference": ex.get("reference", "")}
            for ex, text in zip(self.generation_examples, texts, strict=True)
        ]
        self.last_generations = rows
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with open(self.out_dir / "generations.jsonl", "a", encoding="utf-8") as fh:
                for row in rows:
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        for logger in self.loggers:
            if hasattr(logger, "log_table"):  # W&B
                columns = ["step", "prompt", "generation", "reference"]
                logger.log_table(key="val/generations", columns=columns, data=[[r[c] for c in columns] for r in rows])
