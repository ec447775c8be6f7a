"""Bad settings are refused by check_config before any model or data loads, each with the fix in the message."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from loldu.run import check_run as check_config  # the config checks and the method options

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def _composer(conf_dir: Path):
    def _compose(*overrides):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)  # what @hydra.main does: the checks read the command line from it
        return cfg

    GlobalHydra.instance().clear()
    return initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"), _compose


@pytest.fixture
def composer():
    context, compose_ = _composer(CONF)
    with context:
        yield compose_
    GlobalHydra.instance().clear()


def _refused(composer, *overrides, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        check_config(composer(*overrides))


def _resolved(cfg):
    from loldu.run import resolve_defaults

    resolve_defaults(cfg)  # what train() does before check_config: the method's default rank, lr and options
    return cfg


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "save_merged=maybe",
            r"save_merged must be true or false, e\.g\. save_merged=true \(got save_merged='maybe'\)",
        ),  # noqa: E501
        ("skip_unfit_ranks=1", r"skip_unfit_ranks must be true or false"),
        ("epochs=0", r"epochs must be an integer >= 1, e\.g\. epochs=3 \(got epochs=0\)"),
        ("epochs=-1", r"epochs must be an integer >= 1.*got epochs=-1"),
        ("epochs=abc", r"epochs must be an integer >= 1.*got epochs='abc'"),
        ("epochs=2.5", r"epochs must be an integer"),
        ("batch_size=0", r"batch_size must be an integer >= 1, e\.g\. batch_size=32"),
        ("batch_size=-4", r"batch_size must be an integer >= 1"),
        ("lr=abc", r"lr must be a positive number, e\.g\. lr=3e-3 \(got lr='abc'\)"),
        ("lr=-1", r"lr must be a positive number, e\.g\. lr=3e-3"),
        ("lr=0", r"lr must be a positive number, e\.g\. lr=3e-3"),
        ("lr=inf", r"lr must be a positive number"),
        ("rank=0", r"rank must be an integer >= 1, e\.g\. rank=8, or null"),
        ("rank=abc", r"rank must be an integer >= 1"),
        ("alpha=0", r"alpha must be a positive number"),
        ("seed=abc", r"seed must be an integer, e\.g\. seed=0"),
        ("weight_decay=-1", r"weight_decay must be a number >= 0"),
        ("task_schedule.warmup_ratio=2", r"task_schedule\.warmup_ratio must be a number in \[0, 1\]"),
        ("task_schedule.warmup_steps=-1", r"task_schedule\.warmup_steps must be an integer >= 0"),
        ("task_schedule.scheduler=cosine", r"task_schedule\.scheduler must be linear or constant"),
    ],
)
def test_values_of_the_wrong_kind_are_refused(composer, override, message):
    _refused(composer, override, match=message)


def test_a_typo_added_with_a_plus_is_refused_with_the_close_key(composer):
    _refused(composer, "+rnak=8", match=r"unknown setting rnak=8: did you mean rank=8\?.*goes into conf/train\.yaml")
    _refused(composer, "++epoch=5", match=r"unknown setting epoch=5: did you mean epochs=5\?")
    _refused(composer, "+ckpt_path=/tmp/last.ckpt", match=r"ckpt_path is not a setting: resume a run with resume=")


def test_the_allowed_keys_come_from_train_yaml(tmp_path):
    conf = shutil.copytree(CONF, tmp_path / "conf")
    with (conf / "train.yaml").open("a") as f:
        f.write("my_new_setting: 1  # a key another part of the project adds\n")
    context, compose_ = _composer(conf)
    with context:
        check_config(compose_("my_new_setting=2"))
        with pytest.raises(ValueError, match="did you mean my_new_setting=3"):
            check_config(compose_("+my_new_settin=3"))
    GlobalHydra.instance().clear()


def test_a_key_added_inside_a_group_must_be_read_by_something(composer):
    _refused(composer, "+task.num_label=3", match=r"task has no setting 'num_label'.*did you mean task\.num_labels=3")
    _refused(composer, "+task_schedule.warmup=10", match=r"task_schedule has no setting 'warmup'.*warmup_steps")
    # keyword arguments of an instantiated node (the Trainer, the model builder) pass
    check_config(composer("+trainer.max_steps=10", "+model.builder.dtype=float32"))
    # a whole new instantiated node (a callback, a logger) passes; a bare value there is refused
    check_config(composer("+callbacks.lr={_target_: lightning.pytorch.callbacks.LearningRateMonitor}"))
    _refused(composer, "+callbacks.lr=5", match=r"callbacks has no setting 'lr'")


def test_method_options_are_the_config_class_fields(composer):
    _refused(
        composer, "+method.options.int=normal", match=r"loldu has no option 'int': did you mean method\.options\.init"
    )
    _refused(
        composer, "method=lora", "+method.options.lora_dropot=0.1", match=r"did you mean method\.options\.lora_dropout"
    )
    _refused(composer, "method=bitfit", "+method.options.r=4", match=r"bitfit has no option 'r'.*takes no options")
    check_config(composer("method=lora", "+method.options.use_rslora=true"))


def test_a_method_setting_the_method_does_not_read_is_refused(composer):
    _refused(composer, "method=lora", "init=foo", match=r"init=foo is a setting of loldu, svfit; method=lora does not")
    _refused(composer, "method=vera", "alpha=8", match=r"alpha=8 is a setting of .*; method=vera does not use it")
    _refused(composer, "method=full", "rank=8", match=r"rank=8 is a setting of .*; method=full does not use it")
    check_config(composer("method=lora", "alpha=16", "rank=8"))
    check_config(composer("method=svfit", "init=normal"))


@pytest.mark.parametrize("method", ["loldu", "svfit"])
def test_init_values_are_checked_before_loading(composer, method):
    _refused(
        composer,
        f"method={method}",
        "init=foo",
        match=rf"method={method}: init='foo' \(method.options.init\) is not one of lu, ",
    )


@pytest.mark.parametrize(
    ("method", "rank", "limit"),
    [("vera", 100000, 1024), ("fourierft", 2000, 1024), ("lora", 33, 32), ("pissa", 64, 32)],
)
def test_a_rank_that_cannot_fit_is_refused_for_every_ranked_method(composer, method, rank, limit):
    _refused(
        composer, "model=tiny_bert", f"method={method}", f"rank={rank}", match=rf"rank={rank} does not fit .*<={limit}"
    )


@pytest.mark.parametrize("method", ["vera", "fourierft", "lora", "pissa", "loldu", "svfit"])
def test_the_method_defaults_fit_a_tiny_model(composer, method):
    check_config(_resolved(composer("model=tiny_bert", f"method={method}")))
    check_config(composer("model=tiny_bert", "method=vera", "rank=1024"))  # VeRA may exceed min(out, in)


def test_the_environments_wandb_mode_wins(composer, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert OmegaConf.select(composer("logger=wandb"), "logger.wandb.mode") == "offline"
    monkeypatch.delenv("WANDB_MODE")
    assert OmegaConf.select(composer("logger=wandb"), "logger.wandb.mode") == "online"
    monkeypatch.delenv("WANDB_API_KEY")
    assert OmegaConf.select(composer("logger=wandb"), "logger.wandb.mode") == "offline"


def test_a_refused_run_exits_before_loading_anything(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "train.py", "model=tiny_bert", "epochs=0", f"hydra.run.dir={tmp_path / 'run'}"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode != 0
    assert "epochs must be an integer >= 1, e.g. epochs=3" in out.stderr
    assert not (tmp_path / "run" / "config.yaml").exists() and not (tmp_path / "run" / "metrics.json").exists()


def test_the_checks_module_imports_no_torch():
    code = "import sys, loldu.config, loldu.config.checks; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr[-2000:]


def test_head_lr_values_and_models_without_a_head_are_refused(composer):
    for bad in ("head_lr=0", "head_lr=-1e-3", "head_lr=abc"):
        _refused(composer, bad, match=r"head_lr must be a positive number, e\.g\. head_lr=1e-2")
    _refused(composer, "model=tiny_llama", "task=chatterbot", "head_lr=1e-2", match="has none .*leave head_lr unset")
    check_config(composer("head_lr=1e-2"))  # a classifier has a head


def test_a_presets_alpha_must_follow_a_rank_given_on_the_command_line(tmp_path):
    conf = shutil.copytree(CONF, tmp_path / "conf")
    (conf / "experiment" / "fixed_alpha.yaml").write_text("# @package _global_\nrank: 768\nalpha: 768\n")
    context, compose_ = _composer(conf)
    with context:
        check_config(compose_("model=tiny_bert", "experiment=fixed_alpha", "rank=32", "alpha=32"))  # both given
        with pytest.raises(ValueError, match=r"rank=8 was given, and alpha=768 comes from a preset .* alpha=8"):
            check_config(compose_("model=tiny_bert", "experiment=fixed_alpha", "rank=8"))
    GlobalHydra.instance().clear()
