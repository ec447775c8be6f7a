"""Mixed precision: every method trains under autocast, PEFT's adapter dtype flag, fused-path memory."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import build, output
from peft import get_peft_model
from torch import nn

from loldu.methods import LoLDUConfig, LoLDULayer, SVFitConfig, apply_method
from loldu.methods.diagonal import DiagonalLayer
from loldu.models.tiny import TinyMLP

pytestmark = pytest.mark.usefixtures("one_thread")

DIAGONAL_CASES = [
    (method, opts)
    for method in ("loldu", "svfit")
    for opts in (
        {"forward_path": "auto"},
        {"forward_path": "activation"},
        {"forward_path": "weight"},
        {"forward_path": "fused"},
        {"forward_path": "fused", "recompute": "always"},
    )
]
OTHER_CASES = [(m, {}) for m in ("lora", "pissa", "vera", "fourierft", "bitfit", "full", "linear_probe")]
RANKS = {"loldu": 12, "svfit": 12, "lora": 4, "pissa": 4, "vera": 4, "fourierft": 20}
TOKENS = 64  # with r = 12 on TinyMLP, auto picks the fused path


def _case_id(case) -> str:
    return "-".join([case[0], *map(str, case[1].values())])


def _model(method: str, opts: dict, device: str):
    torch.manual_seed(0)
    peft = method in RANKS
    spec = {
        "name": method,
        "r": RANKS.get(method),
        "target_modules": ["fc1", "fc2"] if peft else None,
        "head_modules": ["classifier"],
        "options": opts,
    }
    model = apply_method(TinyMLP(), spec).to(device)
    with torch.no_grad():  # move LoLDU/SVFit off their starting point so the update is not zero
        for name, p in model.named_parameters():
            if name.endswith("_z.default"):
                p.mul_(torch.linspace(0.5, 1.5, p.numel(), device=device))
    return model


def _grads(model, x, device_type: str, dtype) -> dict[str, torch.Tensor]:
    model.zero_grad()
    with torch.autocast(device_type, dtype=dtype, enabled=dtype is not None):
        y = model(x)
    (y.float() ** 2).sum().backward()
    return {n: p.grad.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}


def _check_autocast_training(method: str, opts: dict, device: str, dtype) -> None:
    model = _model(method, opts, device)
    x = torch.randn(TOKENS, 12, generator=torch.Generator().manual_seed(1)).to(device)
    if opts.get("forward_path") == "auto":
        layer = next(m for m in model.modules() if isinstance(m, DiagonalLayer))
        assert layer.choose_path("default", TOKENS) == "fused"
    reference = _grads(copy.deepcopy(model), x, device, None)
    grads = _grads(model, x, device, dtype)
    assert grads.keys() == reference.keys() and grads
    # bf16 tolerance relative to the gradient norm of the adapter (or of the head, for head parameters): a
    # scalar like sigma's gradient is a sum with cancellation, so its own norm is no fair scale.
    scales = {}
    for part in (True, False):
        names = [n for n in grads if ("classifier" in n) == part]
        if names:
            scales[part] = torch.cat([reference[n].flatten() for n in names]).norm()
    for name, g in grads.items():
        assert g.dtype == torch.float32 and torch.isfinite(g).all(), name
        err = (g - reference[name]).norm() / scales["classifier" in name]
        assert err < 0.02, f"{name}: gradient error {float(err):.3g} of the gradient norm under {dtype}"


@pytest.mark.parametrize("method,opts", DIAGONAL_CASES + OTHER_CASES, ids=map(_case_id, DIAGONAL_CASES + OTHER_CASES))
def test_every_method_and_path_trains_under_cpu_bf16_autocast(method, opts):
    _check_autocast_training(method, opts, "cpu", torch.bfloat16)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("method,opts", DIAGONAL_CASES + OTHER_CASES, ids=map(_case_id, DIAGONAL_CASES + OTHER_CASES))
def test_every_method_and_path_trains_under_cuda_autocast(method, opts, dtype):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    _check_autocast_training(method, opts, "cuda", dtype)


@pytest.mark.parametrize("method", ["loldu", "svfit"])
@pytest.mark.parametrize("opts", [{"forward_path": "fused", "recompute": "always"}, {"forward_path": "weight"}])
def test_tiny_bert_trains_under_cpu_bf16_autocast(method, opts):
    model, targets, heads, inputs = build("bert")
    model = apply_method(model, {"name": method, "r": 16, "target_modules": targets, "head_modules": heads})
    for layer in model.modules():
        if isinstance(layer, DiagonalLayer):
            layer.forward_path["default"], layer.recompute["default"] = (
                opts["forward_path"],
                opts.get("recompute", "auto"),
            )
    grads = {}  # eval mode: no dropout, so both runs see the same function
    for dtype in (None, torch.bfloat16):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
            loss = output(model, inputs).float().pow(2).sum()
        loss.backward()
        grads[dtype] = torch.cat([p.grad.flatten() for n, p in model.named_parameters() if "_z." in n])
    err = (grads[torch.bfloat16] - grads[None]).norm() / grads[None].norm()
    assert err < 0.05


@pytest.mark.parametrize("path", ["activation", "weight", "fused"])
def test_adapter_matmuls_run_in_the_autocast_dtype_and_z_keeps_its_own(path):
    torch.manual_seed(0)
    model = get_peft_model(nn.Sequential(nn.Linear(10, 20)), LoLDUConfig(target_modules=["0"], r=4, forward_path=path))
    seen = []
    handle = torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: seen.append(o.dtype))
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = model(torch.randn(3, 10))
    finally:
        handle.remove()
    assert y.dtype == torch.bfloat16 and seen[0] == torch.bfloat16
    y.float().sum().backward()
    layer = next(m for m in model.modules() if isinstance(m, LoLDULayer))
    z = layer.loldu_z["default"]
    assert z.dtype == torch.float32 and z.grad.dtype == torch.float32


def test_lightning_bf16_mixed_trains_the_default_path():
    import lightning as L

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = get_peft_model(TinyMLP(), LoLDUConfig(target_modules=["fc1", "fc2"], r=12))

        def training_step(self, batch, _):
            return self.net(batch[0]).float().pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    module = Module()
    layer = module.net.base_model.model.fc1
    assert layer.choose_path("default", TOKENS) == "fused"
    z0 = layer.loldu_z["default"].detach().clone()
    data = torch.utils.data.TensorDataset(torch.randn(4 * TOKENS, 12))
    trainer = L.Trainer(
        precision="bf16-mixed",
        accelerator="cpu",
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=TOKENS))
    assert trainer.global_step == 2
    assert not torch.equal(layer.loldu_z["default"].detach(), z0)


# -- autocast_adapter_dtype ---------------------------------------------------------


@pytest.mark.parametrize("config_cls", [LoLDUConfig, SVFitConfig])
@pytest.mark.parametrize("autocast_adapter_dtype", [True, False])
def test_autocast_adapter_dtype_decides_the_dtype_of_z_and_sigma(config_cls, autocast_adapter_dtype):
    torch.manual_seed(0)
    base = TinyMLP().to(torch.bfloat16)
    model = get_peft_model(base, config_cls(target_modules=["fc1"], r=8), autocast_adapter_dtype=autocast_adapter_dtype)
    layer = model.base_model.model.fc1
    expected = torch.float32 if autocast_adapter_dtype else torch.bfloat16
    prefix = layer.prefix
    for role in ("z", "sigma", "ref"):
        assert getattr(layer, prefix + role)["default"].dtype == expected, role
    assert getattr(layer, prefix + "left")["default"].dtype == torch.bfloat16
    # Still the pre-trained function at step 0, and trainable in the base dtype.
    x = torch.randn(TOKENS, 12, dtype=torch.bfloat16)
    with model.disable_adapter():
        y0 = model(x)
    y = model(x)
    torch.testing.assert_close(y, y0)
    y.float().sum().backward()
    z = getattr(layer, prefix + "z")["default"]
    assert z.grad is not None and z.grad.dtype == expected and torch.isfinite(z.grad.float()).all()


# -- recompute: memory of the fused path -------------------------------------------------


def _fused_layer(recompute: str, out_f=48, in_f=40, r=16):
    torch.manual_seed(0)
    config = LoLDUConfig(target_modules=["0"], r=r, forward_path="fused", recompute=recompute, train_sigma=True)
    model = get_peft_model(nn.Sequential(nn.Linear(in_f, out_f)), config)
    layer = next(m for m in model.modules() if isinstance(m, LoLDULayer))
    with torch.no_grad():
        layer.loldu_z["default"].mul_(torch.linspace(0.5, 1.5, r))
    return model, layer


def _saved_and_grads(recompute: str, tokens: int = 8):
    model, layer = _fused_layer(recompute)
    x = torch.randn(tokens, 40, generator=torch.Generator().manual_seed(3), requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = layer(x)
    (y**2).sum().backward()
    owned = {t.data_ptr() for t in list(layer.parameters()) + list(layer.buffers())}
    new = [t for t in saved if t.data_ptr() not in owned]  # tensors kept alive only for the backward
    grads = (layer.loldu_z["default"].grad.clone(), layer.loldu_sigma["default"].grad.clone(), x.grad)
    return new, grads


def test_recompute_always_keeps_no_merged_weight_and_gives_the_same_gradients():
    never, grads_never = _saved_and_grads("never")
    always, grads_always = _saved_and_grads("always")
    assert any(t.shape == (48, 40) for t in never)  # W_eff kept for the backward
    assert all(t.numel() < 48 * 40 for t in always)
    saved_bytes = {k: sum(t.numel() * t.element_size() for t in v) for k, v in (("never", never), ("always", always))}
    assert saved_bytes["never"] - saved_bytes["always"] == 48 * 40 * 4
    assert saved_bytes["always"] <= 8 * 40 * 4 + 16 * 4  # the input and dz
    for a, b in zip(grads_always, grads_never):
        torch.testing.assert_close(a, b)


def test_recompute_auto_rule():
    _, layer = _fused_layer("auto")  # out_features = 48
    assert layer.should_recompute("default", 8)  # W_eff (48 x 40) larger than x (8 x 40)
    assert not layer.should_recompute("default", 64)
    with torch.no_grad():
        assert not layer.should_recompute("default", 8)
    layer.recompute["default"] = "never"
    assert not layer.should_recompute("default", 8)


def test_recompute_value_is_checked():
    with pytest.raises(ValueError, match="recompute must be one of"):
        LoLDUConfig(recompute="sometimes")
    with pytest.raises(ValueError, match="recompute must be one of"):
        SVFitConfig(recompute=True)
