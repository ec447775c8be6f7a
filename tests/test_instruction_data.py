"""loldu.data.instruction: prompt templates, exact loss masking, cutoff and drops, padding, sources and splits."""

from __future__ import annotations

import json
import os
import types

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from loldu.data.instruction import (  # noqa: E402
    INSTRUCTION_SOURCES,
    InstructionDataModule,
    alpaca_hub,
    chatterbot,
    format_prompt,
    instruction_json,
    tokenize_examples,
)

EXAMPLES = [
    {"instruction": "Name the capital of France.", "input": "", "output": "Paris is the capital of France."},
    {"instruction": "Translate to German.", "input": "Good morning, friend!", "output": "Guten Morgen, Freund!"},
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "2 + 3 = 5"},
    {"instruction": "Say hello.", "input": "", "output": "Hello! How can I help you today?"},
]


@pytest.fixture(scope="module")
def tokenizer():
    from loldu.models import smollm2_tokenizer

    return smollm2_tokenizer()


def _write_json(tmp_path, items, name="data.json"):
    path = tmp_path / name
    path.write_text(json.dumps(items, indent=1), encoding="utf-8")
    return path


def _numbered(n):
    return [{"instruction": f"Question number {i}?", "output": f"Answer {i}."} for i in range(n)]


def _module(tokenizer, path, **kwargs):
    kwargs = {"val_size": 1, "batch_size": 8, **kwargs}
    dm = InstructionDataModule("instruction_json", {"path": str(path)}, tokenizer=tokenizer, **kwargs)
    dm.setup()
    return dm


def test_alpaca_template_text():
    with_input = format_prompt({"instruction": "Sum these.", "input": "1, 2"}, "alpaca")
    assert with_input == (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nSum these.\n\n### Input:\n1, 2\n\n### Response:\n"
    )
    without = (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request."
        "\n\n### Instruction:\nSum these.\n\n### Response:\n"
    )
    assert format_prompt({"instruction": "Sum these.", "input": ""}, "alpaca") == without
    assert format_prompt({"instruction": "Sum these."}, "alpaca") == without
    with pytest.raises(ValueError, match="Unknown prompt template 'vicuna'"):
        format_prompt(EXAMPLES[0], "vicuna")
    with pytest.raises(ValueError, match="system_prompt only applies to template='chat'"):
        format_prompt(EXAMPLES[0], "alpaca", system_prompt="Be brief.")
    with pytest.raises(ValueError, match="has none; use template='alpaca'"):
        format_prompt(EXAMPLES[0], "chat", types.SimpleNamespace(chat_template=None))


