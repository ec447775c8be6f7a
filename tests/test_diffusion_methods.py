"""The LoLDU paper's Stable Diffusion baselines as methods of the diffusion family: textual inversion (new token rows
of the text encoder, read back by diffusers' ``load_textual_inversion``) and DreamBooth's full UNet fine-tuning
(``merged/unet``, read back by ``UNet2DConditionModel.from_pretrained``), end to end on the tiny SD with debug=fast,
and refused everywhere else."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import build, run_composed
from safetensors.torch import load_file

from loldu.eval import dreambooth as dreambooth_eval
from loldu.methods import apply_method, count_parameters, load_adapter, optimizer_param_groups
from loldu.methods.textual_inversion import (
    LEARNED_EMBEDS,
    PlaceholderEmbedding,
    TextualInversionOptions,
    expand_placeholder,
    initializer_vector,
    save_learned_embeds,
)
from loldu.models.diffusion import prompt_ids
from loldu.models.tiny import tiny_sd
from loldu.run.finished import ensure_merged, load_run
from loldu.tasks.diffusion import DiffusionModule

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_SD = ("model=tiny_sd", "task=dreambooth_animal")
VECTORS_KEY = "embeddings.token_embedding.placeholder_vectors"


def _fresh():
    return tiny_sd(resolution=32, seed=0)  # the weights every tiny_sd run starts from


@pytest.fixture(scope="module")
def ti_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ti_run")
    _, metrics = run_composed(out, *TINY_SD, "method=textual_inversion")
    return out, metrics


@pytest.fixture(scope="module")
def db_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("db_run")
    _, metrics = run_composed(out, *TINY_SD, "method=dreambooth_full")
    return out, metrics


def _trained_text_encoder(out):
    """A fresh tiny SD given the run's placeholder, then its adapter/ (the trained rows): the trained text encoder."""
    bundle = _fresh()
    bundle.add_placeholder_tokens(TextualInversionOptions(initializer_token="cat"))
    load_adapter(bundle.text_encoder, out / "adapter")  # checks the tensors' hash and the base's fingerprints
    return bundle


# -- textual inversion -----------------------------------------------------------------------------------------------
def test_textual_inversion_run_trains_only_the_new_word(ti_run):
    out, metrics = ti_run
    dim = _fresh().text_encoder.config.hidden_size
    assert metrics["method"] == "textual_inversion" and metrics["steps"] == 3
    assert metrics["params"]["adapter"] == metrics["params"]["trainable"] == 1 * dim == 32  # num_vectors x dim
    assert (out / "samples" / "progression.png").exists()
    assert not (out / "merged").exists() and not (out / "lora").exists()
    learned = load_file(out / "textual_inversion" / LEARNED_EMBEDS)
    assert list(learned) == ["sks"] and learned["sks"].shape == (1, dim)
    saved = load_file(out / "adapter" / "trainable.safetensors")
    assert list(saved) == [VECTORS_KEY]  # the adapter holds the new row and nothing else
    assert torch.equal(learned["sks"], saved[VECTORS_KEY])
    fresh = _fresh()
    start = initializer_vector(fresh.tokenizer, fresh.text_encoder.get_input_embeddings(), "cat")
    assert not torch.allclose(learned["sks"][0], start), "training moved the new row away from its initializer"
    checkpoint = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert list(checkpoint["state_dict"]) == [f"model.{VECTORS_KEY}"]


def test_learned_embedding_loads_with_diffusers_load_textual_inversion(ti_run):
    out, _ = ti_run
    learned = load_file(out / "textual_inversion" / LEARNED_EMBEDS)["sks"]
    pipe = _fresh().pipeline()
    rows = len(pipe.tokenizer)
    pipe.load_textual_inversion(str(out / "textual_inversion"))  # plain diffusers, no loldu code involved
    token = pipe.tokenizer.convert_tokens_to_ids("sks")
    assert token == rows and len(pipe.tokenizer) == rows + 1
    weight = pipe.text_encoder.get_input_embeddings().weight
    assert torch.equal(weight[token], learned[0])
    assert torch.equal(weight[:rows], _fresh().text_encoder.get_input_embeddings().weight)
    trained = _trained_text_encoder(out)
    ids = prompt_ids(pipe.tokenizer, "a photo of sks cat")
    assert torch.equal(ids, prompt_ids(trained.tokenizer, "a photo of sks cat")) and token in ids
    with torch.no_grad():
        torch.testing.assert_close(pipe.text_encoder(ids)[0], trained.text_encoder(ids)[0], rtol=0, atol=1e-6)


