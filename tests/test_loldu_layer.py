"""LoLDU/SVFit layer specifics: forward paths, inits, sigma, counts, buffers, adapters."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import build, output
from peft import PeftModel, get_peft_model
from torch import nn

from loldu.methods import (
    LoLDUConfig,
    LoLDULayer,
    SVFitConfig,
    apply_method,
    count_parameters,
    frozen_buffer_count,
    optimizer_param_groups,
)
from loldu.methods.diagonal import INITS
from loldu.models.tiny import TinyMLP


def _layer(config, out_f=20, in_f=14, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(in_f, out_f)).to(dtype)
    peft_model = get_peft_model(model, config)
    layer = next(m for m in peft_model.modules() if isinstance(m, LoLDULayer))
    return peft_model, layer


def _grads(model, x):
    model.zero_grad()
    y = model(x)
    (y**2).sum().backward()
    named = dict(model.named_parameters())
    return y.detach(), {n: named[n].grad.clone() for n in named if named[n].requires_grad}


@pytest.mark.parametrize("tokens,r", [(7, 9), (40, 14)])  # fused dz grad: by projections / by weight gradient
def test_forward_paths_agree_in_output_and_gradients(tokens, r):
    from loldu.methods.diagonal import dz_grad_costs

    by_proj, by_weight = dz_grad_costs(3 * tokens, r, 14, 20)
    assert (by_weight < by_proj) == (tokens == 40)
    x = torch.randn(3, tokens, 14, dtype=torch.float64)
    results = {}
    for path in ("activation", "weight", "fused"):
        model, layer = _layer(LoLDUConfig(r=r, target_modules=["0"], forward_path=path))
        with torch.no_grad():  # move off the starting point so dz != 0
            layer.loldu_z["default"].add_(torch.linspace(-1, 1, r, dtype=torch.float64).float())
            layer.loldu_sigma["default"].fill_(1.3)
        results[path] = _grads(model, x.clone().requires_grad_(True))
    y_ref, g_ref = results["activation"]
    for path in ("weight", "fused"):
        y, g = results[path]
        torch.testing.assert_close(y, y_ref, rtol=1e-6, atol=1e-6)
        assert g.keys() == g_ref.keys()
        for name in g:
            torch.testing.assert_close(g[name], g_ref[name], rtol=1e-5, atol=1e-5)


def test_fused_path_gradient_of_input_matches_autograd():
    x = torch.randn(5, 14, dtype=torch.float64)
    grads = {}
    for path in ("activation", "fused"):
        model, layer = _layer(LoLDUConfig(r=6, target_modules=["0"], forward_path=path))
        with torch.no_grad():
            layer.loldu_z["default"].mul_(1.5)
        xi = x.clone().requires_grad_(True)
        (model(xi) ** 2).sum().backward()
        grads[path] = xi.grad
    torch.testing.assert_close(grads["fused"], grads["activation"], rtol=1e-6, atol=1e-6)


def test_auto_path_follows_the_cost_model():
    _, layer = _layer(LoLDUConfig(r=4, target_modules=["0"]), out_f=64, in_f=64)
    # Training: activation 2*T*r*128 against fused 64*r*64 + min(T*r*128, (T + r)*4096).
    assert layer.choose_path("default", 8) == "activation"
    assert layer.choose_path("default", 1024) == "fused"
    with torch.no_grad():  # evaluation: T*r*128 against 64*r*64, break-even at T = 32
        assert layer.choose_path("default", 31) == "activation"
        assert layer.choose_path("default", 33) == "fused"
    layer.forward_path["default"] = "weight"
    assert layer.choose_path("default", 8) == "weight"


@pytest.mark.parametrize("init", INITS)
def test_every_init_starts_from_the_pretrained_function(init):
    torch.manual_seed(0)
    model, targets, heads, inputs = build("mlp")
    with torch.no_grad():
        base = output(model, inputs)
    adapted = apply_method(model, {"name": "loldu", "r": 12, "target_modules": targets, "options": {"init": init}})
    with torch.no_grad():
        torch.testing.assert_close(output(adapted, inputs), base, rtol=1e-5, atol=1e-6)


def test_init_statistics():
    _, layer = _layer(LoLDUConfig(r=14, target_modules=["0"], init="lu"))
    d = layer.loldu_d["default"]
    m, s = d.mean(), d.std(unbiased=False)
    expected = {
        "lu": lambda z: torch.equal(z, d),
        "constant": lambda z: torch.allclose(z, m.expand(14)),
        "ones": lambda z: torch.equal(z, torch.ones(14)),
        "zeros": lambda z: torch.equal(z, torch.zeros(14)),
        "uniform": lambda z: bool((z.abs() <= m.abs() / 2 + 1e-7).all()) and z.std() > 0,
        "s_uniform": lambda z: bool((z.abs() <= 1).all()) and z.std() > 0,
        "normal": lambda z: z.std() > 0 and not torch.allclose(z, d),
        "s_normal": lambda z: z.std() > 0 and not torch.allclose(z, d),
    }
    for init, check in expected.items():
        _, lay = _layer(LoLDUConfig(r=14, target_modules=["0"], init=init))
        assert check(lay.loldu_z["default"].detach()), init
    assert s > 0


def test_init_residual_d_reproduces_the_authors_offset():
    torch.manual_seed(0)
    x = torch.randn(4, 14, dtype=torch.float64)
    base_model, _ = _layer(LoLDUConfig(r=8, target_modules=["0"]))
    with torch.no_grad(), base_model.disable_adapter():
        base = base_model(x)
    for init, differs in (("lu", False), ("ones", True)):
        model, layer = _layer(LoLDUConfig(r=8, target_modules=["0"], init=init, init_residual="d"))
        with torch.no_grad():
            y = model(x)
        assert (not torch.allclose(y, base)) == differs, init
        if differs:
            # W_eff - W = L diag(z0 - d) U' at step 0.
            z0 = layer.loldu_z["default"].double()
            d = layer.loldu_d["default"].double()
            delta = (layer.loldu_left["default"] * (z0 - d)) @ layer.loldu_right["default"]
            torch.testing.assert_close(y - base, x @ delta.T, rtol=1e-5, atol=1e-6)


def test_sigma_can_be_frozen():
    model, layer = _layer(LoLDUConfig(r=5, target_modules=["0"], train_sigma=False))
    assert not layer.loldu_sigma["default"].requires_grad
    assert layer.loldu_z["default"].requires_grad
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 5


def _vit_base():
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    return ViTModel(ViTConfig(), add_pooling_layer=False)  # ViT-base shapes: 12 x (768 x 768) q/v


def test_parameter_counts_for_vit_base_shapes():
    vit = _vit_base()
    targets = ["q_proj", "v_proj"]
    # method.md: z only 24 / 1,536 / 18,432; z and sigma 48 / 1,560 / 18,456.
    for r, with_sigma, z_only in ((1, 48, 24), (64, 1560, 1536), (768, 18456, 18432)):
        for train_sigma, expected in ((True, with_sigma), (False, z_only)):
            spec = {"name": "loldu", "r": r, "target_modules": targets, "options": {"train_sigma": train_sigma}}
            adapted = apply_method(copy.deepcopy(vit), spec)
            counts = count_parameters(adapted)
            assert counts["adapter"] == expected and counts["head"] == 0
            # Frozen buffers: P L_r and U'_r only, r*(in+out) values per matrix.
            assert frozen_buffer_count(adapted) == 24 * r * (768 + 768)
            if r == 768:
                break  # one full-rank factorisation is enough (about 10 s)


def test_head_is_counted_apart_from_the_adapter():
    model, targets, heads, _ = build("bert")
    adapted = apply_method(model, {"name": "loldu", "r": 8, "target_modules": targets, "head_modules": heads})
    counts = count_parameters(adapted)
    assert counts["adapter"] == 2 * 2 * 8  # 2 layers x (query, value) x z (train_sigma: false by default)
    assert counts["head"] == 32 * 3 + 3  # BertForSequenceClassification.classifier: Linear(32, 3)
    assert counts["trainable"] == counts["adapter"] + counts["head"]


def test_no_weight_decay_on_z_and_sigma_by_default():
    model, targets, heads, _ = build("bert")
    spec = {"name": "loldu", "r": 8, "target_modules": targets, "head_modules": heads, "options": {"train_sigma": True}}
    adapted = apply_method(model, spec)
    groups = optimizer_param_groups(adapted, weight_decay=0.1)
    decayed = {id(p) for p in groups[0]["params"]}
    names = {id(p): n for n, p in adapted.named_parameters()}
    assert all("classifier" in names[i] for i in decayed)
    assert groups[1]["weight_decay"] == 0.0 and len(groups[1]["params"]) == 8
    both = optimizer_param_groups(adapted, weight_decay=0.1, decay_diagonal=True)
    assert len(both) == 1


def test_several_adapters_share_one_base(tmp_path):
    torch.manual_seed(0)
    model = TinyMLP()
    x = torch.randn(4, 12)
    with torch.no_grad():
        base = model(x)
    pm = get_peft_model(model, LoLDUConfig(r=4, target_modules=["fc1", "fc2"]), adapter_name="a")
    pm.add_adapter("b", LoLDUConfig(r=6, target_modules=["fc1"]))
    pm.add_adapter("c", LoLDUConfig(r=12, target_modules=["fc1", "fc2"], init="ones"))
    for name, scale in (("a", 1.5), ("c", 0.5)):
        layer = pm.base_model.model.fc1
        with torch.no_grad():
            layer.loldu_z[name].mul_(scale)
    outs = {}
    for name in ("a", "c"):
        pm.set_adapter(name)
        with torch.no_grad():
            outs[name] = pm(x)
    assert not torch.allclose(outs["a"], outs["c"])
    assert not torch.allclose(outs["a"], base)
    pm.set_adapter("a")
    pm.save_pretrained(tmp_path, selected_adapters=["a", "c"])
    torch.manual_seed(0)
    fresh = TinyMLP()
    loaded = PeftModel.from_pretrained(fresh, tmp_path / "a", adapter_name="a")
    loaded.load_adapter(tmp_path / "c", adapter_name="c")
    for name in ("a", "c"):
        loaded.set_adapter(name)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), outs[name])
    loaded.delete_adapter("c")
    assert "c" not in loaded.base_model.model.fc1.loldu_z
    assert "c" not in loaded.base_model.model.fc1.loldu_left


def test_svfit_trains_singular_values_only():
    model, layer_cfg = TinyMLP(), SVFitConfig(r=5, target_modules=["fc2"], train_sigma=False)
    pm = get_peft_model(model, layer_cfg)
    layer = pm.base_model.model.fc2
    torch.testing.assert_close(layer.svfit_z["default"], torch.linalg.svdvals(layer.base_layer.weight.detach())[:5])
    assert sum(p.numel() for p in pm.parameters() if p.requires_grad) == 5


def _single_linear(weight):
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        lin.weight.copy_(weight)
    return nn.Sequential(lin)


def test_hand_computed_loldu_delta():
    # W = [[2, 1], [4, 3]]: P L_1 = [0.5, 1]^T, D_1 = 4, U'_1 = [1, 0.75] (see test_decompose).
    pm = get_peft_model(_single_linear(torch.tensor([[2.0, 1.0], [4.0, 3.0]])), LoLDUConfig(r=1, target_modules=["0"]))
    layer = pm.base_model.model[0]
    assert layer.loldu_z["default"].tolist() == [4.0]
    with torch.no_grad():
        layer.loldu_z["default"].fill_(5.0)  # dz = 1 * 5 - 1 * 4 = 1
    torch.testing.assert_close(layer.get_delta_weight("default"), torch.tensor([[0.5, 0.375], [1.0, 0.75]]))
    with torch.no_grad():
        layer.loldu_sigma["default"].fill_(2.0)  # dz = 2 * 5 - 4 = 6
    torch.testing.assert_close(layer.get_delta_weight("default"), 6 * torch.tensor([[0.5, 0.375], [1.0, 0.75]]))


def test_hand_computed_svfit_delta():
    pm = get_peft_model(_single_linear(torch.tensor([[0.0, 2.0], [3.0, 0.0]])), SVFitConfig(r=1, target_modules=["0"]))
    layer = pm.base_model.model[0]
    with torch.no_grad():
        layer.svfit_z["default"].fill_(4.0)  # s = 3 -> 4
    torch.testing.assert_close(layer.get_delta_weight("default"), torch.tensor([[0.0, 0.0], [1.0, 0.0]]))


@pytest.mark.parametrize(
    "config,expected",
    [
        (LoLDUConfig(r=2, target_modules=["0"]), [0.5, 0.184436, 0.130872, -0.130871]),
        (SVFitConfig(r=2, target_modules=["0"]), [0.207371, 0.169607, 0.013052, 0.008511]),
    ],
)
def test_seeded_delta_values(config, expected):
    """Stored deltas for a seeded 4x3 weight with z moved by a fixed step (regression values).

    LoLDU's first entry is exact by construction: row 0 is the first pivot row,
    so L[0, 0] = U'[0, 0] = 1 and delta[0, 0] = dz[0] = 0.5.
    """
    torch.manual_seed(0)
    pm = get_peft_model(_single_linear(torch.randn(4, 3)), config)
    layer = pm.base_model.model[0]
    prefix = layer.prefix
    with torch.no_grad():
        getattr(layer, prefix + "z")["default"].add_(torch.tensor([0.5, -0.25]))
    delta = layer.get_delta_weight("default")
    torch.testing.assert_close(delta[:, 0], torch.tensor(expected), rtol=0, atol=1e-5)
