"""PEFT features users reach for: mixed-adapter batches and weighted adapter combinations."""

from __future__ import annotations

import re

import pytest
import torch
from peft import PeftModel, get_peft_model

from loldu.methods import LoLDUConfig, SVFitConfig
from loldu.methods.diagonal import DiagonalLayer
from loldu.models.tiny import TinyMLP, tiny_llama

pytestmark = pytest.mark.usefixtures("one_thread")
CONFIGS = {"loldu": LoLDUConfig, "svfit": SVFitConfig}


def _nudge(model, name: str, seed: int) -> None:
    """Give adapter ``name`` a non-zero update (z and sigma moved off their start)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, DiagonalLayer) and name in layer._dict("z"):
                z = layer._dict("z")[name]
                z.add_(torch.randn(z.shape, generator=g).to(z) * z.abs().mean())
                layer._dict("sigma")[name].mul_(1.0 + 0.1 * seed)


def _two_adapters(method: str, **kwargs):
    torch.manual_seed(0)
    config = CONFIGS[method]
    model = get_peft_model(TinyMLP(), config(target_modules=["fc1", "fc2"], r=8, **kwargs), adapter_name="a")
    model.add_adapter("b", config(target_modules=["fc1", "fc2"], r=8, **kwargs))
    _nudge(model, "a", 1)
    _nudge(model, "b", 2)
    return model.eval()


def _output_with(model, name: str, x: torch.Tensor) -> torch.Tensor:
    if name == "__base__":
        with model.disable_adapter():
            return model(x)
    model.set_adapter(name)
    return model(x)


# -- mixed batches -----------------------------------------------------------------


@pytest.mark.parametrize("method", ["loldu", "svfit"])
@pytest.mark.parametrize("path", ["auto", "fused", "activation"])
def test_mixed_batch_equals_each_adapter_row_by_row(method, path):
    model = _two_adapters(method, forward_path=path)
    x = torch.randn(5, 12)
    names = ["a", "b", "__base__", "b", "a"]
    with torch.no_grad():
        mixed = model(x, adapter_names=names)
        single = {n: _output_with(model, n, x) for n in set(names)}
    for i, name in enumerate(names):
        torch.testing.assert_close(mixed[i], single[name][i], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(single["a"], single["b"])  # the adapters really differ


def test_mixed_batch_picks_each_adapter_head_too():
    torch.manual_seed(0)
    model = get_peft_model(
        TinyMLP(), LoLDUConfig(target_modules=["fc1"], r=4, modules_to_save=["classifier"]), adapter_name="a"
    )
    model.add_adapter("b", LoLDUConfig(target_modules=["fc1"], r=4, modules_to_save=["classifier"]))
    with torch.no_grad():
        model.base_model.model.classifier.modules_to_save["b"].weight.add_(1.0)
    model.eval()
    x = torch.randn(2, 12)
    with torch.no_grad():
        mixed = model(x, adapter_names=["a", "b"])
        torch.testing.assert_close(mixed[1], _output_with(model, "b", x)[1])
        torch.testing.assert_close(mixed[0], _output_with(model, "a", x)[0])


def test_mixed_batch_is_refused_when_it_cannot_be_honoured():
    model = _two_adapters("loldu")
    x = torch.randn(3, 12)
    # PEFT's messages (LoRA's), word for word.
    with pytest.raises(ValueError, match=re.escape("Trying to infer with non-existing adapter(s): typo, zz")):
        model(x, adapter_names=["a", "zz", "typo"])
    with pytest.raises(
        ValueError, match="Length of `adapter_names` should be the same as the number of inputs, but got 2 and 3"
    ):
        model(x, adapter_names=["a", "b"])
    with pytest.raises(TypeError, match="expected a list of str"):
        model(x, adapter_names="a")
    model.train()
    with pytest.raises(ValueError, match="Cannot pass `adapter_names` when the model is in training mode."):
        model(x, adapter_names=["a", "b", "a"])
    model.eval()
    model.merge_adapter(["a"])
    with pytest.raises(ValueError, match="Cannot pass `adapter_names` when there are merged adapters"):
        model(x, adapter_names=["a", "b", "a"])


@pytest.mark.parametrize("beams", [1, 2])
def test_generate_with_adapter_names_on_a_tiny_causal_lm(beams):
    torch.manual_seed(0)
    config = LoLDUConfig(target_modules=["q_proj", "v_proj"], r=8)
    model = get_peft_model(tiny_llama(), config, adapter_name="a")
    model.add_adapter("b", LoLDUConfig(target_modules=["q_proj", "v_proj"], r=8))
    _nudge(model, "a", 5)
    _nudge(model, "b", 6)
    model.eval()
    ids = torch.randint(3, 99, (3, 6), generator=torch.Generator().manual_seed(1))
    kwargs = {"max_new_tokens": 4, "do_sample": False, "pad_token_id": 0, "num_beams": beams}
    names = ["a", "__base__", "b"]
    mixed = model.generate(input_ids=ids, adapter_names=names, **kwargs)
    for i, name in enumerate(names):
        if name == "__base__":
            with model.disable_adapter():
                alone = model.generate(input_ids=ids[i : i + 1], **kwargs)
        else:
            model.set_adapter(name)
            alone = model.generate(input_ids=ids[i : i + 1], **kwargs)
        assert torch.equal(mixed[i], alone[0]), name


# -- add_weighted_adapter ------------------------------------------------------------


@pytest.mark.parametrize("method", ["loldu", "svfit"])
def test_weighted_adapter_delta_is_the_weighted_sum_of_deltas(method):
    model = _two_adapters(method)
    weights = [0.7, -0.4]
    model.add_weighted_adapter(["a", "b"], weights, "mix", combination_type="linear")
    layers = [m for m in model.modules() if isinstance(m, DiagonalLayer)]
    assert len(layers) == 2
    for layer in layers:
        expected = weights[0] * layer.get_delta_weight("a") + weights[1] * layer.get_delta_weight("b")
        torch.testing.assert_close(layer.get_delta_weight("mix"), expected, rtol=1e-5, atol=1e-6)
        assert not layer._dict("z")["mix"].requires_grad  # not active until set_adapter
    x = torch.randn(4, 12)
    with torch.no_grad():
        with model.disable_adapter():
            base = model.base_model.model.fc1(x)
        model.set_adapter("mix")
        fc1 = model.base_model.model.fc1
        torch.testing.assert_close(
            fc1(x), base + x @ (0.7 * fc1.get_delta_weight("a") + -0.4 * fc1.get_delta_weight("b")).T
        )
    # Trainable like any adapter: the active one gets gradients.
    model.train()
    model(x).sum().backward()
    assert fc1._dict("z")["mix"].grad is not None


def test_weighted_adapter_refusals():
    model = _two_adapters("loldu")
    with pytest.raises(ValueError, match="combination_type 'svd' is not supported"):
        model.add_weighted_adapter(["a", "b"], [0.5, 0.5], "m", combination_type="svd")
    with pytest.raises(ValueError, match="unknown adapters"):
        model.add_weighted_adapter(["a", "nope"], [0.5, 0.5], "m")
    with pytest.raises(ValueError, match="one weight per adapter"):
        model.add_weighted_adapter(["a", "b"], [0.5], "m")
    with pytest.raises(ValueError, match="exists already"):
        model.add_weighted_adapter(["a", "b"], [0.5, 0.5], "b")
    model.add_adapter("r4", LoLDUConfig(target_modules=["fc1", "fc2"], r=4))
    with pytest.raises(ValueError, match="differ in rank"):
        model.add_weighted_adapter(["a", "r4"], [0.5, 0.5], "m")
    model.add_adapter("f64", LoLDUConfig(target_modules=["fc1", "fc2"], r=8, decompose_dtype="float64"))
    with pytest.raises(ValueError, match="different factors"):
        model.add_weighted_adapter(["a", "f64"], [0.5, 0.5], "m")
    model.add_adapter("fc1_only", LoLDUConfig(target_modules=["fc1"], r=8))
    with pytest.raises(ValueError, match="do not adapt"):
        model.add_weighted_adapter(["a", "fc1_only"], [0.5, 0.5], "m")
    assert "m" not in model.peft_config  # nothing half-created


def test_weighted_adapter_refuses_trained_heads():
    torch.manual_seed(0)
    config = LoLDUConfig(target_modules=["fc1"], r=4, modules_to_save=["classifier"])
    model = get_peft_model(TinyMLP(), config, adapter_name="a")
    model.add_adapter("b", LoLDUConfig(target_modules=["fc1"], r=4))
    with pytest.raises(ValueError, match="modules_to_save"):
        model.add_weighted_adapter(["a", "b"], [1.0, 1.0], "m")


@pytest.mark.parametrize("method", ["loldu", "svfit"])
def test_weighted_adapter_saves_and_reloads(method, tmp_path):
    model = _two_adapters(method)
    model.add_weighted_adapter(["a", "b"], [0.5, 2.0], "mix")
    model.save_pretrained(str(tmp_path), selected_adapters=["mix"])
    torch.manual_seed(0)
    reloaded = PeftModel.from_pretrained(TinyMLP(), str(tmp_path / "mix"), adapter_name="mix")
    x = torch.randn(4, 12)
    model.set_adapter("mix")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), model(x))


def test_weighted_svfit_adapters_with_different_svds_are_refused():
    torch.manual_seed(0)
    model = get_peft_model(TinyMLP(), SVFitConfig(target_modules=["fc1"], r=4, svd="lowrank"), adapter_name="a")
    model.add_adapter("b", SVFitConfig(target_modules=["fc1"], r=4, svd="lowrank", svd_seed=7))
    with pytest.raises(ValueError, match="different factors"):
        model.add_weighted_adapter(["a", "b"], [1.0, 1.0], "m")
