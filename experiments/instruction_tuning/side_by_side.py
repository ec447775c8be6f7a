"""Greedy generations of the instruction-tuning runs side by side (prints markdown).

Reads ``<runs>/<method>/generations.jsonl`` (rows ``{step, prompt, generation, reference}``, written at every
validation): for each validation prompt, the reference, the base model's answer (step 0, the same for every run)
and each run's answer after its last step.

    python experiments/instruction_tuning/side_by_side.py experiments/instruction_tuning/runs
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path


def _cell(text: str) -> str:
    return re.sub(r"\s+", " ", text).replace("|", "/").strip()


def _short(prompt: str) -> str:
    """The user's turn of a chat-template prompt (the last user message), else the prompt itself."""
    turns = re.findall(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", prompt, flags=re.S)
    return turns[-1] if turns else prompt


def main(folder: Path) -> None:
    runs = sorted(p.parent for p in folder.glob("*/generations.jsonl"))
    if not runs:
        raise SystemExit(f"no */generations.jsonl below {folder}")
    base: dict[str, str] = {}
    final: dict[str, dict[str, str]] = {}
    references: dict[str, str] = {}
    for run in runs:
        rows = [json.loads(line) for line in (run / "generations.jsonl").read_text().splitlines() if line.strip()]
        last = max(r["step"] for r in rows)
        for r in rows:
            references[r["prompt"]] = r["reference"]
            if r["step"] == 0:
                base.setdefault(r["prompt"], r["generation"])
            if r["step"] == last:
                final.setdefault(r["prompt"], {})[run.name] = r["generation"]
    names = [run.name for run in runs]
    print("| prompt | reference | base model (step 0) | " + " | ".join(names) + " |")
    print("|" + " --- |" * (3 + len(names)))
    for prompt, reference in references.items():
        answers = [final.get(prompt, {}).get(n, "") for n in names]
        cells = [_short(prompt), reference, base.get(prompt, ""), *answers]
        print("| " + " | ".join(_cell(c) for c in cells) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