def test_chat_template_prompt(tokenizer):
    prompt = format_prompt(EXAMPLES[1], "chat", tokenizer, system_prompt="You translate.")
    assert prompt == (
        "<|im_start|>system\nYou translate.<|im_end|>\n"
        "<|im_start|>user\nTranslate to German.\n\nGood morning, friend!<|im_end|>\n<|im_start|>assistant\n"
    )
    default = format_prompt(EXAMPLES[0], "chat", tokenizer)
    assert default.endswith("<|im_start|>user\nName the capital of France.<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("template", ["alpaca", "chat"])
def test_exact_masking(tmp_path, tokenizer, template):
    dm = _module(tokenizer, _write_json(tmp_path, EXAMPLES), template=template, val_size=0)
    assert dm.split_sizes() == {"train": 4, "validation": 0, "test": 0} and dm.dropped["train"] == 0
    assert len(dm.val_dataloader()) == 0 and not dm.has_test
    special = template == "alpaca"
    assert dm.add_special_tokens is special
    shown = dm.generation_examples(10, "train")
    assert sorted(e["reference"] for e in shown) == sorted(e["output"] for e in EXAMPLES)
    for item, example in zip(dm.datasets["train"], shown):
        assert example["prompt"] == format_prompt(example, template, tokenizer)
        n_prompt = len(tokenizer(example["prompt"], add_special_tokens=special)["input_ids"])
        ids, labels = item["input_ids"], item["labels"]
        assert len(ids) == len(labels) > n_prompt
        assert labels[:n_prompt] == [-100] * n_prompt
        assert labels[n_prompt:] == ids[n_prompt:]
        assert ids[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(labels[n_prompt:]) == example["reference"] + "<|im_end|>"
        assert tokenizer.decode(ids[:n_prompt]) == example["prompt"]


class _Recorder:
    """Delegates to a tokenizer and records the add_special_tokens flag of every call."""

    def __init__(self, tokenizer):
        self.tokenizer, self.flags = tokenizer, []

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)

    def __call__(self, texts, **kwargs):
        self.flags.append(kwargs["add_special_tokens"])
        return self.tokenizer(texts, **kwargs)


@pytest.mark.parametrize(("template", "flags"), [("alpaca", [True, False]), ("chat", [False, False])])
def test_special_tokens_only_for_alpaca_prompts(tokenizer, template, flags):
    recorder = _Recorder(tokenizer)
    encoded = tokenize_examples(EXAMPLES, recorder, template, cutoff_len=512)
    assert recorder.flags == flags  # prompts, then outputs (the chat template already holds its special tokens)
    assert [e["input_ids"][-1] for e in encoded] == [tokenizer.eos_token_id] * len(EXAMPLES)


def test_train_on_inputs_and_padding(tmp_path, tokenizer):
    dm = _module(tokenizer, _write_json(tmp_path, EXAMPLES), val_size=0, train_on_inputs=True)
    batch = next(iter(dm.train_dataloader()))
    assert all(t.dtype == torch.int64 for t in batch.values())
    real = batch["attention_mask"].bool()
    assert batch["input_ids"].shape == batch["labels"].shape == (4, int(real.sum(1).max()))
    assert torch.equal(batch["labels"][real], batch["input_ids"][real])
    assert (batch["labels"][~real] == -100).all() and (batch["input_ids"][~real] == tokenizer.pad_token_id).all()
    assert (~real).any()  # the examples differ in length, so some rows are padded

    collate, pad = dm.collator(), tokenizer.pad_token_id
    out = collate([{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [4], "labels": [4]}])
    assert out["input_ids"].tolist() == [[1, 2, 3], [4, pad, pad]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert out["labels"].tolist() == [[-100, 2, 3], [4, -100, -100]]


def test_cutoff_truncates_and_drops(tmp_path, tokenizer):
    short = {"instruction": "Hi.", "input": "", "output": "A long answer with many words in it to cut off here."}
    long = {"instruction": "Tell me everything. " * 20, "input": "", "output": "No."}
    n_prompt = len(tokenizer(format_prompt(short, "alpaca"))["input_ids"])
    cutoff = n_prompt + 3
    dm = _module(tokenizer, _write_json(tmp_path, [short, long] * 3), val_size=2, cutoff_len=cutoff)
    assert sum(dm.dropped.values()) == 3 and sum(dm.split_sizes().values()) == 3
    for split in ("train", "validation"):
        assert all(e["instruction"] == "Hi." for e in dm.examples[split])
        for item in dm.datasets[split]:
            assert len(item["input_ids"]) == cutoff and tokenizer.eos_token_id not in item["input_ids"][n_prompt:]
            assert item["labels"][n_prompt:] == tokenizer(short["output"], add_special_tokens=False)["input_ids"][:3]
    # seed 1 puts example 0 (the long one) first in the permutation, i.e. into validation
    with pytest.raises(ValueError, match=r"All 1 validation examples .* raise cutoff_len"):
        _module(tokenizer, _write_json(tmp_path, [long, short, short]), val_size=1, cutoff_len=cutoff, seed=1)


def test_chatterbot_corpus():
    pairs = chatterbot()["train"].to_list()
    assert len(pairs) == 2306
    assert all(isinstance(p[k], str) for p in pairs for k in ("instruction", "input", "output"))
    assert all(p["instruction"] and p["output"] and p["input"] == "" for p in pairs)
    assert pairs == chatterbot()["train"].to_list()  # deterministic
    greetings, science = (chatterbot(topics)["train"].to_list() for topics in (["greetings"], ["science", "greetings"]))
    assert 0 < len(greetings) < len(science) < len(pairs)
    assert science[: len(greetings)] == greetings  # files are read in sorted order
    assert {"instruction": "Hello", "input": "", "output": "Hi"} in greetings
    with pytest.raises(ValueError, match=r"Unknown chatterbot topic\(s\) \['gardening'\].*'greetings'"):
        chatterbot(["gardening"])


def test_instruction_json_array_and_jsonl(tmp_path):
    array = _write_json(tmp_path, [{"instruction": "a", "output": "b", "extra": 1}, EXAMPLES[1]])
    expected = [{"instruction": "a", "input": "", "output": "b"}, EXAMPLES[1]]
    assert instruction_json(array)["train"].to_list() == expected
    lines = tmp_path / "data.jsonl"
    lines.write_text("\n".join(json.dumps(e) for e in expected) + "\n\n", encoding="utf-8")
    assert instruction_json(str(lines))["train"].to_list() == expected


@pytest.mark.parametrize(
    ("content", "error", "match"),
    [
        (None, FileNotFoundError, r"the file '.*missing\.json' does not exist"),
        ("", ValueError, r"bad\.json is empty"),
        ("[]", ValueError, r"bad\.json holds an empty JSON array"),
        (
            '[\n{"instruction": "a", "output": "b"},\n{"instruction": }\n]',
            ValueError,
            r"bad\.json: invalid JSON at line 3",
        ),
        ('{"instruction": "a", "output": "b"}\n{"instruction": "a"', ValueError, r"bad\.json: invalid JSON at line 2"),
        (
            '[{"instruction": "a", "output": "b"}, "text"]',
            ValueError,
            r"bad\.json: item 1 \(0-based\) is a str, not an",
        ),
        ('[{"output": "b"}]', ValueError, r"bad\.json: item 0 \(0-based\) has no 'instruction' field; each example"),
        ('[{"instruction": "a"}]', ValueError, r"item 0 \(0-based\) has no 'output' field; .*string fields"),
        (
            '\n{"instruction": "a", "output": 3}',
            ValueError,
            r"bad\.json: line 2: the 'output' field is a int, not a str",
        ),
        ('[{"instruction": ["a"], "output": "b"}]', ValueError, r"item 0 .*'instruction' field is a list"),
        ('[{"instruction": "a", "input": 1, "output": "b"}]', ValueError, r"item 0 .*'input' field is a int"),
    ],
)
def test_instruction_json_errors(tmp_path, content, error, match):
    path = tmp_path / ("missing.json" if content is None else "bad.json")
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(error, match=match):
        instruction_json(path)


def test_splits(tmp_path, tokenizer):
    path = _write_json(tmp_path, _numbered(40))

    def indices(**kwargs):
        dm = _module(tokenizer, path, **kwargs)
        return dm, {split: set(ix.tolist()) for split, (_, ix) in dm.split_indices.items()}

    dm, first = indices(val_size=5, test_size=0.25, seed=3)
    assert dm.split_sizes() == {"train": 25, "validation": 5, "test": 10} and dm.has_test
    assert set().union(*first.values()) == set(range(40)) and sum(map(len, first.values())) == 40
    assert len(next(iter(dm.test_dataloader()))["input_ids"]) == 8
    again = [e["reference"] for e in dm.generation_examples(3)]
    assert again == [f"Answer {i}." for i in dm.split_indices["validation"][1][:3]]
    dm.setup()  # idempotent
    assert [e["reference"] for e in dm.generation_examples(3)] == again
    assert indices(val_size=5, test_size=0.25, seed=3)[1] == first
    assert indices(val_size=5, test_size=0.25, seed=4)[1] != first
    dm, fraction = indices(val_size=0.1)
    assert dm.split_sizes()["validation"] == 4 and not dm.has_test
    with pytest.raises(RuntimeError, match="no test split"):
        dm.test_dataloader()
    dm, _ = indices(val_size=10, limit_train=7, limit_eval=3, seed=3)
    assert dm.split_sizes() == {"train": 7, "validation": 3, "test": 0}
    assert np.array_equal(
        dm.split_indices["validation"][1], indices(val_size=10, seed=3)[0].split_indices["validation"][1][:3]
    )
    with pytest.raises(ValueError, match=r"has 40 examples: val_size=30 \(30\) and test_size=10 \(10\) leave none"):
        indices(val_size=30, test_size=10)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"source": "alpaca"}, r"Unknown instruction source 'alpaca'; choose one of \['alpaca_hub', 'chatterbot'"),
        ({"source_args": {"topic": "x"}}, r"Unknown source_args \['topic'\]"),
        ({"template": "vicuna"}, "Unknown prompt template 'vicuna'"),
        ({"cutoff_len": 1}, "cutoff_len must be an int >= 2"),
        ({"val_size": 1.0}, r"val_size must be a count \(int >= 0\) or a fraction in \(0, 1\); got 1.0"),
        ({"val_size": -1}, "val_size must be a count"),
        ({"test_size": True}, "test_size must be a count"),
        ({"batch_size": 0}, "batch_size must be an int >= 1"),
        ({"eval_batch_size": 0}, "eval_batch_size must be an int >= 1"),
        ({"limit_train": 0}, "limit_train must be None or an int >= 1"),
        ({"system_prompt": "Be brief."}, "system_prompt only applies to template='chat'"),
    ],
)
def test_argument_errors(tokenizer, kwargs, match):
    args = {"source": "chatterbot", "tokenizer": tokenizer, **kwargs}
    with pytest.raises(ValueError, match=match):
        InstructionDataModule(**args)


