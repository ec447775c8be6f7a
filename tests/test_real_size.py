"""The paper's models at real size, offline (model.pretrained=false: the shipped architecture, random weights):
two optimizer steps through the same train() a paper run takes, and the counts it records. Slow: make test-slow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import run_composed

pytestmark = pytest.mark.slow
# LoLDU at ViT-base's and RoBERTa-base's full rank, two optimizer steps of 2 examples, 5 validation and 5 test rows.
TWO_STEPS_AT_FULL_RANK = (
    "task.data.val_fraction=5",
    "task.data.test_fraction=5",
    "method=loldu",
    "rank=768",
    "batch_size=2",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "logger=none",
    "callbacks=none",
)


def _image_folder(root: Path, classes: int = 2, count: int = 12) -> Path:
    from PIL import Image

    for c in range(classes):
        for i in range(count):
            path = root / f"class_{c}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (32, 32), (100 * c, 5 * i, 50)).save(path)
    return root


def _pairs_csv(path: Path, rows: int = 40) -> Path:
    lines = ["premise,hypothesis,label"]
    for i in range(rows):
        lines.append(f'"a dog runs in the park number {i}","an animal is outside {i}",{"yes" if i % 2 else "no"}')
    path.write_text("\n".join(lines) + "\n")
    return path


def test_vit_base_design_card_trains_two_steps_and_records_18432_adapter_parameters(tmp_path):
    root = _image_folder(tmp_path / "images")
    _, metrics = run_composed(
        tmp_path / "run",
        "model=vit",
        "model.pretrained=false",
        "task=imagefolder",
        f"task.data.source_args.root={root}",
        *TWO_STEPS_AT_FULL_RANK,
    )
    assert metrics["params"]["adapter"] == 24 * 768  # 12 layers x (query, value) x 768 z: the paper's 18,432
    assert metrics["params"]["head"] == 768 * 2 + 2 and metrics["rank"] == 768
    assert metrics["params"]["base"] > 85_000_000  # ViT-B/16's 85.8M (head of 2 classes)


def test_roberta_base_on_a_local_sentence_pair_file_trains_two_steps(tmp_path):
    data = _pairs_csv(tmp_path / "pairs.csv")
    _, metrics = run_composed(
        tmp_path / "run",
        "model=roberta",
        "model.pretrained=false",
        "task=text_csv",
        f"task.data.source_args.train={data}",
        "task.data.source_args.text_columns=[premise,hypothesis]",
        *TWO_STEPS_AT_FULL_RANK,
    )
    assert metrics["params"]["adapter"] == 24 * 768
    assert metrics["params"]["base"] > 124_000_000  # RoBERTa-base's 125M
    cfg = (tmp_path / "run" / "config.yaml").read_text()
    assert "pretrained: false" in cfg and "FacebookAI/roberta-base" in cfg
    assert json.loads((tmp_path / "run" / "status.json").read_text())["status"] == "finished"


def test_llama2_7b_slice_of_two_real_width_layers_takes_a_step():
    """LLaMA-2-7B's width (4096, MLP 11008, 32 heads) in 2 layers: LoLDU r=1024 on q and v, one optimizer step."""
    from transformers import AutoModelForCausalLM

    from loldu.methods import apply_method, count_parameters
    from loldu.models.architectures import architecture

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(architecture("meta-llama/Llama-2-7b-hf", num_hidden_layers=2))
    model = apply_method(model, {"name": "loldu", "r": 1024, "target_modules": ["q_proj", "v_proj"]})
    assert count_parameters(model)["adapter"] == 4 * 1025
    trained = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trained]
    optimizer = torch.optim.AdamW(trained, lr=1e-3)
    ids = torch.randint(0, 32000, (1, 16))
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and any(not torch.equal(a, b) for a, b in zip(trained, before, strict=True))


def test_stable_diffusion_unet_takes_a_dreambooth_step_at_a_small_latent_size(tmp_path):
    from PIL import Image

    (tmp_path / "dog").mkdir()
    for i in range(3):
        Image.new("RGB", (64, 64), (40 * i, 90, 20)).save(tmp_path / "dog" / f"{i}.png")
    _, metrics = run_composed(
        tmp_path / "run",
        "model=sd",
        "model.pretrained=false",
        "model.builder.resolution=64",  # 8 x 8 latents
        "task=dreambooth",
        f"task.data.instance_dir={tmp_path}/dog",
        "task.max_steps=1",
        "task.samples.prompts=[]",
        "method=loldu",
        "rank=32",
        "logger=none",
        "callbacks=none",
    )
    assert metrics["params"]["adapter"] == 128 * 33 and metrics["params"]["base"] == 859_520_964