def test_load_run_rebuilds_the_trained_text_encoder_with_its_new_word(ti_run):
    out, _ = ti_run
    cfg, bundle, model = load_run(out)  # the tokens are added before the adapter loads, as in training
    assert model is bundle.text_encoder and bundle.trained == "text_encoder"
    learned = load_file(out / "textual_inversion" / LEARNED_EMBEDS)["sks"]
    embedding = model.get_input_embeddings()
    assert isinstance(embedding, PlaceholderEmbedding) and embedding.tokens == ["sks"]
    assert torch.equal(embedding.trained_rows(), learned)
    ids = prompt_ids(bundle.tokenizer, "a photo of sks cat")
    trained = _trained_text_encoder(out)
    with torch.no_grad():
        assert torch.equal(model(ids)[0], trained.text_encoder(ids)[0])


def test_ensure_merged_refuses_textual_inversion_and_writes_nothing(ti_run):
    out, _ = ti_run
    with pytest.raises(ValueError, match="textual_inversion leaves the UNet as it was.*learned_embeds.safetensors"):
        ensure_merged(out)
    assert not (out / "merged").exists()


@pytest.mark.parametrize("vectors", [1, 2])
def test_concept_metrics_of_a_textual_inversion_run_sample_with_its_trained_word(tmp_path, monkeypatch, vectors):
    out = tmp_path / "run"
    run_composed(out, *TINY_SD, "method=textual_inversion", f"+method.options.num_vectors={vectors}")
    learned = load_file(out / "textual_inversion" / LEARNED_EMBEDS)["sks"]
    seen = []

    def render(pipe, prompts, *args, **kwargs):
        seen.append(pipe)
        return real_render(pipe, prompts, *args, **kwargs)

    real_render = dreambooth_eval.render
    monkeypatch.setattr(dreambooth_eval, "render", render)
    result = dreambooth_eval.evaluate_run(out, encoders="tiny", images_per_prompt=1, inference_steps=2)
    [pipe] = seen
    embedding = pipe.text_encoder.get_input_embeddings()
    assert isinstance(embedding, PlaceholderEmbedding) and torch.equal(embedding.trained_rows(), learned)
    assert type(pipe.unet).__name__ == "UNet2DConditionModel"
    assert torch.equal(pipe.unet.conv_in.weight, _fresh().unet.conv_in.weight)  # the UNet is the frozen base
    assert pipe.maybe_convert_prompt("a photo of sks cat", pipe.tokenizer).count("sks") == vectors
    assert result["n_generated"] == 2 and (out / "concept_metrics.json").is_file()


def test_multi_vector_embedding_round_trip_through_diffusers(tmp_path):
    bundle = _fresh()
    options = TextualInversionOptions(placeholder_token="<cat>", initializer_token="cat", num_vectors=3)
    module = bundle.add_placeholder_tokens(options)
    with torch.no_grad():
        module.vectors.normal_(generator=torch.Generator().manual_seed(0))
    path = save_learned_embeds(bundle.text_encoder, tmp_path)
    assert path == tmp_path / LEARNED_EMBEDS
    assert {k: v.shape for k, v in load_file(path).items()} == {"<cat>": (3, 32)}
    pipe = _fresh().pipeline()
    pipe.load_textual_inversion(str(tmp_path))
    prompt = "a photo of <cat> on the beach"
    written = expand_placeholder(prompt, "<cat>", 3)
    assert (
        written == pipe.maybe_convert_prompt(prompt, pipe.tokenizer) == "a photo of <cat> <cat>_1 <cat>_2 on the beach"
    )
    ids = prompt_ids(bundle.tokenizer, written)
    assert torch.equal(ids, prompt_ids(pipe.tokenizer, written))
    assert torch.equal(pipe.text_encoder.get_input_embeddings().weight, module.weight)
    with torch.no_grad():
        torch.testing.assert_close(pipe.text_encoder(ids)[0], bundle.text_encoder(ids)[0], rtol=0, atol=1e-6)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