def test_tokenizer_checks(tokenizer):
    no_chat = types.SimpleNamespace(chat_template=None, eos_token_id=2)
    with pytest.raises(ValueError, match="use template='alpaca'"):
        InstructionDataModule("chatterbot", tokenizer=no_chat, template="chat")
    with pytest.raises(ValueError, match="has no eos token"):
        InstructionDataModule("chatterbot", tokenizer=types.SimpleNamespace(eos_token_id=None))
    with pytest.raises(ValueError, match="needs a tokenizer"):
        InstructionDataModule("chatterbot").setup()
    dm = InstructionDataModule("chatterbot", {"topics": ["greetings"]}, tokenizer=tokenizer, val_size=5)
    dm.setup()
    assert dm.split_sizes()["train"] == chatterbot(["greetings"])["train"].num_rows - 5


def test_alpaca_hub(monkeypatch):
    import datasets

    assert INSTRUCTION_SOURCES["alpaca_hub"] is alpaca_hub
    rows = {"instruction": ["a", "b"], "input": ["", None], "output": ["c", "d"]}
    monkeypatch.setattr(
        datasets, "load_dataset", lambda *a, **k: datasets.DatasetDict(train=datasets.Dataset.from_dict(rows))
    )
    assert alpaca_hub()["train"].to_list() == [
        {"instruction": "a", "input": "", "output": "c"},
        {"instruction": "b", "input": "", "output": "d"},
    ]
    with pytest.raises(ValueError, match=r"has no split 'test'; it has \['train'\]"):
        alpaca_hub(split="test")

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'yahma/alpaca-cleaned' on the Hub (offline)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(RuntimeError, match=r"alpaca-cleaned' could not be loaded .*source='instruction_json'"):
        alpaca_hub()


