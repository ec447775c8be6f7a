"""MELoRA against a block-diagonal reference written here, independently of the layer's own code.

Tolerances: forward and delta weight are compared in float64 at 1e-12 (the layer sums the same k products per entry as
the reference, in another order, so only rounding at ~1e-16 can differ); merge then unmerge in float32 restores the
base weight within 1e-6, not bit-exactly ((W + d) - d rounds once per element); n_mini=1 against PEFT's LoRA, and a
saved and reloaded adapter against the trained one, are bit-exact (the same operations on the same tensors); PEFT's
conversion to a LoRA of rank r matches at rtol 1e-4 / atol 1e-5 (it goes through a float32 SVD).
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from helpers import build, output, run_composed, train_a_few_steps
from omegaconf import OmegaConf
from peft import LoraConfig, PeftModel, PeftType, get_peft_model
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn
from transformers.pytorch_utils import Conv1D

from loldu.config.schema import check_method_options
from loldu.methods import apply_method, count_parameters, load_adapter, save_adapter
from loldu.methods.melora import MELoRAConfig, MELoRALayer, MELoRAModel


class Net(nn.Module):
    """One adapted layer ``fc`` (12 -> 18) and a head."""

    def __init__(self, layer: nn.Module | None = None):
        super().__init__()
        self.fc = layer if layer is not None else nn.Linear(12, 18)
        self.head = nn.Linear(18, 2)

    def forward(self, x):
        return self.head(torch.tanh(self.fc(x)))


def reference_delta(a: torch.Tensor, b: torch.Tensor, n: int) -> torch.Tensor:
    """blockdiag(B_1 A_1, ..., B_n A_n) from the layer's stacked A (r x in/n) and B (out x r/n), block by block."""
    k, d_in, d_out = a.shape[0] // n, a.shape[1], b.shape[0] // n
    delta = torch.zeros(n * d_out, n * d_in, dtype=a.dtype)
    for i in range(n):
        delta[i * d_out : (i + 1) * d_out, i * d_in : (i + 1) * d_in] = (
            b[i * d_out : (i + 1) * d_out] @ a[i * k : (i + 1) * k]
        )
    return delta


