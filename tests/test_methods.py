"""Every method of apply_method over tiny models: a table-driven contract suite."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest
import torch
from helpers import METHOD_TABLE, MODELS, build, method_spec, output, train_a_few_steps
from peft import PeftModel

from loldu.config.checks import DIFFUSION_METHODS
from loldu.methods import METHODS, apply_method, count_parameters, load_adapter, merge_method, save_adapter


def test_table_covers_every_registered_method():
    # A newly registered method gets the whole contract below once it has a row here; the Stable Diffusion-only
    # methods (textual inversion, DreamBooth's full UNet) have theirs in tests/test_diffusion_methods.py; a family
    # (method=peft) is no method by itself: tests/test_peft_tuners.py runs some of its members.
    families = {name for name, entry in METHODS.items() if entry.members is not None}
    assert {m.replace("_full", "") for m in METHOD_TABLE} == set(METHODS) - set(DIFFUSION_METHODS) - families


def _cases():
    for model in MODELS:
        for method in METHOD_TABLE:
            if model == "llama" and method in ("bitfit", "linear_probe"):
                continue  # no biases and no separate head in the tiny LLaMA
            yield model, method


CASES = list(_cases())


@dataclass
class Trained:
    """One tiny model adapted by one method and trained a few steps, with what was seen on the way."""

    model_name: str
    method: str
    inputs: dict
    before: dict  # the base model's parameters before apply_method
    base_out: torch.Tensor
    init_out: torch.Tensor  # the adapted model's output before training
    adapted: torch.nn.Module  # trained
    trainable: set  # names of the parameters that require grad
    changed: set  # names of the parameters that training changed
    trained_out: torch.Tensor


@pytest.fixture(scope="module", params=CASES, ids=[f"{model}-{method}" for model, method in CASES])
def trained(request):
    """Each (model, method) case adapted and trained once, shared by the contract tests below; tests that change
    the model work on a copy."""
    model_name, method = request.param
    torch.manual_seed(0)
    model, targets, heads, inputs = build(model_name)
    with torch.no_grad():
        base_out = output(model, inputs)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    adapted = apply_method(model, method_spec(method, targets, heads))
    with torch.no_grad():
        init_out = output(adapted, inputs)
    trainable = {n for n, p in adapted.named_parameters() if p.requires_grad}
    snapshot = {n: p.detach().clone() for n, p in adapted.named_parameters()}
    train_a_few_steps(adapted, inputs)
    changed = {n for n, p in adapted.named_parameters() if not torch.equal(p, snapshot[n])}
    with torch.no_grad():
        trained_out = output(adapted, inputs)
    return Trained(model_name, method, inputs, before, base_out, init_out, adapted, trainable, changed, trained_out)


@pytest.fixture(scope="module")
def merged(trained):
    """merge_method on a copy of the trained model: the plain model and its output."""
    plain = merge_method(copy.deepcopy(trained.adapted))
    with torch.no_grad():
        return plain, output(plain, trained.inputs)


def _peft_only(trained, reason: str = "") -> None:
    if not isinstance(trained.adapted, PeftModel):
        pytest.skip(f"{trained.method} does not make a PeftModel")
    if reason and trained.method == "pissa":
        pytest.skip(reason)


def test_output_equals_the_base_at_init(trained):
    if not METHOD_TABLE[trained.method][1]:
        pytest.skip(f"{trained.method}'s init changes the output by design")
    torch.testing.assert_close(trained.init_out, trained.base_out, rtol=1e-4, atol=1e-5)


def test_parameter_counts_split_the_trainable_ones_into_adapter_and_head(trained):
    counts = count_parameters(trained.adapted)
    assert counts["trainable"] == sum(p.numel() for p in trained.adapted.parameters() if p.requires_grad)
    assert counts["adapter"] + counts["head"] == counts["trainable"]


def test_every_method_but_linear_probe_has_adapter_parameters(trained):
    counts = count_parameters(trained.adapted)
    if trained.method == "linear_probe":
        assert counts["adapter"] == 0 and counts["head"] > 0
    else:
        assert counts["adapter"] > 0


def test_training_changes_some_parameters(trained):
    assert trained.changed, "training changed nothing"


def test_training_changes_only_trainable_parameters(trained):
    frozen = trained.changed - trained.trainable
    assert trained.changed <= trained.trainable, f"frozen parameters changed: {sorted(frozen)[:5]}"


def test_training_changes_the_output(trained):
    assert not torch.allclose(trained.trained_out, trained.base_out), "training did not change the output"


def test_training_leaves_the_frozen_base_weights_alone(trained):
    _peft_only(trained, "PiSSA rewrites its base weights on purpose")
    base_now = dict(trained.adapted.get_base_model().named_parameters())
    for name, value in trained.before.items():
        key = next((k for k in base_now if k.replace("base_layer.", "") == name), None)
        if key is not None and not base_now[key].requires_grad:
            assert torch.equal(base_now[key], value), name


def test_disabled_adapter_gives_the_base_output(trained):
    _peft_only(trained, "PiSSA's disabled model is its residual base")
    with trained.adapted.disable_adapter(), torch.no_grad():
        disabled_out = output(trained.adapted, trained.inputs)
    torch.testing.assert_close(disabled_out, trained.base_out, rtol=1e-4, atol=1e-5)


def test_merge_and_unmerge_adapter_keep_the_trained_output(trained):
    _peft_only(trained)
    adapted = copy.deepcopy(trained.adapted)
    adapted.merge_adapter()
    with torch.no_grad():
        merged_out = output(adapted, trained.inputs)
    adapted.unmerge_adapter()
    with torch.no_grad():
        unmerged_out = output(adapted, trained.inputs)
    torch.testing.assert_close(merged_out, trained.trained_out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(unmerged_out, trained.trained_out, rtol=1e-4, atol=1e-5)


def test_saved_adapter_reloads_to_the_trained_output(trained, tmp_path):
    save_adapter(trained.adapted, tmp_path / "adapter")
    fresh, *_ = build(trained.model_name)
    reloaded = load_adapter(fresh, tmp_path / "adapter")
    with torch.no_grad():
        reloaded_out = output(reloaded, trained.inputs)
    torch.testing.assert_close(reloaded_out, trained.trained_out, rtol=1e-4, atol=1e-5)


def test_merge_method_leaves_no_adapter_parameters(merged):
    plain, _ = merged
    assert not any("lora_" in n or "loldu_" in n or "modules_to_save" in n for n, _ in plain.named_parameters())


def test_merge_method_keeps_the_trained_output(trained, merged):
    _, plain_out = merged
    torch.testing.assert_close(plain_out, trained.trained_out, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("method", ["loldu", "svfit", "lora", "vera", "fourierft"])
def test_half_precision_forward(method, dtype):
    model, targets, heads, inputs = build("bert")
    with torch.no_grad():
        ref = output(apply_method(copy.deepcopy(model), method_spec(method, targets, heads)), inputs)
    adapted = apply_method(model.to(dtype), method_spec(method, targets, heads))
    with torch.no_grad():
        out = output(adapted, inputs)
    assert out.dtype == dtype
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), ref, rtol=0.1, atol=0.05)
    train_a_few_steps(adapted, inputs, steps=1)  # backward runs in half precision too


@pytest.mark.parametrize("method", ["loldu", "lora", "linear_probe"])
def test_head_lr_puts_the_head_in_a_group_of_its_own(method):
    from loldu.methods import optimizer_param_groups

    base, targets, heads, _ = build("bert")
    model = apply_method(base, method_spec(method, targets, heads))
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
