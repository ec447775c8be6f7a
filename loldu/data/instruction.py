"""Instruction-tuning data for causal language models: sources, prompt templates, exact loss masking, batches.

A source returns a list of examples, each a dict with the string fields ``instruction``, ``input`` (may be empty) and
``output``. :class:`InstructionDataModule` formats each example's prompt with a template (``"alpaca"`` or the
tokenizer's own ``"chat"`` template), tokenizes prompt and response separately so the prompt positions of ``labels``
can be masked exactly (-100), truncates to ``cutoff_len`` and serves right-padded batches for a ``*ForCausalLM``.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .base import call_source, check_source_args, package_folder
from .hub import load_hub_dataset
from .module import split_loader

IGNORE_INDEX = -100
TEMPLATES = ("alpaca", "chat")
FIELDS_HELP = (
    "each example must be an object with string fields 'instruction' and 'output' and an optional string field 'input'"
)
CHATTERBOT = ("chatterbot_corpus", "chatterbot-corpus==1.3.3", "data/english")

# The Alpaca prompt format (as used by Alpaca-LoRA, with a newline after "### Response:"); the response follows it
# directly. Kept verbatim: results depend on the exact text.
ALPACA_PROMPT_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)


# -- prompt templates -------------------------------------------------------------------------------------------------


def check_template(template: str, tokenizer: Any = None, system_prompt: str | None = None) -> None:
    """Checks a template name and whether it can be used with this tokenizer and system prompt.

    Args:
        template: ``"alpaca"`` or ``"chat"``.
        tokenizer: The tokenizer (needed by ``"chat"``); None skips the tokenizer checks.
        system_prompt: Optional system message (``"chat"`` only).

    Raises:
        ValueError: Unknown template, a system prompt with ``"alpaca"``, or ``"chat"`` with a tokenizer that has no
            chat template.
    """
    if template not in TEMPLATES:
        raise ValueError(f"Unknown prompt template {template!r}; choose one of {list(TEMPLATES)}.")
    if template == "alpaca" and system_prompt is not None:
        raise ValueError(
            "system_prompt only applies to template='chat' (the Alpaca format has a fixed preamble); "
            "remove system_prompt or use template='chat'."
        )
    if template == "chat" and tokenizer is not None and not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"template='chat' uses the tokenizer's chat template, but this tokenizer "
            f"({type(tokenizer).__name__}) has none; use template='alpaca' instead."
        )


def format_prompt(example: dict, template: str, tokenizer: Any = None, system_prompt: str | None = None) -> str:
    """Formats an example's prompt: everything the model sees before the response.

    ``"alpaca"`` gives the Alpaca text (its "Input" section only when ``input`` is non-empty). ``"chat"`` renders one
    user message (the instruction, plus a blank line and the input when it is non-empty), preceded by
    ``system_prompt`` as a system message when given, with the tokenizer's chat template and the generation prompt.

    Args:
        example: A dict with ``instruction`` and optionally ``input``.
        template: ``"alpaca"`` or ``"chat"``.
        tokenizer: A transformers tokenizer with a chat template (``"chat"`` only).
        system_prompt: Optional system message (``"chat"`` only).

    Returns:
        The prompt text. For ``"chat"`` it already holds the template's special tokens, so tokenize it with
        ``add_special_tokens=False``; for ``"alpaca"`` use ``add_special_tokens=True``.

    Raises:
        ValueError: Unknown template, ``"chat"`` without a tokenizer or chat template, or a system prompt with
            ``"alpaca"``.
    """
    check_template(template, tokenizer, system_prompt)
    instruction = example["instruction"]
    extra = example.get("input") or ""
    if template == "alpaca":
        if extra:
            return ALPACA_PROMPT_INPUT.format(instruction=instruction, input=extra)
        return ALPACA_PROMPT_NO_INPUT.format(instruction=instruction)
    if tokenizer is None:
        raise ValueError("template='chat' needs the tokenizer (its chat template formats the prompt).")
    messages = [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
    messages.append({"role": "user", "content": instruction + (f"\n\n{extra}" if extra else "")})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


# -- sources ----------------------------------------------------------------------------------------------------------


def alpaca_hub(dataset: str = "yahma/alpaca-cleaned", split: str = "train", revision: str | None = None) -> list[dict]:
    """An Alpaca-format instruction dataset from the Hugging Face Hub (or a local folder ``datasets`` reads).

    Args:
        dataset: Hub dataset id with columns ``instruction``, ``input`` (optional) and ``output``, or a local folder.
        split: The split to read.
        revision: Git revision (branch, tag or commit) of the dataset, or None for the default branch.

    Returns:
        The examples, as dicts with string ``instruction``, ``input`` and ``output``.

    Raises:
        RuntimeError: The dataset could not be loaded (e.g. no network); the message names the offline route.
        ValueError: Unknown split, or missing columns.
    """
    try:
        loaded = load_hub_dataset(dataset, None, {"revision": revision} if revision else None)
    except RuntimeError as err:
        cause = err.__cause__ if err.__cause__ is not None else err
        raise RuntimeError(
            f"The instruction dataset {dataset!r} could not be loaded ({type(cause).__name__}: {cause}). Without "
            f"network access, download it elsewhere as a JSON or JSON-lines file of objects with 'instruction', "
            f"'input' and 'output' fields, copy it here, and use source='instruction_json' with "
            f"source_args.path set to that file."
        ) from err
    if split not in loaded:
        raise ValueError(f"Dataset {dataset!r} has no split {split!r}; it has {sorted(loaded.keys())}.")
    data = loaded[split]
    missing = [c for c in ("instruction", "output") if c not in data.column_names]
    if missing:
        raise ValueError(
            f"Dataset {dataset!r} split {split!r} has no column(s) {missing}; its columns are {data.column_names} "
            f"(an instruction dataset needs 'instruction' and 'output', and optionally 'input')."
        )
    columns = {c: list(data[c]) for c in ("instruction", "input", "output") if c in data.column_names}
    columns.setdefault("input", [""] * len(data))

    def text(value: Any) -> str:
        return "" if value is None else str(value)

    return [
        {"instruction": text(i), "input": text(x), "output": text(o)}
        for i, x, o in zip(columns["instruction"], columns["input"], columns["output"])
    ]


def _check_item(item: Any, where: str) -> dict:
    if not isinstance(item, dict):
        raise ValueError(f"{where} is a {type(item).__name__}, not an object; {FIELDS_HELP}.")
    for key in ("instruction", "output"):
        if key not in item:
            raise ValueError(f"{where} has no {key!r} field; {FIELDS_HELP}.")
        if not isinstance(item[key], str):
            raise ValueError(
                f"{where}: the {key!r} field is a {type(item[key]).__name__}, not a string; {FIELDS_HELP}."
            )
    extra = item.get("input")
    if extra is not None and not isinstance(extra, str):
        raise ValueError(f"{where}: the 'input' field is a {type(extra).__name__}, not a string; {FIELDS_HELP}.")
    return {"instruction": item["instruction"], "input": extra or "", "output": item["output"]}


def instruction_json(path: str | Path) -> list[dict]:
    """Instruction examples from a local file: a JSON array of objects, or JSON lines (one object per line).

    Each object has string fields ``instruction`` and ``output`` and an optional string ``input`` (default ``""``);
    other fields are ignored. A file whose first non-blank character is ``[`` is read as an array, any other as JSON
    lines (blank lines are skipped). Relative paths resolve against the working directory.

    Args:
        path: The file.

    Returns:
        The examples, in file order.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file is not UTF-8, is invalid JSON (with its line), holds no examples, or an item is not an
            object or lacks a string ``instruction``/``output`` field (with its index or line).
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"instruction_json: the file {str(file)!r} does not exist (source_args.path).")
    try:
        content = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"{file}: not UTF-8 text ({err}); save it as UTF-8.") from err
    if not content.strip():
        raise ValueError(f"{file} is empty; it must hold a JSON array of examples or one JSON object per line.")
    if content.lstrip().startswith("["):
        try:
            items = json.loads(content)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{file}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}. The file must hold one "
                "JSON array of example objects (or be a JSON-lines file with one object per line)."
            ) from err
        if not items:
            raise ValueError(f"{file} holds an empty JSON array; it needs at least one example.")
        return [_check_item(item, f"{file}: item {index} (0-based)") for index, item in enumerate(items)]
    examples = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{file}: invalid JSON at line {number}, column {err.colno}: {err.msg}. A JSON-lines file needs one "
                "complete JSON object per line; a JSON file must start with '[' and hold an array of objects."
            ) from err
        examples.append(_check_item(item, f"{file}: line {number}"))
    return examples


