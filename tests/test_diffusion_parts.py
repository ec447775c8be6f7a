"""Offline checks of the DreamBooth parts: the tiny Stable Diffusion, the data module and the concept metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from loldu.data.dreambooth import DreamBoothDataModule, generate_class_images
from loldu.eval.concept import concept_scores, load_encoders
from loldu.eval.concept import main as concept_main
from loldu.models.tiny import tiny_clip_tokenizer, tiny_sd

RES = 16
PROMPT = "a photo of sks dog"


@pytest.fixture(scope="module")
def bundle():
    return tiny_sd(resolution=32, seed=0)


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_clip_tokenizer(32)


@pytest.fixture(scope="module")
def encoders():
    return load_encoders("tiny", seed=0)


def _write_images(folder, colours, sizes=((40, 24), (24, 48), (16, 16))):
    folder.mkdir(parents=True, exist_ok=True)
    for i, colour in enumerate(colours):
        Image.new("RGB", sizes[i % len(sizes)], colour).save(folder / f"img_{i}.png")
    return folder


def _module(tokenizer, **kwargs):
    kwargs.setdefault("instance_prompt", PROMPT)
    return DreamBoothDataModule(tokenizer=tokenizer, resolution=RES, **kwargs)


# -- tiny Stable Diffusion -----------------------------------------------------------------------------------------


def test_tiny_sd_matches_its_tokenizer_and_samples_images(bundle):
    tok, cfg = bundle.tokenizer, bundle.text_encoder.config
    assert cfg.vocab_size == len(tok) == 514
    assert (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) == (tok.bos_token_id, tok.eos_token_id, 513)
    assert bundle.noise_scheduler.config.beta_schedule == "scaled_linear"
    assert bundle.noise_scheduler.config.num_train_timesteps == 1000
    assert bundle.vae.config.scaling_factor == pytest.approx(0.18215)
    assert not any(p.requires_grad for p in bundle.text_encoder.parameters())
    names = {n.rsplit(".", 1)[-1] for n, m in bundle.unet.named_modules() if isinstance(m, torch.nn.Linear)}
    assert {"to_q", "to_k", "to_v"} <= names
    images = bundle.pipeline()(
        [PROMPT],
        num_inference_steps=2,
        output_type="pil",
        generator=torch.Generator().manual_seed(0),
        height=32,
        width=32,
    ).images
    assert len(images) == 1 and images[0].size == (32, 32) and images[0].mode == "RGB"
    with pytest.raises(ValueError, match="scheduler"):
        bundle.pipeline(scheduler="euler")


def test_tiny_sd_is_seeded():
    a, b = tiny_sd(resolution=16, seed=3), tiny_sd(resolution=16, seed=3)
    assert torch.equal(a.unet.conv_in.weight, b.unet.conv_in.weight)
    assert a.unet.config.sample_size == 8


def test_encode_prompts_shapes_and_refuses_long_prompts(bundle):
    hidden = bundle.encode_prompts([PROMPT, "a dog"])
    assert hidden.shape == (2, 32, 32)
    with pytest.raises(ValueError, match=r"42 tokens long.*at most 32"):
        bundle.encode_prompts(["x" * 40])


# -- DreamBooth data -----------------------------------------------------------------------------------------------


def test_folder_batches(tmp_path, tokenizer):
    folder = _write_images(tmp_path / "inst", [(255, 255, 255), (0, 0, 0), (255, 0, 0)])
    dm = _module(tokenizer, instance_dir=str(folder), batch_size=2)
    dm.setup("fit")
    assert len(dm.dataset) == 3
    assert [im.size for im in dm.instance_images()] == [(40, 24), (24, 48), (16, 16)]
    batch = next(iter(dm.train_dataloader()))
    assert batch["pixel_values"].shape == (2, 3, RES, RES) and batch["num_instance"] == 2
    assert batch["input_ids"].shape == (2, 32) and batch["input_ids"].dtype == torch.int64
    assert batch["pixel_values"].min() >= -1 and batch["pixel_values"].max() <= 1
    white = dm.dataset[0]["pixel_values"]
    red = dm.dataset[2]["pixel_values"]
    assert torch.allclose(white, torch.ones_like(white))
    assert torch.allclose(red[0], torch.ones(RES, RES)) and torch.allclose(red[1:], -torch.ones(2, RES, RES))
    ids = dm.dataset[0]["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and (ids == tokenizer.pad_token_id).sum() > 1


def test_random_crop_and_flip_are_seeded(tmp_path, tokenizer):
    folder = tmp_path / "inst"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(folder / f"{i}.png")

    def batches(seed):
        dm = _module(tokenizer, instance_dir=str(folder), center_crop=False, random_flip=True, seed=seed)
        return [b["pixel_values"] for _ in range(3) for b in dm.train_dataloader()]

    first, again, other = batches(0), batches(0), batches(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))


def test_prior_preservation_batch_puts_instances_first(tmp_path, tokenizer):
    inst = _write_images(tmp_path / "inst", [(255, 255, 255)] * 2)
    cls = _write_images(tmp_path / "cls", [(0, 0, 0)] * 5)
    dm = _module(
        tokenizer,
        instance_dir=str(inst),
        with_prior_preservation=True,
        class_dir=str(cls),
        class_prompt="a photo of dog",
        num_class_images=4,
        batch_size=2,
    )
    assert dm.class_images_missing() == 0
    dm.setup()
    assert len(dm.dataset) == 4  # max(2 instance, 4 class images)
    batch = next(iter(dm.train_dataloader()))
    assert batch["pixel_values"].shape == (4, 3, RES, RES) and batch["num_instance"] == 2
    assert torch.all(batch["pixel_values"][:2] == 1) and torch.all(batch["pixel_values"][2:] == -1)
    instance_ids, class_ids = dm.dataset[0]["input_ids"], dm.dataset[0]["class_input_ids"]
    assert not torch.equal(instance_ids, class_ids)
    assert all(torch.equal(row, instance_ids) for row in batch["input_ids"][:2])
    assert all(torch.equal(row, class_ids) for row in batch["input_ids"][2:])


def test_builtin_animal_mnist(tokenizer):
    dm = _module(tokenizer, builtin={"source": "animal_mnist", "label": "dog", "count": 3}, batch_size=3)
    images = dm.instance_images()
    assert len(images) == 3 and images[0].size == (28, 28) and images[0].mode == "RGB"
    assert len({im.tobytes() for im in images}) == 3
    by_index = _module(tokenizer, builtin={"source": "animal_mnist", "label": 4, "count": 3}).instance_images()
    assert [im.tobytes() for im in by_index] == [im.tobytes() for im in images]
    batch = next(iter(dm.train_dataloader()))
    assert batch["pixel_values"].shape == (3, 3, RES, RES)
    assert batch["pixel_values"].min() >= -1 and batch["pixel_values"].max() <= 1
    with pytest.raises(ValueError, match=r"Unknown data.builtin.label 'unicorn'.*4=dog"):
        _module(tokenizer, builtin={"source": "animal_mnist", "label": "unicorn"}).check()


def _bad_png_folder(tmp_path):
    folder = _write_images(tmp_path / "inst", [(1, 2, 3)])
    (folder / "broken.png").write_bytes(b"this is not an image")
    (folder / "also_broken.jpg").write_bytes(b"")
    (folder / "notes.txt").write_text("ignored")
    return {"instance_dir": str(folder)}


BAD_INPUTS = {
    "empty folder": (
        lambda p: {"instance_dir": str((p / "e").mkdir() or p / "e")},
        ValueError,
        r"holds no image files; accepted extensions are png, jpg, jpeg, webp, bmp",
    ),
    "missing folder": (lambda p: {"instance_dir": str(p / "nope")}, FileNotFoundError, r"nope' does not exist"),
    "file, not folder": (
        lambda p: {"instance_dir": str(_write_images(p / "i", [(0, 0, 0)]) / "img_0.png")},
        FileNotFoundError,
        "is a file, not a folder",
    ),
    "undecodable files": (_bad_png_folder, ValueError, r"2 of 3 image files cannot be decoded(?s:.*)also_broken.jpg"),
    "long prompt": (
        lambda p: {"instance_dir": str(_write_images(p / "i", [(0, 0, 0)])), "instance_prompt": "a" * 31},
        ValueError,
        r"33 tokens long.*at most 32",
    ),
    "no class_dir": (
        lambda p: {"builtin": {"source": "animal_mnist", "label": 0}, "with_prior_preservation": True,
                   "class_prompt": "a bear"},
        ValueError,
        r"with_prior_preservation needs data.class_dir",
    ),
    "no class_prompt": (
        lambda p: {"builtin": {"source": "animal_mnist", "label": 0}, "with_prior_preservation": True,
                   "class_dir": str(p)},
        ValueError,
        r"needs data.class_prompt",
    ),
    "no class images": (
        lambda p: {"builtin": {"source": "animal_mnist", "label": 0}, "with_prior_preservation": True,
                   "class_dir": str(p), "class_prompt": "a bear", "num_class_images": 0},
        ValueError,
        r"num_class_images must be >= 1",
    ),
    "both sources": (
        lambda p: {"instance_dir": str(p), "builtin": {"source": "animal_mnist", "label": 0}},
        ValueError,
        "exactly one of data.instance_dir",
    ),
    "no source": (lambda p: {}, ValueError, "exactly one of data.instance_dir"),
    "unknown builtin": (lambda p: {"builtin": {"source": "mnist", "label": 0}}, ValueError, "animal_mnist"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_raise_before_training(case, tmp_path, tokenizer):
    make_kwargs, error, pattern = BAD_INPUTS[case]
    kwargs = make_kwargs(tmp_path)
    with pytest.raises(error, match=pattern) as info:
        _module(tokenizer, **kwargs).check()
    if case == "undecodable files":
        message = str(info.value)
        assert "broken.png" in message and "notes.txt" not in message and "img_0.png" not in message


def test_missing_class_images_are_generated_without_overwriting(tmp_path, bundle):
    cls = tmp_path / "cls"
    cls.mkdir()
    Image.new("RGB", (32, 32), (9, 9, 9)).save(cls / "class_00000.png")
    keep = (cls / "class_00000.png").read_bytes()
    dm = DreamBoothDataModule(
        PROMPT,
        bundle.tokenizer,
        32,
        builtin={"source": "animal_mnist", "label": "dog", "count": 2},
        with_prior_preservation=True,
        class_dir=str(cls),
        class_prompt="a photo of dog",
        num_class_images=3,
    )
    dm.check()  # passes: class images are only required by setup
    assert dm.class_images_missing() == 2
    with pytest.raises(ValueError, match=r"2 are missing.*generate_class_images"):
        dm.setup()
    pipe = bundle.pipeline()
    written = generate_class_images(pipe, cls, "a photo of dog", dm.class_images_missing(), num_inference_steps=2)
    assert [p.name for p in written] == ["class_00001.png", "class_00002.png"]
    assert (cls / "class_00000.png").read_bytes() == keep
    assert dm.class_images_missing() == 0
    more = generate_class_images(pipe, cls, "a photo of dog", 1, num_inference_steps=2, resolution=32)
    assert [p.name for p in more] == ["class_00003.png"] and Image.open(more[0]).size == (32, 32)
    assert generate_class_images(pipe, cls, "a photo of dog", 0) == []
    dm.setup()
    assert len(dm.dataset) == 3 and "class_pixel_values" in dm.dataset[0]


# -- concept metrics -----------------------------------------------------------------------------------------------


def _distinct_images(n, seed=0):
    rng = np.random.default_rng(seed)
    images = [Image.fromarray(rng.integers(0, 255, (36, 44, 3), dtype=np.uint8)) for _ in range(n - 1)]
    return [*images, Image.new("RGB", (20, 20), (250, 10, 10))]


def test_concept_scores_are_mean_pairwise_cosines(encoders):
    images = _distinct_images(3)
    prompts = ["a photo of sks dog", "a dog", "a photo of sks dog"]
    scores = concept_scores(images, images, prompts, encoders)
    assert (scores["n_generated"], scores["n_references"]) == (3, 3)
    for key, embed in (("dino", encoders.dino), ("clip_i", encoders.clip_image)):
        feats = embed(images)
        assert torch.allclose(feats.norm(dim=-1), torch.ones(3), atol=1e-5)
        sims = feats @ feats.T
        assert torch.allclose(sims.diagonal(), torch.ones(3), atol=1e-5)  # same image: cosine 1
        assert sims.min() < 0.999  # the images differ, so the score is not 1 by construction
        assert scores[key] == pytest.approx(float(sims.mean()), abs=1e-5)
        assert -1 <= scores[key] < 0.9999
    text = encoders.clip_text(prompts)
    expected = float((encoders.clip_image(images) * text).sum(-1).mean())
    assert scores["clip_t"] == pytest.approx(expected, abs=1e-5) and -1 <= scores["clip_t"] <= 1
    single = concept_scores(images[:1], images[:1], prompts[:1], encoders)
    assert single["dino"] == pytest.approx(1.0, abs=1e-5) and single["clip_i"] == pytest.approx(1.0, abs=1e-5)


def test_concept_scores_reject_bad_inputs(encoders):
    images = _distinct_images(2)
    with pytest.raises(ValueError, match="1 prompts for 2 generated images"):
        concept_scores(images, images, ["a dog"], encoders)
    with pytest.raises(ValueError, match="no generated images"):
        concept_scores([], images, [], encoders)
    with pytest.raises(ValueError, match="no reference images"):
        concept_scores(images, [], ["a", "b"], encoders)


def test_concept_cli(tmp_path, encoders):
    gen, ref = tmp_path / "gen", tmp_path / "ref"
    gen.mkdir()
    ref.mkdir()
    for i, image in enumerate(_distinct_images(2)):
        image.save(gen / f"g{i}.png")
        image.save(ref / f"r{i}.png")
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"g0.png": "a dog", "g1.png": "a red square"}))
    out = tmp_path / "scores.json"
    scores = concept_main(
        ["--generated", str(gen), "--references", str(ref), "--prompts", str(prompts), "--encoders", "tiny",
         "--out", str(out)]
    )  # fmt: skip
    assert json.loads(out.read_text()) == scores and scores["n_generated"] == 2
    direct = concept_scores(sorted(gen.iterdir()), sorted(ref.iterdir()), ["a dog", "a red square"], encoders)
    assert scores["dino"] == pytest.approx(direct["dino"], abs=1e-5)
    prompts.write_text(json.dumps({"g0.png": "a dog"}))
    with pytest.raises(ValueError, match=r"no prompt for the generated files \['g1.png'\]"):
        concept_main(["--generated", str(gen), "--references", str(ref), "--prompts", str(prompts)])


def test_sd_pipeline_loads_local_folders_and_explains_failures(tmp_path, bundle):
    from loldu.models.diffusion import sd_pipeline

    folder = tmp_path / "sd"
    bundle.unet.save_pretrained(folder / "unet")
    bundle.vae.save_pretrained(folder / "vae")
    bundle.text_encoder.save_pretrained(folder / "text_encoder")
    bundle.tokenizer.save_pretrained(folder / "tokenizer")
    bundle.noise_scheduler.save_pretrained(folder / "scheduler")
    loaded = sd_pipeline(str(folder), vae=str(folder / "vae"), resolution=32)
    assert torch.equal(loaded.unet.conv_in.weight, bundle.unet.conv_in.weight)
    assert loaded.tokenizer(PROMPT).input_ids == bundle.tokenizer(PROMPT).input_ids
    assert loaded.noise_scheduler.config.beta_end == pytest.approx(0.012)
    assert not any(p.requires_grad for p in loaded.vae.parameters())
    with pytest.raises(RuntimeError, match=r"(?s)could not load the unet.*model.builder.name_or_path"):
        sd_pipeline(str(tmp_path / "missing"))
    with pytest.raises(RuntimeError, match=r"(?s)could not load the vae.*model.builder.vae"):
        sd_pipeline(str(folder), vae=str(tmp_path / "no_vae"))


def test_pretrained_encoders_fail_with_a_fix(tmp_path):
    with pytest.raises(RuntimeError, match=r"--encoders tiny"):
        load_encoders("pretrained", dino=str(tmp_path / "no_dino"))


def test_pretrained_encoders_load_local_folders(tmp_path, encoders):
    from transformers import CLIPImageProcessor, CLIPProcessor, ViTImageProcessor

    encoders.dino_model.save_pretrained(tmp_path / "dino")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "dino")
    encoders.clip_model.save_pretrained(tmp_path / "clip")
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tiny_clip_tokenizer(32)).save_pretrained(tmp_path / "clip")
    loaded = load_encoders("pretrained", dino=str(tmp_path / "dino"), clip=str(tmp_path / "clip"))
    assert type(loaded.dino_model).__name__ == "ViTModel"
    images = _distinct_images(2)
    prompts = ["a dog", "a red square"]
    # Same weights and tokenizer, and CLIP's processor resizes square images the way the tiny preprocessing does.
    assert torch.allclose(loaded.clip_text(prompts), encoders.clip_text(prompts), atol=1e-5)
    got, want = concept_scores(images, images, prompts, loaded), concept_scores(images, images, prompts, encoders)
    assert got["encoders"] == "pretrained" and -1 <= got["dino"] <= 1
    assert got["clip_t"] == pytest.approx(want["clip_t"], abs=0.05)
