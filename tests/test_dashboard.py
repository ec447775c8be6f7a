"""W&B runs, offline: names of resolved values, a group per sweep instance, dashboard fields and summary; the
sweep's W&B dashboard (loldu/sweeps/dashboard.py), checked against what the offline runs logged."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_composed
from wandb_files import read_offline_run

ROOT = Path(__file__).resolve().parents[1]
GROUP = "lr_ablation_2026-01-02_10-20-30"


def test_single_run_records_resolved_fields_and_results(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    _, metrics = run_composed(tmp_path, "model=tiny_bert", "logger=wandb", "callbacks=none")  # lr: LoLDU's default
    run = read_offline_run(tmp_path)
    assert run["name"] == "loldu_r32_lr0.003_s0"
    assert run["group"] == ""  # a single run belongs to no sweep
    expected = {"model": "tiny_bert", "task": "rotten_tomatoes", "method": "loldu", "rank": 32, "lr": 0.003}
    assert {k: run["config"][k] for k in expected} == expected
    assert run["config"]["seed"] == 0 and run["config"]["epochs"] == 1
    assert run["config"]["config"]["method"]["r"] == 32, "the full resolved config is kept too"
    summary = run["summary"]
    assert summary["params/trainable"] == metrics["params"]["trainable"]
    assert summary["params/adapter"] == metrics["params"]["adapter"]
    assert summary["test/acc"] == metrics["test"]["test/acc"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """One offline W&B sweep of four tiny jobs (two methods x two seeds, the lr_ablation preset at one lr): its
    folder, log, the offline runs as W&B recorded them, and the dashboard.json the multirun callback wrote."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "2"}
    env.pop("WANDB_API_KEY", None)
    folder = tmp_path_factory.mktemp("sweep") / "2026-01-02" / "10-20-30"
    cmd = [sys.executable, "train.py", "sweep=lr_ablation", "lr=1e-3", "method=loldu,lora", "seed=0,1"]
    cmd += ["model=tiny_bert", "debug=fast", "logger=wandb", "callbacks=none", f"hydra.sweep.dir={folder}"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = [read_offline_run(folder / job) for job in ("0", "1", "2", "3")]
    callback_view = json.loads((folder / "dashboard.json").read_text())  # before any test writes it again
    return {"folder": folder, "log": out.stdout + out.stderr, "runs": runs, "callback_view": callback_view}


def _panels(view: dict) -> dict[str, list[dict]]:
    return {s["name"]: s["panels"] for s in view["spec"]["section"]["panelBankConfig"]["sections"]}


def _written(folder: Path, *args: str) -> dict:
    from loldu.sweeps import dashboard

    assert dashboard.main([str(folder), *args]) == 0
    return json.loads((folder / "dashboard.json").read_text())


def test_each_sweep_instance_gets_its_own_group(sweep):
    folder, log, runs = sweep["folder"], sweep["log"], sweep["runs"]
    announced = [line for line in log.splitlines() if f"make report DIR={folder}" in line]
    assert len(announced) == 2, "the multirun folder and the report command, at the start and at the end"
    assert log.index(announced[0]) < log.index("#0 :") < log.index(announced[1])
    names = ["loldu_r32_lr0.001_s0", "loldu_r32_lr0.001_s1", "lora_r8_lr0.001_s0", "lora_r8_lr0.001_s1"]
    assert [r["name"] for r in runs] == names
    assert {r["group"] for r in runs} == {GROUP}
    assert all("lr_ablation" in r["tags"] and r["config"]["sweep_name"] == "lr_ablation" for r in runs)
    assert {r["config"]["lr"] for r in runs} == {0.001}


def test_the_callback_writes_the_dashboard_at_the_end_of_a_wandb_sweep(sweep):
    assert "W&B dashboard of the sweep written to" in sweep["log"], sweep["log"][-3000:]
    view = sweep["callback_view"]
    assert view["displayName"] == f"Sweep {GROUP}" and view["project"] == "loldu"
    assert list(_panels(view)) == [
        "Validation curves",
        "Test results",
        "Best by method",
        "Parallel coordinates",
        "Runs",
    ]


def test_every_key_of_the_dashboard_was_logged_by_the_runs(sweep):
    from loldu.sweeps.dashboard import RUN_SUMMARY_KEYS, referenced_keys, unlogged_keys

    view = _written(sweep["folder"])
    assert view == sweep["callback_view"], "the command writes the view the callback wrote"
    assert unlogged_keys(view, sweep["runs"]) == []
    keys = referenced_keys(view)
    for section, panels in _panels(view).items():  # each panel names keys (the run comparer shows every key)
        for panel in panels:
            one = {"spec": {"section": {"panelBankConfig": {"sections": [{"panels": [panel]}]}}}}
            assert referenced_keys(one) or panel["viewType"] == "Run Comparer", (section, panel)
    val, test = {"val/acc", "val/f1", "val/loss"}, {"test/acc", "test/f1", "test/loss"}
    assert {("summary", k) for k in val | test | set(RUN_SUMMARY_KEYS) | {"trainer/global_step"}} <= keys
    assert {("config", "method"), ("config", "rank"), ("config", "seed"), ("run", "group")} <= keys
    curves = _panels(view)["Validation curves"]
    assert {p["config"]["metrics"][0] for p in curves} == val
    assert {p["config"]["xAxis"] for p in curves} == {"trainer/global_step"}
    best = _panels(view)["Best by method"]
    assert [(p["config"]["groupBy"], p["config"]["groupAgg"]) for p in best] == [
        ("method.value", "max"),
        ("method.value", "mean"),
    ]
    assert best[1]["config"]["groupArea"] == "stddev"
    (parallel,) = _panels(view)["Parallel coordinates"]
    accessors = [c["accessor"] for c in parallel["config"]["columns"]]
    assert accessors == ["config:method.value", "config:seed.value", "summary:val/acc", "summary:test/acc"]


def test_the_check_catches_keys_no_run_logged(sweep):
    from loldu.sweeps.dashboard import unlogged_keys

    view = copy.deepcopy(sweep["callback_view"])
    panels = _panels(view)
    panels["Validation curves"][0]["config"]["metrics"].append("val/not_logged")
    panels["Parallel coordinates"][0]["config"]["columns"].append({"accessor": "config:config.value.method.nope"})
    panels["Best by method"][0]["config"]["groupBy"] = "init.value"
    view["spec"]["section"]["runSets"][0]["grouping"].append({"section": "config", "name": "Sweep.value"})
    assert unlogged_keys(view, sweep["runs"]) == [
        "config:Sweep",
        "config:config.method.nope",
        "config:init",
        "summary:val/not_logged",
    ]
    runs = copy.deepcopy(sweep["runs"])
    del runs[3]["summary"]["adapter_bytes"]  # one run without it is enough
    assert unlogged_keys(sweep["callback_view"], runs) == ["summary:adapter_bytes"]


def test_the_dashboard_shows_the_sweeps_group_grouped_by_method_and_rank(sweep):
    view = sweep["callback_view"]
    (runset,) = view["spec"]["section"]["runSets"]
    (group_filter,) = runset["filters"]["filters"]
    assert group_filter["key"] == {"section": "run", "name": "group"} and group_filter["op"] == "="
    assert group_filter["value"] == GROUP == sweep["runs"][0]["group"]
    assert runset["grouping"] == [
        {"section": "config", "name": "method.value"},
        {"section": "config", "name": "rank.value"},
    ]
    assert runset["runFeed"]["columnOrder"][:4] == [
        "run:displayName",
        "config:method.value",
        "config:rank.value",
        "config:seed.value",
    ]


def test_swept_keys_map_to_wandb_config_keys(tmp_path):
    from loldu.sweeps.dashboard import dashboard_keys, wandb_config_key

    assert [wandb_config_key(k) for k in ("lr", "method", "rank", "seed", "model", "sweep")] == [
        "lr",
        "method",
        "rank",
        "seed",
        "model",
        "sweep_name",
    ]
    assert wandb_config_key("method.options.init") == "config.method.options.init"
    configs = [{"method": {"options": {"init": "lu"}}, "optimizer": {"name": "adamw"}}]
    swept = ["method", "method.options.init", "optimizer", "seed"]
    assert dashboard_keys(swept, configs) == ["method", "method.options.init", "seed"], "a config group has no value"


def _fake_upsert(monkeypatch, error: Exception | None = None) -> list[dict]:
    """Replace the library's one network call of ``Workspace.save`` (``upsertView``): record what it would send
    (the view's fields, the spec parsed from the JSON string it uploads), then fail with ``error`` or answer as
    W&B does."""
    import wandb_workspaces.workspaces as ws

    sent = []

    def upsert(view):
        spec = json.loads(view.spec.model_dump_json(by_alias=True, exclude_none=True))  # as upsert_view2 sends it
        sent.append({"entity": view.entity, "project": view.project, "displayName": view.display_name, "spec": spec})
        if error is not None:
            raise error
        return {"upsertView": {"view": {"name": view.name, "id": "VmlldzoxMjM0"}}}

    monkeypatch.setattr(ws.interface.internal, "upsert_view2", upsert)
    monkeypatch.setattr(ws.Workspace, "url", property(lambda self: f"https://wandb.test/{self.entity}/{self.project}"))
    return sent


def test_push_saves_exactly_dashboard_json(sweep, monkeypatch, capsys):
    from loldu.sweeps import dashboard

    sent = _fake_upsert(monkeypatch)
    offline = _written(sweep["folder"], "--entity", "team")
    assert dashboard.main([str(sweep["folder"]), "--push", "--entity", "team"]) == 0
    assert "saved the W&B view: https://wandb.test/team/loldu" in capsys.readouterr().out
    saved = json.loads((sweep["folder"] / "dashboard.json").read_text())  # written again after the save
    (upload,) = sent
    assert upload == {k: saved[k] for k in ("entity", "project", "displayName", "spec")}
    assert saved["name"].startswith("nw-") and saved["id"] == "VmlldzoxMjM0"
    assert saved["spec"] == offline["spec"] and offline["name"] == offline["id"] == "", (
        "offline: the same view, unsaved"
    )


def test_a_failed_push_is_one_line_and_exit_status_1(sweep, monkeypatch, capsys):
    import wandb

    from loldu.sweeps import dashboard

    sent = _fake_upsert(monkeypatch, wandb.errors.CommError("Could not connect to api.wandb.ai"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert dashboard.main([str(sweep["folder"]), "--push", "--entity", "team"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("W&B view not saved: check WANDB_API_KEY") and "Could not connect" in err
    written = json.loads((sweep["folder"] / "dashboard.json").read_text())
    assert [s["spec"] for s in sent] == [written["spec"]] and written["entity"] == "team"

    def no_key():
        raise wandb.errors.UsageError("api_key not configured (no-tty). call wandb.login(key=[your_api_key])")

    monkeypatch.setattr(wandb, "Api", no_key)  # no entity given: W&B is asked for the API key's default entity
    monkeypatch.delenv("WANDB_ENTITY", raising=False)
    assert dashboard.main([str(sweep["folder"]), "--push"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "api_key not configured" in err, err
    assert len(sent) == 1, "nothing was sent without an entity"


def test_make_dashboard_runs_the_module():
    out = subprocess.run(["make", "-n", "dashboard", "DIR=multirun/x"], cwd=ROOT, capture_output=True, text=True)
    assert "-m loldu.sweeps.dashboard multirun/x" in out.stdout, out.stdout + out.stderr


def test_the_callback_pushes_online_and_a_failure_is_one_warning(sweep, monkeypatch, caplog):
    import wandb
    from omegaconf import OmegaConf

    from loldu.sweeps.callback import sweep_dashboard

    sent = _fake_upsert(monkeypatch, wandb.errors.CommError("Could not connect to api.wandb.ai"))
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_ENTITY", "team")  # no default entity to ask W&B for
    # the launching process's config: logger=wandb, mode null (online with WANDB_API_KEY)
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep["folder"])}}, "logger": {"wandb": {"mode": None}}})
    sweep_dashboard(config)  # no exception: the sweep is done
    (warning,) = [r for r in caplog.records if r.levelname == "WARNING"]
    assert "no W&B dashboard of the sweep" in warning.message and "W&B view not saved" in warning.message
    assert len(warning.getMessage().splitlines()) == 1 and len(sent) == 1, "online: the view was sent"

    caplog.clear()
    sweep_dashboard(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep["folder"])}}, "logger": {"csv": {}}}))
    assert not caplog.records, "no W&B logger, no dashboard"
