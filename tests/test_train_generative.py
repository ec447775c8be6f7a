"""Smoke runs of the instruction-tuning and concept-learning families on tiny models with debug=fast, the
run-folder tools on their outputs, and bad input refused before training."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager

import pytest
import torch
from helpers import ROOT, run_composed
from PIL import Image

from loldu.run.finished import ensure_merged, load_run


@contextmanager
def _wandb_offline():
    saved = {k: os.environ.get(k) for k in ("WANDB_MODE", "WANDB_API_KEY")}
    os.environ["WANDB_MODE"] = "offline"
    os.environ.pop("WANDB_API_KEY", None)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _wandb_media(out, kind: str) -> list:
    return list((out / "wandb").glob(f"offline-run-*/files/media/{kind}/**/*"))


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lm_run")
    with _wandb_offline():
        monitored, metrics = run_composed(
            out,
            "model=tiny_llama",
            "task=chatterbot",
            "batch_size=4",
            "task.generation.max_new_tokens=4",
            "logger=wandb",
        )
    return out, monitored, metrics


def test_instruction_tuning_smoke_run(lm_run):
    out, monitored, metrics = lm_run
    assert monitored == pytest.approx(metrics["val"]["val/loss"])
    before, after = metrics["val_before"], metrics["val"]
    assert before["val/tokens"] == after["val/tokens"] > 0  # the same supervised tokens before and after
    assert after["val/ppl"] == pytest.approx(torch.exp(torch.tensor(after["val/loss"])).item(), rel=1e-4)
    assert after["val/loss"] != before["val/loss"]  # training moved the model
    assert len(metrics["generations_before"]) == len(metrics["generations_after"]) == 2
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert {r["step"] for r in rows} == {0, metrics["generations_after"][0]["step"]} and len(rows) == 4
    assert _wandb_media(out, "table"), "the generations table reaches W&B"
    assert metrics["params"]["adapter"] == 4 * 16  # 2 layers x (q, v) x z (r = 16 full rank; sigma not trained)
    assert (out / "adapter" / "method.json").exists()
    # the checkpoint keeps what training changed, not the frozen base
    ckpt = torch.load(out / "checkpoints" / "best.ckpt", weights_only=False, map_location="cpu")
    assert ckpt["state_dict"] and all("loldu_" in k for k in ckpt["state_dict"])


def test_finished_lm_run_reloads_and_merges(lm_run):
    out, _, _ = lm_run
    cfg, bundle, model = load_run(out)
    merged_dir = ensure_merged(out)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    plain = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    tok = AutoTokenizer.from_pretrained(merged_dir)
    ids = tok(["Hello there, how are you?"], return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(plain(ids).logits, model.eval()(input_ids=ids).logits, rtol=1e-4, atol=1e-5)
    assert ensure_merged(out) == merged_dir  # written once


@pytest.fixture(scope="module")
def sd_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sd_run")
    with _wandb_offline():
        _, metrics = run_composed(
            out,
            "model=tiny_sd",
            "task=dreambooth_animal",
            "batch_size=2",
            "task.samples.inference_steps=2",
            "task.samples.every_n_steps=2",
            "save_merged=true",
            "logger=wandb",
        )
    return out, metrics


def test_concept_learning_smoke_run_writes_sample_grids(sd_run):
    out, metrics = sd_run
    assert metrics["steps"] == 3 and metrics["train"]["train/loss"] > 0
    assert metrics["samples"] == [
        "samples/progression.png",
        "samples/step_000000.png",
        "samples/step_000002.png",
        "samples/step_000003.png",
    ]
    step = Image.open(out / "samples" / "step_000000.png")
    assert step.size == (2 * 32, 2 * 32)  # 2 prompts (rows) x 2 seeds (columns), 32 px each
    progression = Image.open(out / "samples" / "progression.png")
    assert progression.size[0] == 3 * 32 and progression.size[1] >= 4 * 32  # 3 sampling points x 4 images
    assert (out / "lora" / "pytorch_lora_weights.safetensors").exists()
    assert (out / "merged" / "unet" / "config.json").exists()
    assert len(_wandb_media(out, "images")) >= 4, "every sampling grid and the progression reach W&B"


def test_finished_sd_run_merged_unet_matches_the_adapter(sd_run):
    out, _ = sd_run
    from diffusers import UNet2DConditionModel

    _, bundle, unet = load_run(out)
    plain = UNet2DConditionModel.from_pretrained(ensure_merged(out) / "unet").eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 16, 16, generator=gen)
    hidden = bundle.encode_prompts(["a photo of sks cat"])
    with torch.no_grad():
        want = unet.eval()(x, torch.tensor([10]), encoder_hidden_states=hidden).sample
        torch.testing.assert_close(plain(x, torch.tensor([10]), encoder_hidden_states=hidden).sample, want)


def test_bad_instruction_file_is_refused_before_training(tmp_path):
    data = tmp_path / "data.json"
    data.write_text(json.dumps([{"instruction": "Say hi", "output": "hi"}, {"instruction": "Say bye"}]))
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="(?s)data.json.*output"):
        run_composed(out, "model=tiny_llama", "task=instruction_json", f"task.data.source_args.path={data}")
    assert not (out / "adapter").exists() and not (out / "metrics.json").exists()


def test_empty_instance_folder_is_refused_before_training(tmp_path):
    folder = tmp_path / "dog"
    folder.mkdir()
    out = tmp_path / "run"
    with pytest.raises((ValueError, FileNotFoundError), match="no image"):
        run_composed(out, "model=tiny_sd", "task=dreambooth", f"task.data.instance_dir={folder}")
    assert not (out / "adapter").exists()


def test_sample_prompt_over_the_text_encoder_length_is_refused(tmp_path):
    long = "a photo of sks cat " + "very " * 40
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="token"):
        run_composed(out, "model=tiny_sd", "task=dreambooth_animal", f"task.samples.prompts=[{long}]")
    assert not (out / "adapter").exists()


def test_concept_metrics_command_on_the_run_folder(sd_run):
    from loldu.eval.dreambooth import main

    out, _ = sd_run
    result = main([str(out), "--encoders", "tiny", "--images-per-prompt", "2", "--inference-steps", "2"])
    saved = json.loads((out / "concept_metrics.json").read_text())
    assert saved["n_generated"] == 4 and saved["n_references"] == 5  # 2 prompts x 2 seeds; 5 instance images
    for key in ("dino", "clip_i", "clip_t"):
        assert -1.0 <= saved[key] <= 1.0 and saved[key] == pytest.approx(result[key])
    assert len(list((out / "eval").glob("*.png"))) == 4


def test_prior_preservation_generates_class_images_then_trains_on_both(tmp_path):
    class_dir = tmp_path / "class_images"
    out = tmp_path / "run"
    _, metrics = run_composed(
        out,
        "model=tiny_sd",
        "task=dreambooth_animal",
        "batch_size=1",
        "task.samples.prompts=[]",
        "task.data.with_prior_preservation=true",
        f"task.data.class_dir={class_dir}",
        "task.data.num_class_images=2",
        "logger=none",
        "callbacks=none",
    )
    assert sorted(p.name for p in class_dir.glob("*.png")) == ["class_00000.png", "class_00001.png"]
    assert metrics["train"]["train/prior_loss"] > 0 and metrics["train"]["train/instance_loss"] > 0


def test_benchmark_command_on_the_finished_lm_run(lm_run):
    from loldu.eval.lm import main

    out, _, _ = lm_run
    tasks = str(ROOT / "benchmarks" / "lm_eval_tasks")
    summary = main([str(out), "--tasks", "loldu_local_mc:2", "--limit", "4", "--include-path", tasks])
    saved = json.loads((out / "benchmarks.json").read_text())
    assert saved["results"] == summary["results"]
    assert 0.0 <= saved["results"]["loldu_local_mc"]["acc"] <= 1.0
    assert (out / "merged" / "config.json").exists()  # the merged model lm-eval ran on


def test_exported_lora_loads_with_diffusers_pipeline_loader(sd_run):
    from loldu.models.tiny import tiny_sd

    out, _ = sd_run
    _, bundle, unet = load_run(out)
    pipe = tiny_sd(resolution=32, seed=0).pipeline()  # a fresh base with the same weights
    pipe.load_lora_weights(str(out / "lora"))
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    hidden = bundle.encode_prompts(["a photo of sks cat"])
    with torch.no_grad():
        want = unet.eval()(x, torch.tensor([500]), encoder_hidden_states=hidden).sample
        got = pipe.unet.eval()(x, torch.tensor([500]), encoder_hidden_states=hidden).sample
        base = tiny_sd(resolution=32, seed=0).unet.eval()(x, torch.tensor([500]), encoder_hidden_states=hidden).sample
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert (want - base).abs().max() > 1e-4  # the adapter changed the output, so the match is not trivial


def test_report_shows_losses_and_evaluation_scores_of_generative_runs(tmp_path):
    from loldu.sweeps.report import main as report

    params = {"adapter": 10, "trainable": 10}
    lm, sd = tmp_path / "lm", tmp_path / "sd"
    lm.mkdir()
    sd.mkdir()
    (lm / "metrics.json").write_text(
        json.dumps(
            {
                "method": "loldu",
                "params": params,
                "test": {},
                "val": {"val/loss": 2.5, "val/tokens": 9.0},
                "val_before": {"val/loss": 3.0},
            }
        )
    )
    (lm / "benchmarks.json").write_text(json.dumps({"results": {"mmlu": {"acc": 0.4, "acc_stderr": 0.01}}}))
    (sd / "metrics.json").write_text(json.dumps({"method": "loldu", "params": params, "train": {"train/loss": 0.7}}))
    (sd / "concept_metrics.json").write_text(json.dumps({"dino": 0.5, "clip_i": 0.6, "clip_t": 0.2}))
    report([str(tmp_path)])
    header = (tmp_path / "report.md").read_text().splitlines()[0]
    for column in ("val/loss", "val_before/loss", "bench/mmlu/acc", "train/loss", "concept/dino", "concept/clip_t"):
        assert column in header, column
    assert "stderr" not in header and "val/tokens" not in header
