"""LoLDU and SVFit on every layer type PEFT's LoRA adapts: Linear, GPT-2's Conv1D, Conv1d/2d, Embedding.

Each case is a float64 model with small random weights and one target layer. The adapted layer must start at
the base output, equal the plain torch op (``x @ W.T``, ``F.conv2d``, ``F.embedding``...) run with the explicitly
merged weight on every forward path, merge and unmerge, save and reload bit for bit, and train z and sigma only.
Types no layer exists for are refused with PEFT's message.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from peft import PeftModel, get_peft_model
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from loldu.methods import LoLDUConfig, SVFitConfig, apply_method, load_adapter, save_adapter
from loldu.methods.diagonal import DiagonalLayer
from loldu.methods.diagonal.kinds import matrix_shape

pytestmark = pytest.mark.usefixtures("one_thread")
CONFIGS = {"loldu": LoLDUConfig, "svfit": SVFitConfig}
PATHS = ("activation", "weight", "fused", "auto")
EXACT = {"rtol": 0.0, "atol": 1e-12}  # float64: the paths differ in summation order only


def tiny_gpt2(dtype=torch.float64):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=40, n_positions=16, n_embd=16, n_layer=1, n_head=2, attn_implementation="eager")
    return GPT2LMHeadModel(config).to(dtype).eval()


class One(nn.Module):
    """A model around one layer, named ``layer``."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer(x)


@dataclass
class Case:
    build: Callable[[], nn.Module]  # the float64 model
    target: str  # target_modules entry
    path: str  # the target's name in the model
    make_input: Callable[[torch.Generator], torch.Tensor]  # an input of the target layer
    reference: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]  # (base, x, merged weight) -> y
    r: int
    full: int  # min(out, in) of the factorised matrix


def _conv_ref(base, x, w):
    conv = {1: F.conv1d, 2: F.conv2d}[w.dim() - 2]
    if base.padding_mode != "zeros":
        x = F.pad(x, base._reversed_padding_repeated_twice, mode=base.padding_mode)
        return conv(x, w, base.bias, base.stride, 0, base.dilation, base.groups)
    return conv(x, w, base.bias, base.stride, base.padding, base.dilation, base.groups)


CASES = {
    "linear": Case(
        lambda: One(nn.Linear(7, 9)).double(),
        "layer",
        "layer",
        lambda g: torch.randn(2, 5, 7, generator=g, dtype=torch.float64),
        lambda base, x, w: x @ w.T + base.bias,
        r=4,
        full=7,
    ),
    "gpt2_conv1d": Case(  # c_attn: Conv1D(3 * 16, 16), weight stored 16 x 48
        tiny_gpt2,
        "c_attn",
        "transformer.h.0.attn.c_attn",
        lambda g: torch.randn(2, 5, 16, generator=g, dtype=torch.float64),
        lambda base, x, w: x @ w + base.bias,
        r=5,
        full=16,
    ),
    "conv1d": Case(
        lambda: One(nn.Conv1d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2)).double(),
        "layer",
        "layer",
        lambda g: torch.randn(2, 4, 11, generator=g, dtype=torch.float64),
        _conv_ref,
        r=3,
        full=6,  # 6 x (4/2 * 3)
    ),
    "conv2d": Case(
        lambda: One(nn.Conv2d(3, 5, (3, 2), stride=(2, 1), padding=1)).double(),
        "layer",
        "layer",
        lambda g: torch.randn(2, 3, 7, 6, generator=g, dtype=torch.float64),
        _conv_ref,
        r=4,
        full=5,  # 5 x (3 * 6)
    ),
    "conv2d_grouped": Case(
        lambda: One(nn.Conv2d(4, 6, 3, padding="same", dilation=2, groups=2, padding_mode="reflect")).double(),
        "layer",
        "layer",
        lambda g: torch.randn(2, 4, 9, 8, generator=g, dtype=torch.float64),
        _conv_ref,
        r=6,  # full rank: 6 x (4/2 * 9)
        full=6,
    ),
    "embedding": Case(
        lambda: One(nn.Embedding(12, 7, padding_idx=3)).double(),
        "layer",
        "layer",
        lambda g: torch.tensor([[0, 3, 5, 11, 3], [7, 7, 1, 3, 2]]),
        lambda base, x, w: F.embedding(x, w, base.padding_idx),
        r=5,
        full=7,
    ),
}
SUPPORTED_MSG = re.escape(
    "Currently, only the following modules are supported: `torch.nn.Linear`, `torch.nn.Embedding`, "
    "`torch.nn.Conv1d`, `torch.nn.Conv2d`, `torch.nn.Conv3d`, `transformers.pytorch_utils.Conv1D`."
)