def _chatterbot_turn(value: Any) -> str:
    return "" if value is None else str(value).strip()


def chatterbot(topics: Sequence[str] | str | None = None) -> list[dict]:
    """Short English conversations from the offline ``chatterbot-corpus`` package, as instruction/response pairs.

    Every YAML file ``chatterbot_corpus/data/english/<topic>.yml`` holds ``conversations``: lists of turns. Each pair
    of consecutive turns becomes one example (turn i the instruction, turn i + 1 the output, empty input); turns are
    converted to text and stripped, and pairs with an empty side are skipped. An entry that is a single string (one
    turn, as in a malformed entry of ``trivia.yml``) gives no pair. Files are read in sorted order.

    Args:
        topics: File stems to read (e.g. ``["greetings", "science"]``), or None for all 21.

    Returns:
        The pairs (2,306 for the whole corpus).

    Raises:
        ValueError: An unknown topic (the message lists the available ones), or a file that is not a corpus file.
        ModuleNotFoundError: The package is not installed (run ``make install``).
    """
    import yaml

    module, requirement, relative = CHATTERBOT
    folder = package_folder(module, requirement) / relative
    files = {file.stem: file for file in sorted(folder.glob("*.yml"))}
    if not files:
        raise FileNotFoundError(
            f"No *.yml files in {folder}; reinstall the package with `pip install --no-deps {requirement}`."
        )
    if topics is not None:
        wanted = [topics] if isinstance(topics, str) else list(topics)
        if not wanted:
            raise ValueError(f"chatterbot topics is empty; choose from {sorted(files)} or pass topics=None for all.")
        unknown = [t for t in wanted if t not in files]
        if unknown:
            raise ValueError(
                f"Unknown chatterbot topic(s) {unknown}; choose from {sorted(files)} or pass topics=None for all."
            )
        files = {stem: file for stem, file in files.items() if stem in set(wanted)}
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    pairs = []
    for stem, file in files.items():
        data = yaml.load(file.read_text(encoding="utf-8"), Loader=loader)
        conversations = data.get("conversations") if isinstance(data, dict) else None
        if not isinstance(conversations, list):
            raise ValueError(f"{file}: expected a mapping with a 'conversations' list (chatterbot topic {stem!r}).")
        for conversation in conversations:
            if not isinstance(conversation, list):
                continue
            turns = [_chatterbot_turn(turn) for turn in conversation]
            for question, answer in zip(turns[:-1], turns[1:]):
                if question and answer:
                    pairs.append({"instruction": question, "input": "", "output": answer})
    return pairs