def test_dedupe_and_grouped_splits_keep_training_prompts_out_of_validation(tmp_path, tokenizer):
    items = []
    for i in range(30):
        items += [{"instruction": f"Prompt {i}?", "output": f"Reply {i}."}] * 3  # exact repeats
        items.append({"instruction": f"prompt  {i}?", "output": f"Another reply {i}."})  # same prompt, new reply
    path = _write_json(tmp_path, items)

    def prompts(dm, split):
        return {" ".join(e["instruction"].split()).casefold() for e in dm.examples[split]}

    plain = _module(tokenizer, path, val_size=20)
    assert plain.duplicates_removed == 0 and prompts(plain, "train") & prompts(plain, "validation")

    dm = _module(tokenizer, path, val_size=20, dedupe=True, group_by_instruction=True)
    assert dm.duplicates_removed == 60  # 30 prompts x 2 extra copies
    sizes = dm.split_sizes()
    assert sizes["train"] + sizes["validation"] == 60 and sizes["validation"] == 20  # whole groups of 2
    assert not prompts(dm, "train") & prompts(dm, "validation")
    again = _module(tokenizer, path, val_size=20, dedupe=True, group_by_instruction=True)
    assert prompts(again, "validation") == prompts(dm, "validation")  # seeded


def test_check_dedupes_and_splits_without_a_tokenizer():
    dm = InstructionDataModule("chatterbot", val_size=200, dedupe=True, group_by_instruction=True)
    dm.check()  # reads, dedupes and splits: no tokenizer needed
    assert dm.duplicates_removed == 1130
    validation = dm.split_indices["validation"][1]
    assert validation[:8].tolist() == [558, 401, 440, 1019, 1000, 5, 6, 7]  # the default chatterbot split, pinned
    assert len(validation) == 208 and len(dm.split_indices["train"][1]) == 968