def _adapted(method: str, case: Case, seed: int = 0, **options):
    torch.manual_seed(seed)
    model = case.build()
    base = copy.deepcopy(model)
    peft_model = get_peft_model(model, CONFIGS[method](r=case.r, target_modules=[case.target], **options))
    layer = peft_model.base_model.model.get_submodule(case.path)
    assert isinstance(layer, DiagonalLayer)
    return peft_model, layer, base.get_submodule(case.path)


def _nudge(layer: DiagonalLayer, seed: int = 1, name: str = "default") -> None:
    """Move z and sigma off their start, so the update is not zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        z = layer._dict("z")[name]
        z.copy_(torch.randn(z.shape, generator=g).to(z) * 0.5)
        layer._dict("sigma")[name].fill_(1.3)


def _explicit_delta(layer: DiagonalLayer, base: nn.Module, name: str = "default") -> torch.Tensor:
    """``left diag(sigma z - sigma0 ref) right`` in float64 from the stored tensors, in the base weight's shape."""
    left = layer._dict("left")[name].double()
    right = layer._dict("right")[name].double()
    dz = layer._dict("sigma")[name].double() * layer._dict("z")[name].double()
    dz = dz - layer.sigma0[name] * layer._dict("ref")[name].double()
    m = left @ torch.diag(dz) @ right
    weight = base.weight
    if type(base).__name__ == "Conv1D":
        return m.T
    return m.reshape(weight.shape)


def _input(case: Case, seed: int = 2) -> torch.Tensor:
    return case.make_input(torch.Generator().manual_seed(seed))


# -- forward -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("method", list(CONFIGS))
def test_starts_at_the_base_output(method, case, path):
    c = CASES[case]
    _, layer, base = _adapted(method, c, forward_path=path)
    x = _input(c)
    with torch.no_grad():
        expected = base(x)
        got = layer(x)
    if path == "activation":  # base output + an update that is exactly zero
        assert torch.equal(got, expected)
    torch.testing.assert_close(got, expected, **EXACT)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("method", list(CONFIGS))
def test_output_is_the_plain_op_with_the_merged_weight(method, case, path):
    c = CASES[case]
    _, layer, base = _adapted(method, c, forward_path=path)
    _nudge(layer)
    x = _input(c)
    with torch.no_grad():
        merged = base.weight + _explicit_delta(layer, base)
        expected = c.reference(base, x, merged)
        got = layer(x)
    assert not torch.allclose(expected, c.reference(base, x, base.weight))  # the update is not zero
    torch.testing.assert_close(got, expected, rtol=0.0, atol=1e-10)
    torch.testing.assert_close(layer.get_delta_weight("default"), _explicit_delta(layer, base), rtol=0, atol=1e-12)


@pytest.mark.parametrize("case", list(CASES))
def test_paths_agree_in_gradients(case):
    c = CASES[case]
    grads = {}
    for path in ("activation", "weight", "fused"):
        _, layer, _ = _adapted("loldu", c, forward_path=path)
        _nudge(layer)
        x = _input(c)
        if x.is_floating_point():
            x.requires_grad_(True)
        (layer(x) ** 2).sum().backward()
        z, sigma = layer._dict("z")["default"], layer._dict("sigma")["default"]
        grads[path] = (z.grad, sigma.grad, x.grad)
    for path in ("weight", "fused"):
        for got, want in zip(grads[path], grads["activation"]):
            if want is None:
                assert got is None
            else:
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_embedding_padding_row_is_never_changed():
    c = CASES["embedding"]
    for method in CONFIGS:
        _, layer, base = _adapted(method, c)
        _nudge(layer)
        assert torch.equal(layer._dict("left")["default"][3], torch.zeros_like(layer._dict("left")["default"][3]))
        ids = torch.tensor([[3, 1, 3]])
        with torch.no_grad():
            out = layer(ids)
        assert torch.equal(out[0, 0], base.weight[3]) and torch.equal(out[0, 2], base.weight[3])
        assert not torch.allclose(out[0, 1], base.weight[1])