def test_only_the_new_rows_train_and_everything_else_stays_bit_identical():
    bundle = _fresh()
    options = TextualInversionOptions(initializer_token="cat", num_vectors=2)
    bundle.add_placeholder_tokens(options)
    spec = {"name": "textual_inversion", "options": {"initializer_token": "cat", "num_vectors": 2}}
    model = apply_method(bundle.text_encoder, spec)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {VECTORS_KEY}
    assert count_parameters(model)["adapter"] == 2 * 32
    module = DiffusionModule(model, bundle, lr=1e-2)
    frozen = {
        name: {k: v.clone() for k, v in part.state_dict().items() if not k.endswith("placeholder_vectors")}
        for name, part in (("text_encoder", bundle.text_encoder), ("unet", bundle.unet), ("vae", bundle.vae))
    }
    vectors = model.get_input_embeddings().vectors.detach().clone()
    other = prompt_ids(bundle.tokenizer, ["a photo of a cat"])
    with torch.no_grad():
        before = model(other)[0]
    # weight decay on: the frozen rows are not in the optimizer at all, so not even decay can touch them
    optimizer = torch.optim.AdamW(optimizer_param_groups(model, weight_decay=0.1), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    ids = prompt_ids(bundle.tokenizer, [expand_placeholder("a photo of sks cat", "sks", 2)] * 2)
    model.train()  # as on_fit_start does
    for _ in range(2):
        batch = {"pixel_values": torch.randn(2, 3, 32, 32, generator=gen), "input_ids": ids}
        loss = module.training_step(batch, 0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert not torch.equal(model.get_input_embeddings().vectors, vectors)
    for name, part in (("text_encoder", bundle.text_encoder), ("unet", bundle.unet), ("vae", bundle.vae)):
        now = {k: v for k, v in part.state_dict().items() if not k.endswith("placeholder_vectors")}
        assert now.keys() == frozen[name].keys()
        changed = [k for k in now if not torch.equal(now[k], frozen[name][k])]
        assert not changed, f"{name}: {changed[:5]} changed"
    with torch.no_grad():
        assert torch.equal(model.eval()(other)[0], before)  # prompts without the new word read as before


def test_placeholder_embedding_reads_base_rows_and_new_rows():
    base = torch.nn.Embedding(5, 3)
    module = PlaceholderEmbedding(base, 5, torch.ones(2, 3), ["x", "x_1"])
    ids = torch.tensor([[0, 5, 4, 6]])
    out = module(ids)
    assert torch.equal(out[0, 0], base.weight[0]) and torch.equal(out[0, 2], base.weight[4])
    assert torch.equal(out[0, 1], torch.ones(3)) and torch.equal(out[0, 3], torch.ones(3))
    assert module.weight.shape == (7, 3) and torch.equal(module.weight[:5], base.weight)
    out.sum().backward()
    assert base.weight.grad is None and module.vectors.grad.abs().sum() > 0


# -- DreamBooth (full UNet) --------------------------------------------------------------------------------------------
def test_dreambooth_full_run_trains_the_whole_unet(db_run):
    out, metrics = db_run
    unet_params = sum(p.numel() for p in _fresh().unet.parameters())
    assert metrics["method"] == "dreambooth_full" and metrics["steps"] == 3
    assert metrics["params"]["adapter"] == metrics["params"]["trainable"] == metrics["params"]["base"] == unet_params
    assert unet_params == 792_964
    assert (out / "samples" / "progression.png").exists()
    config = (out / "config.yaml").read_text()
    assert "save_merged: true" in config  # the merged UNet is the method's export
    assert json.loads((out / "status.json").read_text())["status"] == "finished"


def test_dreambooth_full_export_loads_with_diffusers_and_equals_the_trained_unet(db_run):
    from diffusers import UNet2DConditionModel

    out, _ = db_run
    unet = UNet2DConditionModel.from_pretrained(out / "merged" / "unet")
    trained = load_file(out / "adapter" / "trainable.safetensors")  # every UNet parameter, as trained
    loaded = unet.state_dict()
    assert set(trained) == {n for n, _ in unet.named_parameters()}
    for name, value in trained.items():
        assert torch.equal(loaded[name], value), name
    fresh = dict(_fresh().unet.named_parameters())
    assert any(not torch.equal(value, fresh[name]) for name, value in trained.items()), "training changed the UNet"


# -- refusals ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["textual_inversion", "dreambooth_full"])
def test_refused_on_other_tasks_before_any_model_loads(tmp_path, method):
    with pytest.raises(
        ValueError, match=f"method={method} .* diffusion tasks only; task 'digits' is of the image family"
    ):
        run_composed(tmp_path, "model=tiny_vit", "task=digits", f"method={method}")
    assert not (tmp_path / "config.yaml").exists()  # written once the model is built: it never was


@pytest.mark.parametrize("method,match", [
    ("textual_inversion", "textual_inversion trains the embedding rows of new tokens"),
    ("dreambooth_full", "dreambooth_full fine-tunes a Stable Diffusion UNet in full"),
])  # fmt: skip
def test_apply_method_refuses_models_that_are_not_sd_parts(method, match):
    with pytest.raises(ValueError, match=match):
        apply_method(build("mlp")[0], {"name": method})


@pytest.mark.parametrize("overrides,match", [
    (["method.options.placeholder_token=xyz"], "placeholder_token='xyz' does not occur in task.data.instance_prompt"),
    (["save_merged=true"], "save_merged=true: textual_inversion leaves the UNet"),
    (["method.options.num_vectors=0"], "num_vectors must be an integer >= 1"),
    (["+method.options.rank=2"], "textual_inversion has no option 'rank'"),
    (["method.options.placeholder_token=a"], r"\['a'\] already in the tokenizer's vocabulary"),
])  # fmt: skip
def test_bad_textual_inversion_settings_are_refused(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        run_composed(tmp_path, *TINY_SD, "method=textual_inversion", *overrides)
    assert not (tmp_path / "adapter").exists()
