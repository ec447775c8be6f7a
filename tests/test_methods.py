"""Every method of apply_method over tiny models: a table-driven contract suite."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import MODELS, build, output
from peft import PeftModel

from loldu.methods import METHODS, apply_method, count_parameters, load_adapter, merge_method, save_adapter

# method -> (spec fields for hidden size 32, output equals the base at init?)
METHOD_TABLE = {
    "loldu": ({"r": 8}, True),
    "loldu_full": ({"r": 12, "options": {"forward_path": "fused"}}, True),
    "svfit": ({"r": 8}, True),
    "lora": ({"r": 4}, True),
    "pissa": ({"r": 4}, True),
    "vera": ({"r": 8}, True),
    "fourierft": ({"r": 40}, False),  # PEFT's default init draws a random spectrum
    "bitfit": ({}, True),
    "full": ({}, True),
    "linear_probe": ({}, True),
}


def test_table_covers_every_registered_method():
    # A newly registered method gets the whole contract below once it has a row here.
    assert {m.replace("_full", "") for m in METHOD_TABLE} == set(METHODS)


def _spec(method, targets, heads):
    fields, _ = METHOD_TABLE[method]
    spec = {"name": method.replace("_full", ""), "target_modules": targets, "head_modules": heads, **fields}
    return copy.deepcopy(spec)


def _cases():
    for model in MODELS:
        for method in METHOD_TABLE:
            if model == "llama" and method in ("bitfit", "linear_probe"):
                continue  # no biases and no separate head in the tiny LLaMA
            yield model, method


CASES = list(_cases())


def _train(model, inputs, steps=3):
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    for _ in range(steps):
        out = output(model, inputs)
        loss = (out.float() ** 2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


@pytest.mark.parametrize("model_name,method", CASES)
def test_contract(model_name, method, tmp_path):
    torch.manual_seed(0)
    model, targets, heads, inputs = build(model_name)
    with torch.no_grad():
        base_out = output(model, inputs)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    adapted = apply_method(model, _spec(method, targets, heads))
    with torch.no_grad():
        init_out = output(adapted, inputs)
    if METHOD_TABLE[method][1]:
        torch.testing.assert_close(init_out, base_out, rtol=1e-4, atol=1e-5)

    counts = count_parameters(adapted)
    assert counts["trainable"] == sum(p.numel() for p in adapted.parameters() if p.requires_grad)
    assert counts["adapter"] + counts["head"] == counts["trainable"]
    if method == "linear_probe":
        assert counts["adapter"] == 0 and counts["head"] > 0
    else:
        assert counts["adapter"] > 0

    trainable = {n for n, p in adapted.named_parameters() if p.requires_grad}
    snapshot = {n: p.detach().clone() for n, p in adapted.named_parameters()}
    _train(adapted, inputs)
    changed = {n for n, p in adapted.named_parameters() if not torch.equal(p, snapshot[n])}
    assert changed, "training changed nothing"
    assert changed <= trainable, f"frozen parameters changed: {sorted(changed - trainable)[:5]}"
    with torch.no_grad():
        trained_out = output(adapted, inputs)
    assert not torch.allclose(trained_out, base_out), "training did not change the output"

    if isinstance(adapted, PeftModel):
        # PiSSA rewrites its base weights on purpose; every other method leaves them alone.
        if method != "pissa":
            base_now = dict(adapted.get_base_model().named_parameters())
            for name, value in before.items():
                key = next((k for k in base_now if k.replace("base_layer.", "") == name), None)
                if key is not None and not base_now[key].requires_grad:
                    assert torch.equal(base_now[key], value), name
        with adapted.disable_adapter(), torch.no_grad():
            disabled_out = output(adapted, inputs)
        if method != "pissa":  # PiSSA's disabled model is its residual base
            torch.testing.assert_close(disabled_out, base_out, rtol=1e-4, atol=1e-5)
        adapted.merge_adapter()
        with torch.no_grad():
            merged_out = output(adapted, inputs)
        adapted.unmerge_adapter()
        with torch.no_grad():
            unmerged_out = output(adapted, inputs)
        torch.testing.assert_close(merged_out, trained_out, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(unmerged_out, trained_out, rtol=1e-4, atol=1e-5)

    save_adapter(adapted, tmp_path / "adapter")
    fresh, *_ = build(model_name)
    reloaded = load_adapter(fresh, tmp_path / "adapter")
    with torch.no_grad():
        reloaded_out = output(reloaded, inputs)
    torch.testing.assert_close(reloaded_out, trained_out, rtol=1e-4, atol=1e-5)

    plain = merge_method(adapted)
    assert not any("lora_" in n or "loldu_" in n or "modules_to_save" in n for n, _ in plain.named_parameters())
    with torch.no_grad():
        plain_out = output(plain, inputs)
    torch.testing.assert_close(plain_out, trained_out, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("method", ["loldu", "svfit", "lora", "vera", "fourierft"])
def test_half_precision_forward(method, dtype):
    model, targets, heads, inputs = build("bert")
    with torch.no_grad():
        ref = output(apply_method(copy.deepcopy(model), _spec(method, targets, heads)), inputs)
    adapted = apply_method(model.to(dtype), _spec(method, targets, heads))
    with torch.no_grad():
        out = output(adapted, inputs)
    assert out.dtype == dtype
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), ref, rtol=0.1, atol=0.05)
    _train(adapted, inputs, steps=1)  # backward runs in half precision too


@pytest.mark.parametrize("method", ["loldu", "lora", "linear_probe"])
def test_head_lr_puts_the_head_in_a_group_of_its_own(method):
    from loldu.methods import optimizer_param_groups

    base, targets, heads, _ = build("bert")
    model = apply_method(base, _spec(method, targets, heads))
    counts = count_parameters(model)
    plain = optimizer_param_groups(model, 0.01)
    assert all("lr" not in g for g in plain), "without head_lr every group takes the optimizer's lr"
    groups = optimizer_param_groups(model, 0.01, head_lr=0.5)
    (head,) = [g for g in groups if g.get("lr") == 0.5]
    assert sum(p.numel() for p in head["params"]) == counts["head"] > 0
    others = sum(p.numel() for g in groups if g is not head for p in g["params"])
    assert others == counts["adapter"]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=1e-3)
    assert sorted({g["lr"] for g in optimizer.param_groups}) == ([0.5] if method == "linear_probe" else [1e-3, 0.5])