class ScaledEmbedding(nn.Embedding):
    """Like Gemma's scaled word embeddings: the lookup times ``embed_scale``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("embed_scale", torch.tensor(2.5), persistent=False)

    def forward(self, ids):
        return super().forward(ids) * self.embed_scale.to(self.weight.dtype)


@pytest.mark.parametrize("path", ["activation", "weight"])
def test_scaled_embedding_scales_the_update_too(path):
    torch.manual_seed(0)
    emb = ScaledEmbedding(12, 6).double()
    base = copy.deepcopy(emb)
    layer = get_peft_model(One(emb), LoLDUConfig(r=3, target_modules=["layer"], forward_path=path)).base_model.model
    layer = layer.layer
    ids = torch.tensor([[1, 4, 9]])
    with torch.no_grad():
        assert torch.equal(layer(ids), base(ids))
        _nudge(layer)
        expected = F.embedding(ids, base.weight + _explicit_delta(layer, base)) * 2.5
        torch.testing.assert_close(layer(ids), expected, rtol=0, atol=1e-10)


def test_auto_path_prices_each_layer_type():
    conv = CASES["conv2d"]  # a 5 x 18 matrix
    _, layer, _ = _adapted("loldu", conv)
    layer.r["default"] = 1
    # Training: the weight path also pays the full weight gradient (tokens * out * in), so the factors win.
    assert layer.choose_path("default", tokens=10_000) == "activation"
    with torch.no_grad():  # evaluation: building the merged weight once beats the factors but for tiny calls
        assert layer.choose_path("default", tokens=10_000) == "weight"
        assert layer.choose_path("default", tokens=1) == "activation"
    assert layer.kind.tokens(_input(conv)) == 2 * 4 * 7  # output positions: batch x 4 x 7
    emb = CASES["embedding"]  # 12 x 7
    _, layer, _ = _adapted("loldu", emb, forward_path="fused")
    assert layer.choose_path("default", tokens=4) == "weight"  # fused is the weight path for a lookup
    layer.forward_path["default"] = "auto"
    with torch.no_grad():  # a lookup of the factors unless the call has more tokens than the table has rows
        assert layer.choose_path("default", tokens=4) == "activation"
        assert layer.choose_path("default", tokens=100) == "weight"
    assert layer.kind.tokens(_input(emb)) == 10


# -- merge ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("method", list(CONFIGS))
def test_merge_and_unmerge(method, case):
    c = CASES[case]
    model, layer, base = _adapted(method, c)
    _nudge(layer)
    x = _input(c)
    weight = layer.get_base_layer().weight
    original = weight.detach().clone()
    delta = _explicit_delta(layer, base)
    with torch.no_grad():
        unmerged = layer(x)
        layer.merge(safe_merge=True)
        assert layer.merged
        # One float64 rounding of W + delta; the merged forward is the base op with that weight.
        torch.testing.assert_close(weight.detach(), original + delta, rtol=0, atol=1e-12)
        torch.testing.assert_close(layer(x), unmerged, rtol=0, atol=1e-10)
        layer.unmerge()
    assert not layer.merged
    # (W + d) - d: within one rounding of |W| + |d| in float64 of the original weight.
    bound = 2 * torch.finfo(torch.float64).eps * (original.abs() + delta.abs())
    assert ((weight.detach() - original).abs() <= bound).all()
    # merge_and_unload leaves the plain layer type with the merged weight.
    with torch.no_grad():
        plain = model.merge_and_unload(safe_merge=True)
        merged_layer = plain.get_submodule(c.path)
        assert type(merged_layer) is type(base)
        torch.testing.assert_close(merged_layer(x), unmerged, rtol=0, atol=1e-10)


@pytest.mark.parametrize("case", ["gpt2_conv1d", "conv2d", "embedding"])
def test_safe_merge_of_a_broken_adapter_is_refused_in_peft_words(case):
    c = CASES[case]
    model, layer, _ = _adapted("loldu", c)
    with torch.no_grad():
        layer._dict("z")["default"][0] = torch.nan
    weight = layer.get_base_layer().weight.detach().clone()
    with pytest.raises(ValueError, match="NaNs detected in the merged weights. The adapter default seems to be broken"):
        model.merge_and_unload(safe_merge=True)
    assert torch.equal(layer.get_base_layer().weight, weight) and not layer.merged


# -- save and reload -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("method", list(CONFIGS))
def test_save_and_reload_bit_exact(method, case, tmp_path):
    c = CASES[case]
    torch.manual_seed(0)
    adapted = apply_method(c.build(), {"name": method, "r": c.r, "target_modules": [c.target]})
    layer = adapted.base_model.model.get_submodule(c.path)
    _nudge(layer)
    x = _input(c)
    with torch.no_grad():
        expected = layer(x)
    save_adapter(adapted, tmp_path / "ours")
    adapted.save_pretrained(str(tmp_path / "peft"))
    for how in ("load_adapter", "PeftModel.from_pretrained"):
        torch.manual_seed(0)
        fresh = c.build()
        if how == "load_adapter":
            loaded = load_adapter(fresh, tmp_path / "ours")
        else:
            loaded = PeftModel.from_pretrained(fresh, str(tmp_path / "peft"))
        again = loaded.base_model.model.get_submodule(c.path)
        for role in ("z", "sigma", "left", "right", "ref"):
            assert torch.equal(again._dict(role)["default"], layer._dict(role)["default"]), (how, role)
        with torch.no_grad():
            assert torch.equal(again(x), expected), how


# -- training ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("train_sigma", [True, False])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("method", list(CONFIGS))
def test_one_training_step_changes_only_z_and_sigma(method, case, train_sigma):
    c = CASES[case]
    model, layer, _ = _adapted(method, c, train_sigma=train_sigma)
    model.train()
    prefix = layer.prefix
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n.rsplit(".", 2)[-2] for n in trained} == (
        {prefix + "z", prefix + "sigma"} if train_sigma else {prefix + "z"}
    )
    before = {k: v.clone() for k, v in model.state_dict(keep_vars=False).items()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    out = layer(_input(c))
    (out**2).mean().backward()
    optimizer.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {n for n in trained}
    assert all(torch.equal(b, buffers[n]) for n, b in model.named_buffers())


def test_gpt2_end_to_end_through_peft():
    torch.manual_seed(0)
    base = tiny_gpt2(torch.float32)
    reference = copy.deepcopy(base)
    model = get_peft_model(base, LoLDUConfig(target_modules=["c_attn"], r=8, train_sigma=True))
    ids = torch.randint(0, 40, (2, 10), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, reference(input_ids=ids).logits)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 8 + 1  # z and sigma of one c_attn
    z = model.base_model.model.transformer.h[0].attn.c_attn.loldu_z["default"]
    start = z.detach().clone()
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and not torch.equal(z.detach(), start)
    # The default targets of GPT-2 are PEFT's LoRA ones (c_attn).
    torch.manual_seed(0)
    defaults = get_peft_model(tiny_gpt2(torch.float32), SVFitConfig(r=4))
    assert isinstance(defaults.base_model.model.transformer.h[0].attn.c_attn, DiagonalLayer)


@pytest.mark.parametrize("case", ["gpt2_conv1d", "conv2d", "embedding"])
def test_mixed_batch_on_every_layer_type(case):
    c = CASES[case]
    model, layer, _ = _adapted("loldu", c, forward_path="weight")
    model.add_adapter("b", LoLDUConfig(r=c.r, target_modules=[c.target]))
    _nudge(layer, 1)
    _nudge(layer, 2, name="b")
    model.eval()
    x = _input(c)
    names = ["b", "__base__"]
    with torch.no_grad():
        mixed = layer(x, adapter_names=names)
        layer.set_adapter("b")
        alone_b = layer(x)
        with model.disable_adapter():
            alone_base = layer(x)
    torch.testing.assert_close(mixed[0], alone_b[0], rtol=0, atol=1e-10)
    torch.testing.assert_close(mixed[1], alone_base[1], rtol=0, atol=0)


# -- refusals ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", list(CONFIGS))
@pytest.mark.parametrize("case", list(CASES))
def test_rank_above_the_matrix_is_refused_with_the_layer_name(method, case):
    c = CASES[case]
    torch.manual_seed(0)
    model = c.build()
    with pytest.raises(ValueError, match=rf"r={c.full + 1} does not fit {re.escape(c.path)} .*\[1, {c.full}\]"):
        get_peft_model(model, CONFIGS[method](r=c.full + 1, target_modules=[c.target]))
    assert not any(isinstance(m, BaseTunerLayer) for m in model.modules())
    get_peft_model(c.build(), CONFIGS[method](r=c.full, target_modules=[c.target]))  # full rank fits


def test_conv_rank_message_says_how_the_kernel_is_read():
    assert matrix_shape(nn.Conv2d(4, 6, 3, groups=2)) == (6, 18)
    assert matrix_shape(tiny_gpt2().transformer.h[0].attn.c_attn) == (48, 16)
    assert matrix_shape(nn.Embedding(12, 7)) == (12, 7) and matrix_shape(nn.LayerNorm(3)) is None
    with pytest.raises(ValueError, match=r"weight 6x18 \(Conv2d kernel 6x2x3x3 read as out x in/groups\*kernel\)"):
        get_peft_model(One(nn.Conv2d(4, 6, 3, groups=2)), LoLDUConfig(r=7, target_modules=["layer"]))
    with pytest.raises(ValueError, match=r"weight 48x16 \(Conv1D stores it transposed, 16x48\)"):
        get_peft_model(tiny_gpt2(), LoLDUConfig(r=17, target_modules=["c_attn"]))


class Custom(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 4))

    def forward(self, x):
        return x @ self.weight


class WithMha(nn.Module):
    def __init__(self):
        super().__init__()
        self.mha = nn.MultiheadAttention(8, 2)
        self.lin = nn.Linear(8, 8)


UNSUPPORTED = {
    "MultiheadAttention": (WithMha, "mha"),
    "ConvTranspose2d": (lambda: One(nn.ConvTranspose2d(3, 4, 3)), "layer"),
    "custom": (lambda: One(Custom()), "layer"),
    "LayerNorm": (lambda: One(nn.LayerNorm(5)), "layer"),
}


@pytest.mark.parametrize("kind", list(UNSUPPORTED))
@pytest.mark.parametrize("method", list(CONFIGS))
def test_unsupported_layer_types_are_refused_in_peft_words(method, kind):
    build, target = UNSUPPORTED[kind]
    model = build()
    with pytest.raises(ValueError, match=r"(?s)Target module .* is not supported\. " + SUPPORTED_MSG):
        get_peft_model(model, CONFIGS[method](r=2, target_modules=[target]))
    assert not any(isinstance(m, BaseTunerLayer) for m in model.modules())  # refused before any layer changed


@pytest.mark.parametrize("method", list(CONFIGS))
def test_conv3d_is_adapted_like_conv2d(method):
    torch.manual_seed(0)
    conv = nn.Conv3d(2, 3, 2, stride=(1, 2, 1), padding=1).double()
    base = copy.deepcopy(conv)
    adapted = get_peft_model(One(conv), CONFIGS[method](r=3, target_modules=["layer"]))
    layer = adapted.base_model.model.layer
    x = torch.randn(2, 2, 4, 5, 3, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(layer(x), base(x))
        _nudge(layer)
        expected = F.conv3d(x, base.weight + _explicit_delta(layer, base), base.bias, (1, 2, 1), 1)
        torch.testing.assert_close(layer(x), expected, rtol=0, atol=1e-10)


def test_embedding_with_max_norm_is_refused():
    with pytest.raises(ValueError, match="max_norm=1.0: its lookup renormalises rows of the base weight in place"):
        get_peft_model(One(nn.Embedding(10, 4, max_norm=1.0)), LoLDUConfig(r=2, target_modules=["layer"]))


@pytest.mark.parametrize("method", list(CONFIGS))
def test_unsupported_bias_is_a_type_error_as_in_peft(method):
    # PEFT's generic tests skip a bias case on TypeError (configs without a bias argument raise it).
    with pytest.raises(TypeError, match="does not support bias='all'"):
        CONFIGS[method](r=2, bias="all")
    with pytest.raises(TypeError, match="bias='lora_only'"):
        CONFIGS[method](r=2, bias="lora_only")