INSTRUCTION_SOURCES: dict[str, Callable[..., list[dict]]] = {
    "alpaca_hub": alpaca_hub,
    "instruction_json": instruction_json,
    "chatterbot": chatterbot,
}


# -- tokenization and batches -----------------------------------------------------------------------------------------


def _eos_id(tokenizer: Any) -> int:
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise ValueError(
            f"The tokenizer ({type(tokenizer).__name__}) has no eos token, which ends every response; "
            "set tokenizer.eos_token first."
        )
    return int(eos)


def tokenize_examples(
    examples: Sequence[dict],
    tokenizer: Any,
    template: str = "alpaca",
    cutoff_len: int = 256,
    train_on_inputs: bool = False,
    system_prompt: str | None = None,
) -> list[dict[str, Any]]:
    """Tokenizes examples for causal-LM training with the prompt positions of ``labels`` masked exactly.

    ``prompt_ids`` are the prompt's tokens (with the tokenizer's special tokens for ``"alpaca"``, without for
    ``"chat"``, whose template already holds them), ``response_ids`` the output's tokens plus the eos token.
    ``input_ids`` is ``(prompt_ids + response_ids)[:cutoff_len]`` and ``labels`` the same with the prompt positions
    set to -100 (kept when ``train_on_inputs``).

    Args:
        examples: Dicts with ``instruction``, ``input`` and ``output``.
        tokenizer: A transformers tokenizer with an eos token.
        template: ``"alpaca"`` or ``"chat"``.
        cutoff_len: Maximum number of tokens.
        train_on_inputs: Also compute the loss on the prompt tokens.
        system_prompt: Optional system message (``"chat"`` only).

    Returns:
        One dict per example: ``input_ids``, ``labels`` (lists of ints) and ``prompt_len`` (the untruncated prompt
        length; when it is >= ``cutoff_len`` no response token is left).
    """
    eos = _eos_id(tokenizer)
    check_template(template, tokenizer, system_prompt)
    if not examples:
        return []
    prompts = [format_prompt(example, template, tokenizer, system_prompt) for example in examples]
    prompt_ids = tokenizer(prompts, add_special_tokens=template == "alpaca")["input_ids"]
    output_ids = tokenizer([example["output"] for example in examples], add_special_tokens=False)["input_ids"]
    encoded = []
    for prompt, output in zip(prompt_ids, output_ids):
        prompt, response = list(prompt), [*output, eos]
        input_ids = (prompt + response)[:cutoff_len]
        masked = len(prompt) if not train_on_inputs else 0
        labels = [IGNORE_INDEX] * min(masked, len(input_ids)) + input_ids[masked:]
        encoded.append({"input_ids": input_ids, "labels": labels, "prompt_len": len(prompt)})
    return encoded


