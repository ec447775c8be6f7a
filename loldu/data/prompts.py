"""Prompt templates and exact loss masking for instruction tuning of causal language models.

An example is a dict with the string fields ``instruction``, ``input`` (may be empty) and ``output``. Its prompt is
formatted with a template (``"alpaca"`` or the tokenizer's own ``"chat"`` template); prompt and response are tokenized
separately so the prompt positions of ``labels`` can be masked exactly (-100).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

IGNORE_INDEX = -100
TEMPLATES = ("alpaca", "chat")

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


def eos_id(tokenizer: Any) -> int:
    """The tokenizer's eos token id, which ends every response.

    Raises:
        ValueError: The tokenizer has none.
    """
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
    eos = eos_id(tokenizer)
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