def randomise(model: nn.Module, seed: int = 0) -> None:
    """Give every MELoRA B (zero at init) random values, so the update is not zero."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, MELoRALayer):
                for b in layer.melora_B.values():
                    b.copy_(torch.randn(b.shape, generator=gen, dtype=b.dtype))


def melora_layers(model: nn.Module) -> list[MELoRALayer]:
    return [m for m in model.modules() if isinstance(m, MELoRALayer)]


# -- exactness ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, r, alpha", [(3, 6, None), (3, 6, 5.0), (2, 12, 3.0), (6, 12, None)])
def test_output_is_the_base_plus_the_block_diagonal_update(n, r, alpha):
    torch.manual_seed(0)
    base = Net().double()
    w, bias = base.fc.weight.detach().clone(), base.fc.bias.detach().clone()
    model = get_peft_model(base, MELoRAConfig(r=r, n_mini=n, alpha=alpha, target_modules=["fc"]))
    randomise(model)
    (layer,) = melora_layers(model)
    a, b = layer.melora_A["default"].detach(), layer.melora_B["default"].detach()
    assert a.shape == (r, 12 // n) and b.shape == (18, r // n)
    scaling = 1.0 if alpha is None else alpha / (r // n)
    delta = reference_delta(a, b, n)
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    expected = x @ (w + scaling * delta).T + bias
    torch.testing.assert_close(layer(x), expected, rtol=1e-12, atol=1e-12)
    got = layer.get_delta_weight("default").detach()
    torch.testing.assert_close(got, scaling * delta, rtol=1e-12, atol=1e-12)
    off_diagonal = reference_delta(torch.ones_like(a), torch.ones_like(b), n) == 0
    assert torch.equal(got[off_diagonal], torch.zeros_like(got[off_diagonal]))  # exactly block diagonal
    assert torch.linalg.matrix_rank(got).item() == r  # rank n * (r / n) from (r / n) * (in + out) numbers


def test_a_conv1d_target_takes_the_transposed_update():
    torch.manual_seed(0)
    conv = Conv1D(18, 12).double()  # GPT-2 style: weight (in, out) = (12, 18), y = x @ W + b
    nn.init.normal_(conv.weight)
    w, bias = conv.weight.detach().clone(), conv.bias.detach().clone()
    model = get_peft_model(Net(conv).double(), MELoRAConfig(r=6, n_mini=3, alpha=4.0, target_modules=["fc"]))
    randomise(model)
    (layer,) = melora_layers(model)
    delta = (4.0 / 2) * reference_delta(layer.melora_A["default"].detach(), layer.melora_B["default"].detach(), 3)
    x = torch.randn(4, 12, dtype=torch.float64)
    torch.testing.assert_close(layer(x), x @ (w + delta.T) + bias, rtol=1e-12, atol=1e-12)
    layer.merge()
    torch.testing.assert_close(conv.weight.detach(), w + delta.T, rtol=1e-12, atol=1e-12)


def test_merge_then_unmerge_restores_the_base_weight_within_1e_6():
    torch.manual_seed(0)
    base = Net()
    w = base.fc.weight.detach().clone()
    model = get_peft_model(base, MELoRAConfig(r=6, n_mini=3, alpha=6.0, target_modules=["fc"]))
    randomise(model)
    (layer,) = melora_layers(model)
    x = torch.randn(3, 12)
    with torch.no_grad():
        adapted = layer(x)
        delta = reference_delta(layer.melora_A["default"], layer.melora_B["default"], 3) * (6.0 / 2)
    layer.merge()
    assert layer.merged
    torch.testing.assert_close(layer.get_base_layer().weight.detach(), w + delta, rtol=0, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), adapted, rtol=1e-5, atol=1e-6)
    layer.unmerge()
    assert not layer.merged
    # Not bit-exact: (W + d) - d rounds once per element in float32.
    assert (layer.get_base_layer().weight.detach() - w).abs().max().item() <= 1e-6


def test_one_mini_lora_is_lora_bit_for_bit():
    base, targets, heads, inputs = build("bert")
    lora = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    melora = get_peft_model(base, MELoRAConfig(r=4, n_mini=1, alpha=8, target_modules=targets))
    randomise(melora)
    lora_layers = {n: m for n, m in lora.named_modules() if hasattr(m, "lora_A") and isinstance(m, BaseTunerLayer)}
    melora_named = {n: m for n, m in melora.named_modules() if isinstance(m, MELoRALayer)}
    assert set(lora_layers) == set(melora_named) and lora_layers
    with torch.no_grad():
        for name, layer in melora_named.items():
            assert layer.melora_A["default"].shape == lora_layers[name].lora_A["default"].weight.shape
            assert layer.melora_B["default"].shape == lora_layers[name].lora_B["default"].weight.shape
            lora_layers[name].lora_A["default"].weight.copy_(layer.melora_A["default"])
            lora_layers[name].lora_B["default"].weight.copy_(layer.melora_B["default"])
            assert layer.scaling["default"] == lora_layers[name].scaling["default"] == 2.0
            assert torch.equal(layer.get_delta_weight("default"), lora_layers[name].get_delta_weight("default"))
        assert torch.equal(output(melora, inputs), output(lora, inputs))


def test_init_is_loras_a_kaiming_b_zero_and_starts_at_the_base_model():
    base, targets, _, inputs = build("bert")
    with torch.no_grad():
        before = output(base, inputs)
    model = get_peft_model(base, MELoRAConfig(r=8, n_mini=4, target_modules=targets))
    for layer in melora_layers(model):
        a, b = layer.melora_A["default"], layer.melora_B["default"]
        assert torch.equal(b, torch.zeros_like(b))
        bound = 1 / (32 / 4) ** 0.5  # kaiming_uniform(a=sqrt(5)) on fan-in in / n_mini
        assert a.abs().max() <= bound and a.std() > bound / 4
    with torch.no_grad():
        assert torch.equal(output(model, inputs), before)


def test_peft_converts_it_to_a_lora_of_the_same_rank():
    from peft import convert_to_lora, set_peft_model_state_dict

    base, targets, _, inputs = build("bert")
    model = get_peft_model(copy.deepcopy(base), MELoRAConfig(r=8, n_mini=4, target_modules=targets))
    randomise(model)
    config, state = convert_to_lora(model, rank=8)  # the block-diagonal update has rank r = 8: no loss (SVD, float32)
    lora = get_peft_model(base, config)
    set_peft_model_state_dict(lora, state)
    with torch.no_grad():
        torch.testing.assert_close(output(lora, inputs), output(model, inputs), rtol=1e-4, atol=1e-5)


# -- parameters and training ----------------------------------------------------------------------------------------
def test_parameter_count_is_r_over_n_times_in_plus_out_per_layer():
    model, targets, heads, _ = build("mlp")  # fc1 12 -> 16, fc2 16 -> 12
    adapted = apply_method(model, {"name": "melora", "r": 8, "options": {"n_mini": 4}, "target_modules": targets})
    per_layer = [
        layer.melora_A["default"].numel() + layer.melora_B["default"].numel() for layer in melora_layers(adapted)
    ]
    assert per_layer == [8 // 4 * (12 + 16), 8 // 4 * (16 + 12)]
    assert count_parameters(adapted)["adapter"] == 112
    bert, targets, heads, _ = build("bert")
    adapted = apply_method(bert, {"name": "melora", "r": 8, "options": {"n_mini": 4}, "target_modules": targets})
    # 4 adapted 32 x 32 matrices; a LoRA of the same rank 8 trains n_mini = 4 times as many (2048)
    assert count_parameters(adapted)["adapter"] == 4 * 2 * (32 + 32) == 512


def test_training_changes_only_the_melora_parameters_and_the_head():
    model, targets, heads, inputs = build("bert")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    adapted = apply_method(
        model, {"name": "melora", "r": 8, "options": {"n_mini": 4}, "target_modules": targets, "head_modules": heads}
    )
    trainable = {n for n, p in adapted.named_parameters() if p.requires_grad}
    assert all(".melora_A." in n or ".melora_B." in n or ".modules_to_save." in n for n in trainable)
    snapshot = {n: p.detach().clone() for n, p in adapted.named_parameters()}
    train_a_few_steps(adapted, inputs)
    changed = {n for n, p in adapted.named_parameters() if not torch.equal(p, snapshot[n])}
    assert changed == trainable  # every A and B (A once B left zero) and the head
    for name, param in adapted.get_base_model().named_parameters():
        plain = name.replace("base_layer.", "")
        if plain in before and not param.requires_grad:
            assert torch.equal(param, before[plain]), name


@pytest.fixture(scope="module")
def trained():
    model, targets, heads, inputs = build("bert")
    adapted = apply_method(
        model, {"name": "melora", "r": 8, "options": {"n_mini": 4}, "target_modules": targets, "head_modules": heads}
    )
    train_a_few_steps(adapted, inputs)
    with torch.no_grad():
        out = output(adapted, inputs)
    return adapted, inputs, out


def test_save_adapter_and_load_adapter_reproduce_the_output_exactly(trained, tmp_path):
    adapted, inputs, out = trained
    save_adapter(adapted, tmp_path / "a")
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["n_mini"]) == ("MELORA", 8, 4)
    reloaded = load_adapter(build("bert")[0], tmp_path / "a")
    with torch.no_grad():
        assert torch.equal(output(reloaded, inputs), out)


def test_peft_from_pretrained_reproduces_the_output_exactly(trained, tmp_path):
    adapted, inputs, out = trained
    save_adapter(adapted, tmp_path / "a")
    assert PEFT_TYPE_TO_CONFIG_MAPPING[PeftType.MELORA] is MELoRAConfig
    assert PEFT_TYPE_TO_TUNER_MAPPING[PeftType.MELORA] is MELoRAModel
    reloaded = PeftModel.from_pretrained(build("bert")[0], str(tmp_path / "a"))
    assert isinstance(reloaded.peft_config["default"], MELoRAConfig)
    with torch.no_grad():
        assert torch.equal(output(reloaded, inputs), out)


def test_an_edited_saved_config_is_refused(trained, tmp_path):
    adapted, _, _ = trained
    save_adapter(adapted, tmp_path / "a")
    path = tmp_path / "a" / "adapter_config.json"
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, "n_mini": 2}))
    with pytest.raises(ValueError, match="adapter_config.json"):
        load_adapter(build("bert")[0], tmp_path / "a")
    with pytest.raises(ValueError, match="adapter_config.json"):
        PeftModel.from_pretrained(build("bert")[0], str(tmp_path / "a"))


def test_adapters_switch_and_disable():
    base, targets, _, inputs = build("bert")
    with torch.no_grad():
        plain = output(base, inputs)
    model = get_peft_model(base, MELoRAConfig(r=8, n_mini=4, target_modules=targets))
    model.add_adapter("two", MELoRAConfig(r=4, n_mini=2, alpha=8.0, target_modules=targets))
    randomise(model)
    with torch.no_grad():
        first = output(model, inputs)
        model.set_adapter("two")
        second = output(model, inputs)
        with model.disable_adapter():
            assert torch.equal(output(model, inputs), plain)
    assert not torch.allclose(first, second)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        n for n, _ in model.named_parameters() if n.endswith((".melora_A.two", ".melora_B.two"))
    }
    with pytest.raises(ValueError, match="mixed-adapter batches"):
        model(**inputs, adapter_names=["default"] * 2)


def test_half_precision_base_keeps_float32_adapters():
    base, targets, _, inputs = build("bert")
    model = get_peft_model(base.to(torch.bfloat16), MELoRAConfig(r=8, n_mini=4, target_modules=targets))
    randomise(model)
    assert {p.dtype for n, p in model.named_parameters() if "melora_" in n} == {torch.float32}
    with torch.no_grad():
        out = output(model, inputs)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


# -- refusals --------------------------------------------------------------------------------------------------------
def _untouched(model: nn.Module, before: dict) -> None:
    assert not any(isinstance(m, BaseTunerLayer) for m in model.modules())
    assert not hasattr(model, "peft_config")
    assert {n: p for n, p in model.named_parameters()}.keys() == before.keys()


@pytest.mark.parametrize(
    "config, match",
    [
        (
            {"r": 10, "n_mini": 5},
            r"MELoRA cannot adapt fc1: in_features=12 and out_features=16 must both be divisible by n_mini=5 .*"
            r"Choose an n_mini that divides 4 \(e.g. n_mini in \[2, 4\]\), or leave fc1 out of target_modules",
        ),
        ({"r": 16, "n_mini": 4}, r"MELoRA's r=16 exceeds min\(in, out\)=12 of fc1 \(12 -> 16\).*Choose r <= 12"),
    ],
)
def test_targets_that_do_not_fit_are_refused_before_the_model_is_touched(config, match):
    model, targets, _, _ = build("mlp")
    before = dict(model.named_parameters())
    with pytest.raises(ValueError, match=match):
        get_peft_model(model, MELoRAConfig(**config, target_modules=targets))
    _untouched(model, before)


def test_a_target_that_is_not_linear_is_refused_before_the_model_is_touched():
    model, _, _, _ = build("bert")
    before = dict(model.named_parameters())
    with pytest.raises(ValueError, match=r"MELoRA cannot adapt .*word_embeddings: it is a Embedding.*Linear"):
        get_peft_model(model, MELoRAConfig(r=8, n_mini=4, target_modules=["query", "word_embeddings"]))
    _untouched(model, before)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"r": 10, "n_mini": 4}, r"r=10 \(the total rank\) must be divisible by n_mini=4.*e.g. r=12"),
        ({"r": 8, "n_mini": 0}, "n_mini must be a positive integer"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"bias": "all"}, "bias must be 'none'"),
    ],
)
def test_bad_configs_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MELoRAConfig(**kwargs)


def test_the_option_schema_checks_melora_options_at_compose_time():
    def check(options):
        check_method_options(OmegaConf.create({"method": {"name": "melora", "options": options}}))

    check({"n_mini": 4, "dropout": 0})
    check({"n_mini": None, "dropout": 0.05})
    with pytest.raises(ValueError, match=r"melora has no option 'n_minis': did you mean method.options.n_mini\?"):
        check({"n_minis": 4})
    with pytest.raises(ValueError, match=r"method.options.n_mini must be a number for melora"):
        check({"n_mini": "four"})


# -- end to end ------------------------------------------------------------------------------------------------------
def test_a_composed_run_trains_and_saves_melora(tmp_path):
    # tiny_bert: hidden 32, query/value 32 x 32; the defaults r=16, n_mini=2 fit (mini LoRAs of rank 8 on 16 x 16)
    _, metrics = run_composed(tmp_path, "model=tiny_bert", "method=melora", "logger=none", "callbacks=none")
    assert metrics["params"]["adapter"] == 4 * (16 // 2) * (32 + 32)
    assert "test" in metrics
    spec = json.loads((tmp_path / "adapter" / "method.json").read_text())
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert spec["name"] == "melora" and (config["r"], config["n_mini"]) == (16, 2)
