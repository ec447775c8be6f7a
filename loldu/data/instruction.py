"""Instruction-tuning batches for causal language models, on the shared :class:`~loldu.data.module.SplitDataModule`.

Sources (``alpaca_hub``, ``instruction_json``, ``chatterbot``) return one ``"train"`` part with the string columns
``instruction``, ``input`` and ``output``. Prompts are formatted and masked by :mod:`loldu.data.prompts`; batches are
right-padded by ``transformers.DataCollatorForSeq2Seq`` (``labels`` padded with -100).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from datasets import Dataset, DatasetDict

from loldu.data.files import instruction_json
from loldu.data.hub import alpaca_hub
from loldu.data.module import SplitDataModule
from loldu.data.packaged import chatterbot
from loldu.data.prompts import IGNORE_INDEX, check_template, eos_id, format_prompt, tokenize_examples
from loldu.data.splits import check_size, group_units

__all__ = [
    "INSTRUCTION_SOURCES",
    "InstructionDataModule",
    "alpaca_hub",
    "chatterbot",
    "format_prompt",
    "instruction_json",
    "tokenize_examples",
]

INSTRUCTION_SOURCES: dict[str, Callable[..., Any]] = {
    "alpaca_hub": alpaca_hub,
    "instruction_json": instruction_json,
    "chatterbot": chatterbot,
}
FIELDS = ("instruction", "input", "output")


def _normalise(text: str) -> str:
    return " ".join(str(text).split()).casefold()


class InstructionDataModule(SplitDataModule):
    """Instruction-tuning batches for a transformers ``*ForCausalLM`` model.

    :meth:`check` reads the source (and drops repeats with ``dedupe``) and splits it: a seeded permutation gives
    validation, then test, then train (disjoint; whole prompt groups with ``group_by_instruction``), capped by
    ``limit_train`` / ``limit_eval``; prompts (instruction and input) repeated across splits are counted and warned
    about (see :mod:`loldu.data.sanity` and :attr:`sanity`), never refused. :meth:`setup` tokenizes every example
    once (see :func:`~loldu.data.prompts.tokenize_examples`) and drops the examples whose prompt alone fills
    ``cutoff_len`` (counted per split in :attr:`dropped`). Batches hold right-padded int64 ``input_ids``,
    ``attention_mask`` and ``labels`` (-100 on the prompt unless ``train_on_inputs``, and on padding).

    Args:
        source: One of ``alpaca_hub``, ``instruction_json``, ``chatterbot``.
        source_args: Keyword arguments of the source function.
        tokenizer: A transformers tokenizer with eos and pad tokens (may also be assigned to ``.tokenizer`` before
            setup).
        template: ``"alpaca"`` or ``"chat"`` (the tokenizer's chat template).
        system_prompt: System message for ``"chat"``; None for the template's default.
        cutoff_len: Maximum tokens per example (prompt + response + eos), >= 2.
        train_on_inputs: Also compute the loss on the prompt tokens.
        val_size: Validation examples: a count (0: none) or a fraction in (0, 1) of the source.
        test_size: Test examples: a count (0: none) or a fraction in (0, 1) of the source.
        dedupe: Drop exact repeats of (instruction, input, output), compared after whitespace/case normalisation,
            keeping the first; the count is in ``duplicates_removed``. Without it, a corpus with repeated pairs
            (ChatterBot repeats some pairs over 100 times) puts copies of training pairs in validation.
        group_by_instruction: Split whole groups of examples sharing an (instruction, input), so no validation or
            test prompt is also a training prompt (the split sizes are then met to within one group).
        **loader_args: batch_size (default 4), eval_batch_size, num_workers, seed, limit_train, limit_eval (see
            :class:`~loldu.data.module.SplitDataModule`).
    """

    SOURCES = INSTRUCTION_SOURCES
    KIND = "instruction"
    SORT_SPLITS = False

    def __init__(
        self,
        source: str,
        source_args: dict | None = None,
        tokenizer: Any = None,
        template: str = "alpaca",
        system_prompt: str | None = None,
        cutoff_len: int = 256,
        train_on_inputs: bool = False,
        val_size: int | float = 2000,
        test_size: int | float = 0,
        dedupe: bool = False,
        group_by_instruction: bool = False,
        **loader_args: Any,
    ):
        super().__init__(source=source, source_args=source_args, **{"batch_size": 4, **loader_args})
        check_template(template, tokenizer, system_prompt)
        if tokenizer is not None:
            eos_id(tokenizer)
        if isinstance(cutoff_len, bool) or not isinstance(cutoff_len, int) or cutoff_len < 2:
            raise ValueError(f"cutoff_len must be an int >= 2 (tokens per example); got {cutoff_len!r}.")
        self.save_hyperparameters(ignore=["tokenizer"])
        self.tokenizer = tokenizer
        self.template = template
        self.system_prompt = system_prompt
        self.cutoff_len = int(cutoff_len)
        self.train_on_inputs = bool(train_on_inputs)
        self.val_size = check_size(val_size, "val_size")
        self.test_size = check_size(test_size, "test_size")
        self.dedupe = bool(dedupe)
        self.group_by_instruction = bool(group_by_instruction)
        self.duplicates_removed = 0
        self.dropped: dict[str, int] = {}
        self.examples: dict[str, list[dict]] = {}

    def attach(self, **model_parts: Any) -> None:
        """Sets the model's ``tokenizer`` (checked against the template) before :meth:`setup`.

        Raises:
            ValueError: ``template="chat"`` with a tokenizer that has no chat template, or a tokenizer without eos.
        """
        super().attach(**model_parts)
        if self.tokenizer is not None:
            check_template(self.template, self.tokenizer, self.system_prompt)
            eos_id(self.tokenizer)

    @property
    def add_special_tokens(self) -> bool:
        """How to tokenize a formatted prompt for generation: True for ``"alpaca"``, False for ``"chat"``."""
        return self.template == "alpaca"

    @property
    def has_test(self) -> bool:
        """Whether a test split is requested (``test_size`` > 0)."""
        return self.test_size != 0

    # -- the shared module's hooks ----------------------------------------------------------------------------------

    def _held_out(self) -> dict[str, int | float]:
        return {"validation": self.val_size, "test": self.test_size}

    def _size_keys(self) -> dict[str, str]:
        return {"validation": "val_size", "test": "test_size"}

    def _split_rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)  # kept from the first release: published splits stay put

    def _load(self) -> DatasetDict:
        parts = super()._load()
        if self.dedupe:
            train, seen, keep = parts["train"], set(), []
            for i, row in enumerate(zip(*(train[f] for f in FIELDS))):
                key = tuple(map(_normalise, row))
                if key not in seen:
                    seen.add(key)
                    keep.append(i)
            self.duplicates_removed = len(train) - len(keep)
            parts = DatasetDict(train=train.select(keep))
        return parts

    def _duplicates_fix(self) -> str:
        fixes = [
            f"task.data.{key}=true"
            for key, on in (("dedupe", self.dedupe), ("group_by_instruction", self.group_by_instruction))
            if not on
        ]
        if fixes:
            return f"set {' '.join(fixes)} to keep training prompts out of evaluation"
        return "drop the repeated prompts from the data so that every prompt is in one split only"

    def _groups(self, train: Dataset) -> list[np.ndarray] | None:
        if not self.group_by_instruction:
            return None
        return group_units([(_normalise(i), _normalise(x)) for i, x in zip(train["instruction"], train["input"])])

    def setup(self, stage: str | None = None) -> None:
        """Reads, splits and tokenizes the data (once; later calls do nothing).

        Raises:
            ValueError: No tokenizer, bad source data, splits that leave no training data, or a split emptied
                because its prompts fill ``cutoff_len``.
        """
        if self.tokenizer is None:
            raise ValueError("InstructionDataModule needs a tokenizer (pass tokenizer=... or set .tokenizer).")
        check_template(self.template, self.tokenizer, self.system_prompt)
        if getattr(self.tokenizer, "pad_token_id", None) is None:
            raise ValueError(
                f"The tokenizer ({type(self.tokenizer).__name__}) has no pad token, which batches need; set "
                "tokenizer.pad_token = tokenizer.eos_token first (padding is masked out)."
            )
        super().setup(stage)

    def _build(self, split: str, rows: Dataset) -> Dataset:
        examples = rows.to_list()
        encoded = tokenize_examples(
            examples, self.tokenizer, self.template, self.cutoff_len, self.train_on_inputs, self.system_prompt
        )
        keep = [k for k, item in enumerate(encoded) if item["prompt_len"] < self.cutoff_len]
        self.dropped[split] = len(encoded) - len(keep)
        if examples and not keep:
            raise ValueError(
                f"All {len(examples)} {split} examples have prompts of >= cutoff_len={self.cutoff_len} tokens, so "
                f"no response token is left to learn from; raise cutoff_len (the longest prompt has "
                f"{max(item['prompt_len'] for item in encoded)} tokens)."
            )
        part, indices = self.split_indices[split]
        self.split_indices[split] = (part, indices[keep])
        self.examples[split] = [examples[k] for k in keep]
        return Dataset.from_dict({key: [encoded[k][key] for k in keep] for key in ("input_ids", "labels")})

    def collator(self) -> Callable:
        """``transformers.DataCollatorForSeq2Seq``: pads ``input_ids`` with the pad token, ``labels`` with -100."""
        from transformers import DataCollatorForSeq2Seq

        return DataCollatorForSeq2Seq(self.tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)

    def test_dataloader(self):
        """Test batches in a fixed order.

        Raises:
            RuntimeError: ``test_size`` is 0.
        """
        if not self.has_test:
            raise RuntimeError("InstructionDataModule has no test split (test_size=0); set test_size to make one.")
        return super().test_dataloader()

    def generation_examples(self, n: int, split: str = "validation") -> list[dict]:
        """The first ``n`` examples of a split, for generating samples at fixed prompts.

        Args:
            n: How many (fewer when the split is smaller).
            split: ``"train"``, ``"validation"`` or ``"test"``.

        Returns:
            Dicts with ``prompt`` (the formatted prompt; tokenize it with ``add_special_tokens=``
            :attr:`add_special_tokens`), ``instruction``, ``input`` and ``reference`` (the expected output).

        Raises:
            ValueError: Unknown split or negative n.
        """
        self._require_setup()
        if split not in self.examples:
            raise ValueError(f"Unknown split {split!r}; choose one of {sorted(self.examples)}.")
        if n < 0:
            raise ValueError(f"n must be >= 0; got {n}.")
        return [
            {
                "prompt": format_prompt(example, self.template, self.tokenizer, self.system_prompt),
                "instruction": example["instruction"],
                "input": example["input"],
                "reference": example["output"],
            }
            for example in self.examples[split][:n]
        ]
