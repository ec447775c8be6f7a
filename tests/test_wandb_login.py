"""An online W&B run that cannot log in stops within about 30 s with one line saying what to do, instead of waiting
wandb's default 90 s (plus grace) and failing with wandb's advice to raise the timeout.

No test touches a real W&B server: the online one points ``WANDB_BASE_URL`` at a closed port on this machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from loldu.config import is_refusal
from loldu.run.tracking import INIT_TIMEOUT_S, WandbLoginError, login_failure, start_wandb, wandb_run_args

ROOT = Path(__file__).resolve().parents[1]
FAKE_KEY = "a" * 40  # the length of a real API key, so wandb takes it for one
CLOSED_PORT = "http://127.0.0.1:9"  # discard: nothing listens, a connection is refused at once

# Composes conf/ as train.py does and builds the W&B logger as loldu.run.skeleton.build_trainer does.
COMPOSE = """
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import open_dict

from loldu.run.skeleton import resolve_defaults
from loldu.run.tracking import wandb_run_args


def wandb_logger(conf, out, *overrides):
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        cfg = compose("train", overrides=["model=tiny_bert", "logger=wandb", f"output_dir={out}", *overrides],
                      return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    resolve_defaults(cfg)
    return instantiate(cfg.logger.wandb, _partial_=True, _convert_="all")(**wandb_run_args(cfg)), cfg
"""


def _composed(tmp_path, *overrides):
    namespace: dict = {}
    exec(COMPOSE, namespace)  # the same code the subprocess runs
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        return namespace["wandb_logger"](str(ROOT / "conf"), str(tmp_path), *overrides)
    finally:
        GlobalHydra.instance().clear()


def test_wandb_init_gets_a_short_timeout_that_the_config_can_override(tmp_path):
    _, cfg = _composed(tmp_path)
    assert wandb_run_args(cfg)["settings"] == {"init_timeout": INIT_TIMEOUT_S}
    assert INIT_TIMEOUT_S + 10 <= 30  # wandb waits 10 s more than init_timeout for its service's answer
    logger, cfg = _composed(tmp_path, "+logger.wandb.settings.init_timeout=90", "+logger.wandb.settings.x_label=a")
    assert wandb_run_args(cfg)["settings"] == {"init_timeout": 90, "x_label": "a"}
    assert logger._wandb_init["settings"] == {"init_timeout": 90, "x_label": "a"}  # what reaches wandb.init


def test_the_failure_is_one_line_that_says_what_to_do(monkeypatch):
    from wandb.errors import CommError

    monkeypatch.setenv("WANDB_BASE_URL", CLOSED_PORT)
    error = CommError("Timed out while retrying: connection refused\nConsider increasing the init_timeout setting")
    line = login_failure(error, 30.4)
    assert line == (
        "W&B could not log in within 30 s: check WANDB_API_KEY and that http://127.0.0.1:9 (WANDB_BASE_URL) can be "
        "reached, or run with WANDB_MODE=offline (sync later with `wandb sync`) / logger=csv (wandb: Timed out while "
        "retrying: connection refused)"
    )
    monkeypatch.delenv("WANDB_BASE_URL")
    refused = login_failure(CommError("user is not logged in"), 0.8)  # a server that refuses the key answers at once
    assert refused.startswith("W&B could not log in: check WANDB_API_KEY and the network, or run with WANDB_MODE=")
    assert refused.endswith("(wandb: user is not logged in)")


def test_start_wandb_turns_wandbs_error_into_a_refusal():
    from lightning.pytorch.loggers import CSVLogger, WandbLogger
    from wandb.errors import CommError

    class Unreachable(WandbLogger):
        @property
        def experiment(self):
            raise CommError("Timed out while retrying: connection refused")

    with pytest.raises(WandbLoginError, match=r"^W&B could not log in: check WANDB_API_KEY") as caught:
        start_wandb([CSVLogger("unused"), Unreachable(project="p")])
    assert is_refusal(caught.value)  # train.py prints the one line and exits 2
    assert isinstance(caught.value.__cause__, CommError)  # wandb's error stays attached


def test_start_wandb_starts_an_offline_run(tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    logger, _ = _composed(tmp_path)
    try:
        start_wandb([logger])
        assert wandb.run is not None and logger._experiment is wandb.run
    finally:
        wandb.finish()


@pytest.mark.slow
def test_a_key_that_cannot_log_in_stops_within_35_s(tmp_path):
    script = COMPOSE + textwrap.dedent(
        f"""
        import sys, time
        from loldu.run.tracking import WandbLoginError, start_wandb

        logger, _ = wandb_logger({str(ROOT / "conf")!r}, {str(tmp_path)!r})
        started = time.monotonic()
        try:
            start_wandb([logger])
        except WandbLoginError as error:
            print(f"stopped after {{time.monotonic() - started:.1f}} s: {{error}}")
            sys.exit(2)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}  # WANDB_MODE unset: online
    env.update(
        WANDB_API_KEY=FAKE_KEY,
        WANDB_BASE_URL=CLOSED_PORT,
        WANDB_ERROR_REPORTING="false",  # no crash reports sent anywhere
        WANDB_X_DISABLE_STATS="true",
        HF_HUB_OFFLINE="1",
        PYTHONPATH=str(ROOT),
    )
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    total = time.monotonic() - started
    assert proc.returncode == 2, proc.stdout + proc.stderr[-3000:]
    (line,) = [line for line in proc.stdout.splitlines() if line.startswith("stopped after ")]
    waited, _, message = line.removeprefix("stopped after ").partition(" s: ")
    print(f"wandb.init stopped after {waited} s; the process took {total:.0f} s")
    assert float(waited) <= 35, proc.stdout  # wandb's default waited 100 s
    assert message.startswith("W&B could not log in within "), message
    assert "check WANDB_API_KEY and that http://127.0.0.1:9 (WANDB_BASE_URL) can be reached" in message
    assert "WANDB_MODE=offline" in message and "logger=csv" in message
    assert total < 90, f"the process took {total:.0f} s"
