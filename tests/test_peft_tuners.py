"""PEFT's methods by name: ``method=peft method.peft_type=<type>`` and the named presets (adalora, dora, vblora,
tinylora, road, ia3, loha, lokr, oft), through the same path as every method (tests/test_methods.py runs its whole
contract on them too). Table-driven like PEFT's test_custom_models: one row per named config."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import torch
from helpers import ROOT, TRAIN_ENV, build, output, run_composed
from omegaconf import OmegaConf
from peft import PeftType
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import load_file

from loldu.config.peft_types import canonical_peft_type, peft_type_names
from loldu.methods import (
    METHODS,
    apply_method,
    check_mergeable,
    count_parameters,
    get_method,
    load_adapter,
    merge_method,
    save_adapter,
    training_penalty,
)
from loldu.methods.peft_tuners import NAMED
from loldu.models.tiny import tiny_text_classifier

pytestmark = pytest.mark.usefixtures("one_thread")

#: Named config -> (its PEFT type, adapter parameters on the tiny BERT (2 layers, hidden 32, query and value) with
#: the YAML's defaults: all null, so PEFT's defaults and this project's conventions).
TABLE = {
    "adalora": ("ADALORA", 3120),  # init_r=12: (12 x 32 + 32 x 12 + 12 singular values) x 4 layers
    "dora": ("LORA", 2176),  # r=8: 8 x (32 + 32) x 4 + a magnitude of 32 per layer
    "vblora": ("VBLORA", 16384),  # a bank of 256 vectors of length 32 (fitted: 256 does not divide 32) + logits
    "tinylora": ("TINYLORA", 256),  # u=64 per layer
    "road": ("ROAD", 128),  # road_1: one angle and scale per pair of outputs
    "ia3": ("IA3", 128),  # one scale per output
    "loha": ("LOHA", 4096),  # two rank-8 products per layer: twice LoRA's
    "lokr": ("LOKR", 320),  # r=8, 32 x 32 factored as PEFT's decompose_factor=-1 does
    "oft": ("OFT", 1984),  # one 32 x 32 skew-symmetric block per layer: 496
}


def test_the_table_covers_every_named_peft_method():
    assert set(TABLE) == {entry.name for entry in NAMED}
    assert METHODS["peft"].members is not None and (ROOT / "conf" / "method" / "peft.yaml").is_file()
    for name, (peft_type, _) in TABLE.items():
        assert get_method(name).config_cls is PEFT_TYPE_TO_CONFIG_MAPPING[PeftType[peft_type]]
        assert (ROOT / "conf" / "method" / f"{name}.yaml").is_file()


def test_the_torch_free_list_of_peft_types_is_peft_s_own():
    # read from peft/utils/peft_types.py without importing peft; a PEFT upgrade that changes that file fails here
    shipped = {
        n for n, m in PeftType.__members__.items() if PEFT_TYPE_TO_CONFIG_MAPPING[m].__module__.startswith("peft.")
    }
    assert set(peft_type_names()) == shipped
    assert canonical_peft_type("ia3") == canonical_peft_type("IA3") == "IA3"
    assert canonical_peft_type("LoHa") == "LOHA"
    with pytest.raises(ValueError, match="did you mean method.peft_type=lora"):
        canonical_peft_type("lorra")
    assert get_method("peft:IA3").name == "peft:ia3"
    with pytest.raises(ValueError, match="family of methods"):
        get_method("peft")
    with pytest.raises(ValueError, match="prompt-learning"):
        get_method("peft:prompt_tuning")


@pytest.fixture(scope="module", params=list(TABLE))
def trained(request):
    """A named method on the tiny BERT, trained one step: (name, model, inputs, snapshot before the step)."""
    torch.manual_seed(0)
    model, targets, heads, inputs = build("bert")
    adapted = apply_method(model, {"name": request.param, "target_modules": targets, "head_modules": heads})
    before = {n: p.detach().clone() for n, p in adapted.named_parameters()}
    adapted.train()
    optimizer = torch.optim.AdamW([p for p in adapted.parameters() if p.requires_grad], lr=1e-2)
    loss = (output(adapted, inputs) ** 2).mean()
    extra = training_penalty(adapted)  # AdaLoRA's orthogonality term, as the training loop adds it
    (loss if extra is None else loss + extra).backward()
    optimizer.step()
    adapted.eval()
    return request.param, adapted, inputs, before


def test_adapter_parameter_counts(trained):
    name, adapted, _, _ = trained
    counts = count_parameters(adapted)
    assert counts["adapter"] == TABLE[name][1]
    assert counts["head"] == 32 * 3 + 3  # the classifier, trained in full
    assert counts["trainable"] == sum(p.numel() for p in adapted.parameters() if p.requires_grad)


def test_one_step_changes_only_the_adapter_and_the_head(trained):
    name, adapted, _, before = trained
    params = dict(adapted.named_parameters())
    changed = {n for n, p in params.items() if not torch.equal(p, before[n])}
    assert changed, f"{name}: one step changed nothing"
    frozen = sorted(n for n in changed if not params[n].requires_grad)
    assert not frozen, f"{name}: frozen parameters changed: {frozen[:5]}"
    assert any("classifier" in n for n in changed) and any("classifier" not in n for n in changed)


def test_save_then_load_reproduces_the_output_exactly(trained, tmp_path):
    name, adapted, inputs, _ = trained
    with torch.no_grad():
        expected = output(adapted, inputs)
    save_adapter(adapted, tmp_path)
    assert json.loads((tmp_path / "method.json").read_text())["saved"]["tensors_sha256"]  # the integrity record
    fresh, *_ = build("bert")
    reloaded = load_adapter(fresh, tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(output(reloaded, inputs), expected)


def test_merged_model_matches_the_adapted_one(trained):
    name, adapted, inputs, _ = trained
    check_mergeable(adapted)  # every named method merges
    with torch.no_grad():
        expected = output(adapted, inputs)
        plain = merge_method(copy.deepcopy(adapted))
        assert not any(isinstance(m, BaseTunerLayer) for m in plain.modules())
        torch.testing.assert_close(output(plain, inputs), expected, rtol=1e-4, atol=1e-5)


def test_any_peft_type_by_name_goes_through_the_same_path(tmp_path):
    model, targets, heads, inputs = build("bert")
    spec = {"name": "peft", "peft_type": "LoHa", "target_modules": targets, "head_modules": heads}
    spec["config"] = {"rank_dropout": 0.0, "alpha": 4}
    adapted = apply_method(model, spec)
    assert adapted.loldu_method.spec.name == "peft:loha"
    assert adapted.peft_config["default"].alpha == 4  # the config's fields reach PEFT's config class
    assert count_parameters(adapted)["adapter"] == TABLE["loha"][1]
    save_adapter(adapted, tmp_path)
    assert json.loads((tmp_path / "method.json").read_text())["name"] == "peft:loha"
    with torch.no_grad():
        assert torch.equal(output(load_adapter(build("bert")[0], tmp_path), inputs), output(adapted, inputs))
    # targets set in the config replace the model group's
    ia3 = apply_method(build("bert")[0], {**spec, "peft_type": "ia3", "config": {"target_modules": ["key"]}})
    assert ia3.peft_config["default"].target_modules == {"key"}


def test_a_method_peft_cannot_merge_is_refused_before_training(tmp_path, monkeypatch):
    from peft.tuners.ia3 import layer as ia3_layer

    monkeypatch.setattr(ia3_layer.Linear, "merge", BaseTunerLayer.merge)  # as a PEFT method without merge
    model, targets, heads, _ = build("bert")
    with pytest.raises(ValueError, match="cannot be merged"):
        check_mergeable(apply_method(model, {"name": "ia3", "target_modules": targets, "head_modules": heads}))
    with pytest.raises(ValueError, match="save_merged=true: method ia3 cannot be merged") as refused:
        run_composed(tmp_path, "model=tiny_bert", "method=ia3", "save_merged=true", "logger=none", "callbacks=none")
    assert getattr(refused.value, "loldu_refusal", False)  # train.py shows one line
    assert not (tmp_path / "metrics.json").exists() and not (tmp_path / "adapter").exists()


@pytest.mark.parametrize("loss_scale", [None, 1024.0], ids=["fp32", "16-mixed"])
def test_training_penalty_joins_the_loss_scaled_like_it(loss_scale):
    from types import SimpleNamespace

    from loldu.tasks.common import FineTuneModule

    model, targets, _, _ = build("bert")
    adapted = apply_method(model, {"name": "adalora", "target_modules": targets, "options": {"total_step": 10}})
    module = FineTuneModule(lr=1e-3)
    module.model = adapted
    scaler = None if loss_scale is None else SimpleNamespace(get_scale=lambda: loss_scale)  # AMP's GradScaler
    module._trainer = SimpleNamespace(precision_plugin=SimpleNamespace(scaler=scaler), accumulate_grad_batches=2)
    module.backward(torch.zeros((), requires_grad=True))  # a task loss without gradient: only the penalty's remain
    a = next(p for n, p in adapted.named_parameters() if "lora_A" in n)
    got = a.grad.clone()
    a.grad = None
    # as Lightning hands the task loss to backward: divided by the accumulation, multiplied by AMP's scale
    (training_penalty(adapted) * (loss_scale or 1.0) / 2).backward()
    assert got.abs().sum() > 0
    torch.testing.assert_close(got, a.grad)


def test_adalora_reallocates_its_ranks_during_a_run(tmp_path):
    # Fails if update_and_allocate is not called after the optimizer steps: the rank pattern stays unset.
    _, metrics = run_composed(tmp_path, "model=tiny_bert", "method=adalora", "logger=none", "callbacks=none")
    assert metrics["method"] == "adalora"
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["total_step"] == 2  # the trainer's estimate (null in the YAML): debug=fast, 64 examples of 32
    pattern = config["rank_pattern"]
    assert pattern, "AdaLoRA's rank allocation never ran"
    kept = sum(sum(mask) for mask in pattern.values())
    assert 0 < kept < sum(len(mask) for mask in pattern.values())  # some singular values were pruned
    tensors = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    saved = {k: t for k, t in tensors.items() if "lora_E" in k}
    assert sum(t.shape[0] for t in saved.values()) == kept  # PEFT saves the kept singular values only
    torch.manual_seed(0)  # the run's seed, before its model was built
    fresh = tiny_text_classifier(num_labels=2, arch="bert", hidden_size=32, layers=2).model
    reloaded = load_adapter(fresh, tmp_path / "adapter")  # at the reallocated ranks
    assert sorted(int(p.shape[0]) for n, p in reloaded.named_parameters() if "lora_E" in n) == sorted(
        int(t.shape[0]) for t in saved.values()
    )
    method = json.loads((tmp_path / "adapter" / "method.json").read_text())
    assert method["options"]["total_step"] == config["total_step"]  # method.json records what ran


@pytest.mark.parametrize("name", list(TABLE))
def test_each_named_config_trains_on_tiny_bert(tmp_path, name):
    _, metrics = run_composed(tmp_path, "model=tiny_bert", f"method={name}", "logger=none", "callbacks=none")
    assert metrics["method"] == name and metrics["params"]["adapter"] == TABLE[name][1]
    default_lr = OmegaConf.load(ROOT / "conf" / "method" / f"{name}.yaml").train.default_lr
    assert metrics["lr"] == default_lr
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


def test_a_generic_run_records_peft_and_its_type(tmp_path):
    _, loha = run_composed(
        tmp_path, "model=tiny_bert", "method=peft", "method.peft_type=LoHa", "save_merged=true", "logger=none",
        "callbacks=none",
    )  # fmt: skip
    assert loha["method"] == "peft:loha" and loha["params"]["adapter"] == TABLE["loha"][1]
    saved = (tmp_path / "config.yaml").read_text()
    assert "name: peft:loha" in saved and "peft_type: LOHA" in saved  # what the report and W&B read
    assert (tmp_path / "merged" / "config.json").is_file()


#: train.py as users run it, saying at exit whether torch was ever imported (as in tests/test_refusals.py).
PROBE = (
    "import atexit, runpy, sys\n"
    "atexit.register(lambda: sys.stderr.write(f'probe: torch loaded {\"torch\" in sys.modules}\\n'))\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


@pytest.mark.parametrize(
    ("args", "message", "before_torch"),
    [
        (["method.peft_type=lorra"], "did you mean method.peft_type=lora?", True),
        ([], "give method.peft_type=<type>", True),
        (
            ["method.peft_type=ia3", "+method.config.feedforward_module=[query]"],
            "did you mean method.config.feedforward_modules?",
            False,
        ),
    ],
    ids=["unknown type", "no type", "config typo"],
)
def test_refusals_through_train_py(tmp_path, args, message, before_torch):
    command = [sys.executable, "-c", PROBE, str(ROOT / "train.py"), "model=tiny_bert", "debug=fast", "method=peft"]
    done = subprocess.run(command + args, cwd=tmp_path, env=TRAIN_ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], done.stderr[-3000:]
    assert f"probe: torch loaded {not before_torch}" in done.stderr
