"""Helpers the tests share: tiny models with inputs, composed and subprocess training runs, the method table.

A plain module (pytest puts ``tests/`` on ``sys.path``): ``from helpers import build, output``. Fixtures live in
``conftest.py``; no test imports another test module.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before anything imports huggingface_hub
os.environ.setdefault("WANDB_MODE", "disabled")

import copy  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from loldu.models.tiny import TinyMLP, tiny_bert, tiny_llama, tiny_roberta, tiny_unet, tiny_vit  # noqa: E402

__all__ = [
    "METHOD_TABLE",
    "MODELS",
    "ROOT",
    "TRAIN_ENV",
    "TinyMLP",
    "build",
    "method_spec",
    "output",
    "run_composed",
    "strict_json",
    "tiny_bert",
    "tiny_llama",
    "tiny_roberta",
    "tiny_unet",
    "tiny_vit",
    "train_a_few_steps",
    "train_py",
]

ROOT = Path(__file__).resolve().parents[1]
"""The repository root: ``conf/``, ``train.py``."""


# -- tiny models with inputs -------------------------------------------------------------------------------------
def _text_inputs(gen):
    return {"input_ids": torch.randint(3, 99, (2, 9), generator=gen)}


def _image_inputs(gen):
    return {"pixel_values": torch.randn(2, 3, 16, 16, generator=gen)}


def _mlp_inputs(gen):
    return {"x": torch.randn(5, 12, generator=gen)}


MODELS = {
    "mlp": (TinyMLP, ["fc1", "fc2"], ["classifier"], _mlp_inputs),
    "bert": (tiny_bert, ["query", "value"], ["classifier"], _text_inputs),
    "roberta": (tiny_roberta, ["query", "value"], ["classifier"], _text_inputs),
    "vit": (tiny_vit, ["q_proj", "v_proj"], ["classifier"], _image_inputs),
    "llama": (tiny_llama, ["q_proj", "v_proj"], [], _text_inputs),
}
"""Tiny model name -> (builder, target modules, head modules, input maker)."""


def build(name: str, seed: int = 0):
    """A tiny model in eval mode with fixed weights, its targets, heads and inputs."""
    builder, targets, heads, make_inputs = MODELS[name]
    torch.manual_seed(seed)
    model = builder().eval()
    return model, list(targets), list(heads), make_inputs(torch.Generator().manual_seed(seed + 1))


def output(model, inputs):
    """The model's output tensor on ``inputs``: the tensor itself, or the ``logits`` of a model output."""
    out = model(**inputs)
    return out if isinstance(out, torch.Tensor) else out.logits


# -- the method table ----------------------------------------------------------------------------------------------
METHOD_TABLE = {
    "loldu": ({"r": 8}, True),
    "loldu_full": ({"r": 12, "options": {"forward_path": "fused"}}, True),
    "svfit": ({"r": 8}, True),
    "lora": ({"r": 4}, True),
    "pissa": ({"r": 4}, True),
    "melora": ({"r": 8, "options": {"n_mini": 4}}, True),  # 4 mini LoRAs of rank 2
    "vera": ({"r": 8}, True),
    "fourierft": ({"r": 40}, False),  # PEFT's default init draws a random spectrum
    "bitfit": ({}, True),
    "full": ({}, True),
    "linear_probe": ({}, True),
    # PEFT's methods by name (loldu/methods/peft_tuners.py; tests/test_peft_tuners.py has their own checks)
    "adalora": ({"r": 4}, True),  # target_r; its singular values start at zero
    "dora": ({"r": 4}, True),
    "vblora": ({"r": 4}, False),  # both factors are drawn from the random vector bank
    "tinylora": ({}, True),
    "road": ({}, True),
    "ia3": ({}, True),
    "loha": ({"r": 4}, True),
    "lokr": ({"r": 4}, True),
    "oft": ({}, True),
}
"""Method row -> (spec fields for hidden size 32, output equals the base at init?); ``<name>_full`` rows are another
setting of method ``<name>``."""


def method_spec(method: str, targets, heads) -> dict:
    """The apply_method spec of a METHOD_TABLE row for these target and head modules (a fresh copy)."""
    fields, _ = METHOD_TABLE[method]
    spec = {"name": method.replace("_full", ""), "target_modules": targets, "head_modules": heads, **fields}
    return copy.deepcopy(spec)


def train_a_few_steps(model, inputs, steps: int = 3) -> None:
    """AdamW (lr 1e-2) on the mean squared output for ``steps`` steps; leaves the model in eval mode."""
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    for _ in range(steps):
        out = output(model, inputs)
        loss = (out.float() ** 2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


# -- training runs ---------------------------------------------------------------------------------------------------
def run_composed(tmp_path: Path, *overrides: str):
    """Compose ``train`` with ``debug=fast``, ``output_dir=tmp_path`` and ``overrides``, run train(cfg) in this
    process as under @hydra.main; return its result and the run's metrics.json."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from loldu.run import train

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["debug=fast", f"output_dir={tmp_path}", *overrides], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]  # as under @hydra.main, which passes the job config only
        result = train(cfg)
    GlobalHydra.instance().clear()
    return result, json.loads((tmp_path / "metrics.json").read_text())


TRAIN_ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "WANDB_MODE": "disabled",
    "OMP_NUM_THREADS": "1",
    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
}
"""The environment of a train.py subprocess: offline, W&B off, one thread, this checkout first on the path."""


def train_py(*args: str, cwd: Path) -> subprocess.Popen:
    """Start ``train.py model=tiny_bert debug=fast callbacks=none *args`` in ``cwd``; stdout and stderr piped."""
    cmd = [sys.executable, str(ROOT / "train.py"), "model=tiny_bert", "debug=fast", "callbacks=none", *args]
    return subprocess.Popen(cmd, cwd=cwd, env=TRAIN_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def strict_json(path: Path):
    """The JSON file at ``path``, refusing NaN and Infinity (which json.loads accepts but JSON does not)."""

    def refuse(constant):
        raise ValueError(f"{path} holds {constant}: not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def compose_job(*overrides: str):
    """``train``'s config composed with ``overrides`` as @hydra.main passes it: the job config, with HydraConfig set
    for the code that reads it (runtime paths, choices)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # as under @hydra.main, which passes the job config only
    GlobalHydra.instance().clear()
    return cfg
