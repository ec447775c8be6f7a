"""Quiet console, train.log through logging, progress bars on long steps."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

import loldu.methods.progress
from loldu.methods import apply_method
from loldu.models.tiny import tiny_bert
from loldu.run.logs import HARMLESS_WARNINGS, quiet

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """A tiny ``python train.py`` run, as a user starts it: its folder and its console (stdout, stderr)."""
    out = tmp_path_factory.mktemp("cli_run") / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "train.py",
        "model=tiny_bert",
        "debug=fast",
        "logger=none",
        "callbacks=none",
        f"hydra.run.dir={out}",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc.stdout, proc.stderr


def test_train_log_holds_the_end_of_run_summary(cli_run):
    out, stdout, _ = cli_run
    log = (out / "train.log").read_text()
    for line in ("test/acc = ", "adapter parameters = ", "trainable parameters incl. head = ", f"outputs: {out}"):
        assert line in log, f"{line!r} missing from train.log:\n{log}"
        assert stdout.count(line) == 1, f"{line!r} should show once on the console:\n{stdout}"
    assert "[loldu.run.skeleton][INFO]" in log  # through the project's logger, with time and level in the file


def test_console_shows_lightning_lines_once_without_known_harmless_warnings(cli_run):
    _, stdout, stderr = cli_run
    console = stdout + stderr
    assert console.count("GPU available") == 1, console  # Lightning's own handler no longer doubles its lines
    assert "GPU available" in (cli_run[0] / "train.log").read_text()
    assert "is_gradient_checkpointing" not in console and "LeafSpec" not in console
    assert "💡 Tip" not in console


def _shown(message: str, category: type[Warning], module: str) -> list[str]:
    """The warnings that reach the user when ``module`` warns ``message`` after :func:`quiet`."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        quiet()
        warnings.warn_explicit(message, category, filename=f"{module}.py", lineno=1, module=module)
    return [str(w.message) for w in caught]


@pytest.mark.parametrize("pattern,category,module,why", HARMLESS_WARNINGS)
def test_each_harmless_warning_is_silenced_only_where_it_comes_from(pattern, category, module, why):
    message = pattern.replace("\\", "")
    source = module.replace("\\", "")
    assert _shown(message, category, source) == []
    assert _shown(message, category, "loldu.somewhere") == [message]  # the same text from elsewhere still shows
    assert _shown("something else went wrong", category, source) == ["something else went wrong"]
    assert len(why) > 20  # each filter says why it is harmless


def test_quiet_keeps_the_project_messages_at_info(caplog):
    quiet()
    quiet()  # a second call adds nothing
    with caplog.at_level(logging.INFO):
        logging.getLogger("loldu.run.skeleton").info("the summary")
    assert [r.getMessage() for r in caplog.records] == ["the summary"]
    assert logging.getLogger("loldu").getEffectiveLevel() <= logging.INFO


def test_remaining_warnings_land_in_the_run_log_too(tmp_path):
    root = logging.getLogger()
    handler = logging.FileHandler(tmp_path / "train.log")  # what Hydra's job logging gives a run
    root.addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            quiet()
            warnings.warn("a warning nobody checked", UserWarning, stacklevel=1)
    finally:
        logging.captureWarnings(False)
        root.removeHandler(handler)
        handler.close()
    assert "a warning nobody checked" in (tmp_path / "train.log").read_text()


@pytest.fixture
def bars_at_once(monkeypatch):
    monkeypatch.setattr(loldu.methods.progress, "DELAY_S", 0.0)  # tests are quick: show bars from the start


def test_apply_method_shows_a_bar_over_the_layers_it_adapts(bars_at_once, capsys):
    apply_method(tiny_bert(), {"name": "loldu", "r": 32, "target_modules": ["query", "value"]})
    err = capsys.readouterr().err
    assert "loldu: adapting layers" in err and "/4 " in err, err  # tiny BERT: 2 layers x (query, value)


def test_loading_an_adapter_shows_the_same_bar(bars_at_once, capsys, tmp_path):
    from loldu.methods import load_adapter, save_adapter

    spec = {"name": "svfit", "r": 8, "target_modules": ["query", "value"]}
    torch.manual_seed(0)
    save_adapter(apply_method(tiny_bert(), spec), tmp_path / "adapter")
    capsys.readouterr()
    torch.manual_seed(0)
    load_adapter(tiny_bert(), tmp_path / "adapter")
    err = capsys.readouterr().err
    assert "svfit: adapting layers" in err and "/4 " in err, err


class _FakePipe:
    """A text-to-image pipeline stand-in: one image per call, coloured by prompt number and seed."""

    def __init__(self, prompts):
        self.prompts = prompts

    def __call__(self, prompt, generator, height, width, **kwargs):
        seed = generator.initial_seed()
        colour = (10 * self.prompts.index(prompt), seed, 0)
        return type("Out", (), {"images": [Image.new("RGB", (width, height), colour)]})()


def test_sampling_shows_a_bar_per_image_and_keeps_the_order(bars_at_once, capsys):
    from loldu.tasks.diffusion import render

    prompts = ["a sks dog", "a sks dog on the beach"]
    images = render(_FakePipe(prompts), prompts, [3, 4, 5], 2, 7.5, 8, "cpu", desc="sample grid at step 0")
    assert [im.getpixel((0, 0))[:2] for im in images] == [(0, 3), (0, 4), (0, 5), (10, 3), (10, 4), (10, 5)]
    err = capsys.readouterr().err
    assert "sample grid at step 0" in err and "/6 " in err, err