class InstructionDataset(Dataset):
    """Tokenized examples; each item is ``{"input_ids": [...], "labels": [...]}``.

    Args:
        items: The tokenized examples (see :func:`tokenize_examples`).
    """

    def __init__(self, items: list[dict[str, Any]]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        item = self.items[index]
        return {"input_ids": item["input_ids"], "labels": item["labels"]}


class InstructionCollator:
    """Right-pads items to the longest in the batch: ``input_ids`` with ``pad_token_id``, ``labels`` with -100.

    Args:
        pad_token_id: Token id filling the padded ``input_ids`` positions (they are masked out by attention_mask).
    """

    def __init__(self, pad_token_id: int):
        self.pad_token_id = int(pad_token_id)

    def __call__(self, items: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        length = max(len(item["input_ids"]) for item in items)
        input_ids = torch.full((len(items), length), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(items), length), dtype=torch.long)
        labels = torch.full((len(items), length), IGNORE_INDEX, dtype=torch.long)
        for row, item in enumerate(items):
            n = len(item["input_ids"])
            input_ids[row, :n] = torch.as_tensor(item["input_ids"], dtype=torch.long)
            attention[row, :n] = 1
            labels[row, :n] = torch.as_tensor(item["labels"], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def _check_size(value: Any, key: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{key} must be a count (int >= 0) or a fraction in (0, 1); got {value!r}.")
    if isinstance(value, numbers.Integral):
        if value < 0:
            raise ValueError(f"{key} must be a count (int >= 0) or a fraction in (0, 1); got {value}.")
        return int(value)
    if not 0.0 < float(value) < 1.0:
        raise ValueError(
            f"{key} must be a count (int >= 0) or a fraction in (0, 1); got {value!r} (write a count without "
            "a decimal point)."
        )
    return float(value)


def _check_limit(value: Any, key: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{key} must be None or an int >= 1; got {value!r}.")
    return int(value)


def _normalise(text: str) -> str:
    return " ".join(str(text).split()).casefold()


class InstructionDataModule(L.LightningDataModule):
    """Instruction-tuning batches for a transformers ``*ForCausalLM`` model.

    :meth:`setup` loads the source, shuffles it with ``seed`` and takes validation, then test, then train from the
    permutation (disjoint), caps them with ``limit_train`` / ``limit_eval``, tokenizes every example once (see
    :func:`tokenize_examples`) and drops the examples whose prompt alone fills ``cutoff_len`` (counted per split in
    :attr:`dropped`). Batches hold right-padded int64 ``input_ids``, ``attention_mask`` and ``labels`` (-100 on the
    prompt unless ``train_on_inputs``, and on padding).

    Args:
        source: One of ``alpaca_hub``, ``instruction_json``, ``chatterbot``.
        source_args: Keyword arguments of the source function.
        tokenizer: A transformers tokenizer with an eos token (may also be assigned to ``.tokenizer`` before setup).
        template: ``"alpaca"`` or ``"chat"`` (the tokenizer's chat template).
        system_prompt: System message for ``"chat"``; None for the template's default.
        cutoff_len: Maximum tokens per example (prompt + response + eos), >= 2.
        train_on_inputs: Also compute the loss on the prompt tokens.
        val_size: Validation examples: a count (0: none) or a fraction in (0, 1) of the source.
        test_size: Test examples: a count (0: none) or a fraction in (0, 1) of the source.
        batch_size: Training batch size.
        eval_batch_size: Validation/test batch size (None: ``batch_size``).
        num_workers: DataLoader worker processes.
        seed: Seed of the split permutation and of the training shuffle.
        limit_train: Cap on training examples (the first ones of the permutation), or None.
        limit_eval: Cap on the examples of each evaluation split, or None.
        dedupe: Drop exact repeats of (instruction, input, output), compared after whitespace/case normalisation,
            keeping the first; the count is in ``duplicates_removed``. Without it, a corpus with repeated pairs
            (ChatterBot repeats some pairs over 100 times) puts copies of training pairs in validation.
        group_by_instruction: Split whole groups of examples sharing an (instruction, input), so no validation or
            test prompt is also a training prompt (the split sizes are then met to within one group).
    """

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
        batch_size: int = 4,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        limit_train: int | None = None,
        limit_eval: int | None = None,
        dedupe: bool = False,
        group_by_instruction: bool = False,
    ):
        super().__init__()
        check_source_args("instruction", INSTRUCTION_SOURCES, source, source_args)
        check_template(template, tokenizer, system_prompt)
        if tokenizer is not None:
            _eos_id(tokenizer)
        if isinstance(cutoff_len, bool) or not isinstance(cutoff_len, numbers.Integral) or cutoff_len < 2:
            raise ValueError(f"cutoff_len must be an int >= 2 (tokens per example); got {cutoff_len!r}.")
        for key, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1):
                raise ValueError(f"{key} must be an int >= 1; got {value!r}.")
        if isinstance(num_workers, bool) or not isinstance(num_workers, numbers.Integral) or num_workers < 0:
            raise ValueError(f"num_workers must be an int >= 0; got {num_workers!r}.")
        self.save_hyperparameters(ignore=["tokenizer"])
        self.source = source
        self.source_args = dict(source_args or {})
        self.dedupe = bool(dedupe)
        self.group_by_instruction = bool(group_by_instruction)
        self.duplicates_removed = 0
        self.tokenizer = tokenizer
        self.template = template
        self.system_prompt = system_prompt
        self.cutoff_len = int(cutoff_len)
        self.train_on_inputs = bool(train_on_inputs)
        self.val_size = _check_size(val_size, "val_size")
        self.test_size = _check_size(test_size, "test_size")
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size) if eval_batch_size is not None else self.batch_size
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.limit_train = _check_limit(limit_train, "limit_train")
        self.limit_eval = _check_limit(limit_eval, "limit_eval")
        self.datasets: dict[str, InstructionDataset] = {}
        self.examples: dict[str, list[dict]] = {}
        self.split_indices: dict[str, np.ndarray] = {}
        self.dropped: dict[str, int] = {}
        self._generator: torch.Generator | None = None

    @property
    def add_special_tokens(self) -> bool:
        """How to tokenize a formatted prompt for generation: True for ``"alpaca"``, False for ``"chat"``."""
        return self.template == "alpaca"

    @property
    def has_test(self) -> bool:
        """Whether a test split is requested (``test_size`` > 0)."""
        return self.test_size != 0

    def _count(self, size: int | float, n: int) -> int:
        return max(1, int(round(size * n))) if isinstance(size, float) else int(size)

    def setup(self, stage: str | None = None) -> None:
        """Loads, splits and tokenizes the data (once; later calls do nothing).

        Args:
            stage: Lightning's stage (unused: all splits are built together).

        Raises:
            ValueError: No tokenizer, bad source data, splits that leave no training data, or a split emptied
                because its prompts fill ``cutoff_len``.
        """
        if self.datasets:
            return
        if self.tokenizer is None:
            raise ValueError("InstructionDataModule needs a tokenizer (pass tokenizer=... or set .tokenizer).")
        check_template(self.template, self.tokenizer, self.system_prompt)
        examples = call_source("instruction", INSTRUCTION_SOURCES, self.source, self.source_args)
        if self.dedupe:
            seen: set[tuple[str, ...]] = set()
            unique = []
            for example in examples:
                key = tuple(_normalise(example[f]) for f in ("instruction", "input", "output"))
                if key not in seen:
                    seen.add(key)
                    unique.append(example)
            self.duplicates_removed = len(examples) - len(unique)
            examples = unique
        n = len(examples)
        n_val, n_test = self._count(self.val_size, n), self._count(self.test_size, n)
        if n_val + n_test >= n:
            raise ValueError(
                f"The source {self.source!r} has {n} examples: val_size={self.val_size} ({n_val}) and "
                f"test_size={self.test_size} ({n_test}) leave none for training; lower val_size/test_size."
            )
        rng = np.random.default_rng(self.seed)
        if self.group_by_instruction:
            groups: dict[tuple[str, str], list[int]] = {}
            for i, example in enumerate(examples):
                groups.setdefault((_normalise(example["instruction"]), _normalise(example["input"])), []).append(i)
            members = list(groups.values())
            parts: dict[str, list[int]] = {"validation": [], "test": [], "train": []}
            for g in rng.permutation(len(members)):
                split = (
                    "validation"
                    if len(parts["validation"]) < n_val
                    else "test"
                    if len(parts["test"]) < n_test
                    else "train"
                )
                parts[split].extend(members[g])
            if not parts["train"]:
                raise ValueError(
                    f"group_by_instruction: the {len(members)} prompt groups of {self.source!r} all went to "
                    "validation/test; lower val_size/test_size."
                )
            split_order = {k: np.asarray(v, dtype=np.int64) for k, v in parts.items()}
        else:
            order = rng.permutation(n).astype(np.int64)
            split_order = {
                "validation": order[:n_val],
                "test": order[n_val : n_val + n_test],
                "train": order[n_val + n_test :],
            }
        indices = {
            "train": split_order["train"][: self.limit_train],
            "validation": split_order["validation"][: self.limit_eval],
            "test": split_order["test"][: self.limit_eval],
        }
        datasets, kept_examples, kept_indices, dropped = {}, {}, {}, {}
        for split, chosen in indices.items():
            chosen_examples = [examples[i] for i in chosen]
            encoded = tokenize_examples(
                chosen_examples,
                self.tokenizer,
                self.template,
                self.cutoff_len,
                self.train_on_inputs,
                self.system_prompt,
            )
            keep = [k for k, item in enumerate(encoded) if item["prompt_len"] < self.cutoff_len]
            dropped[split] = len(encoded) - len(keep)
            if len(chosen) and not keep:
                raise ValueError(
                    f"All {len(chosen)} {split} examples have prompts of >= cutoff_len={self.cutoff_len} tokens, so "
                    f"no response token is left to learn from; raise cutoff_len (the longest prompt has "
                    f"{max(item['prompt_len'] for item in encoded)} tokens)."
                )
            datasets[split] = InstructionDataset([encoded[k] for k in keep])
            kept_examples[split] = [chosen_examples[k] for k in keep]
            kept_indices[split] = chosen[keep]
        self.examples, self.split_indices, self.dropped = kept_examples, kept_indices, dropped
        self._generator = torch.Generator().manual_seed(self.seed)
        self.datasets = datasets

    def _require_setup(self) -> None:
        if not self.datasets:
            raise RuntimeError("InstructionDataModule: call setup() first.")

    def collator(self) -> InstructionCollator:
        """The batch collator (pads with the tokenizer's pad token, or its eos token when it has none).

        Returns:
            An :class:`InstructionCollator`.
        """
        pad = getattr(self.tokenizer, "pad_token_id", None)
        return InstructionCollator(_eos_id(self.tokenizer) if pad is None else pad)

    def _loader(self, split: str, train: bool = False) -> DataLoader:
        self._require_setup()
        return split_loader(self, split, train, self.collator())

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches (seeded generator; the order changes each epoch, reproducibly)."""
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in a fixed order (an empty loader when ``val_size`` is 0)."""
        return self._loader("validation")

    def test_dataloader(self) -> DataLoader:
        """Test batches in a fixed order.

        Raises:
            RuntimeError: ``test_size`` is 0.
        """
        if not self.has_test:
            raise RuntimeError("InstructionDataModule has no test split (test_size=0); set test_size to make one.")
        return self._loader("test")

    def split_sizes(self) -> dict[str, int]:
        """Number of examples per split after setup() (after limits and dropped examples).

        Returns:
            ``{"train": ..., "validation": ..., "test": ...}``.
        """
        self._require_setup()
        return {split: len(dataset) for split, dataset in self.datasets.items()}

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
