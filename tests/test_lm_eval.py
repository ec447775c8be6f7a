"""lm-evaluation-harness benchmarks of a run: the CLI on a local task, input checks, the paper's task names."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from loldu.eval.lm import cli as lm
from loldu.eval.lm import tasks as lm_tasks

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

LOCAL_TASKS = Path(__file__).resolve().parents[1] / "benchmarks" / "lm_eval_tasks"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run folder: empty config.yaml and merged/ with a tiny llama and the real SmolLM2 tokenizer."""
    from loldu.models import tiny_causal_lm

    bundle = tiny_causal_lm(seed=0)
    run = tmp_path_factory.mktemp("lm_eval") / "run"
    bundle.model.save_pretrained(run / "merged")
    bundle.tokenizer.save_pretrained(run / "merged")
    (run / "config.yaml").write_text("")
    return run


@pytest.fixture
def suite_registry(monkeypatch):
    """lm-eval's registry restricted to the folders that define the paper's tasks.

    Indexing all of lm-eval's ~15k task YAMLs takes 15-30 s on two shared cores;
    these folders index in about a second. A name found here is in the full
    registry too, so the checks below cannot pass where the real registry fails
    (a task that moved to another folder fails them, loudly).
    """
    import lm_eval.tasks
    from lm_eval.tasks import TaskManager

    root = Path(lm_eval.tasks.__file__).parent
    suite_dirs = [str(root / name) for name in ("mmlu", "bbh", "drop", "humaneval")]
    real = lm_tasks._task_manager

    def restricted(include_paths, include_defaults):
        if not include_defaults:
            return real(include_paths, include_defaults)
        return TaskManager(include_path=[*suite_dirs, *include_paths], include_defaults=False)

    monkeypatch.setattr(lm_tasks, "_task_manager", restricted)
    return restricted


@pytest.fixture
def no_lm_eval_run(monkeypatch):
    """Make any attempt to load a model or run lm-eval fail the test."""
    import lm_eval

    def refuse(*args, **kwargs):
        raise AssertionError("lm-eval was started although the inputs are bad")

    monkeypatch.setattr(lm, "make_lm", refuse)
    monkeypatch.setattr(lm_eval, "simple_evaluate", refuse, raising=False)


def test_cli_runs_local_tasks_from_any_directory(run_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the task's data file must not depend on the working directory
    args = [str(run_dir), "--tasks", "loldu_local_mc:2,loldu_local_gen:1", "--limit", "8"]
    summary = lm.main([*args, "--include-path", str(LOCAL_TASKS)])

    written = json.loads((run_dir / "benchmarks.json").read_text())
    assert written == json.loads(json.dumps(summary))
    mc, gen = written["results"]["loldu_local_mc"], written["results"]["loldu_local_gen"]
    assert 0.0 <= mc["acc"] <= 1.0 and 0.0 <= mc["acc_norm"] <= 1.0 and "acc_stderr" in mc
    assert 0.0 <= gen["exact_match"] <= 1.0
    settings = written["settings"]
    assert settings["shots"] == {"loldu_local_mc": 2, "loldu_local_gen": 1}
    assert settings["shots_used"] == {"loldu_local_mc": 2, "loldu_local_gen": 1}
    assert settings["limit"] == 8
    assert settings["samples"]["loldu_local_mc"] == {"original": 20, "effective": 8}
    assert settings["model_dir"] == str(run_dir / "merged")
    assert settings["lm_eval_version"] == lm.package_version("lm_eval") and settings["lm_eval_version"]
    table = capsys.readouterr().out
    assert "loldu_local_mc" in table and "acc" in table


def test_parse_tasks():
    assert lm.parse_tasks("paper") == lm.PAPER_SUITE
    assert lm.parse_tasks("a:2, b") == {"a": 2, "b": None}
    assert lm.parse_tasks("paper,a:0") == {**lm.PAPER_SUITE, "a": 0}
    for bad in ("a:-1", "a:x", ":3", " , "):
        with pytest.raises(ValueError):
            lm.parse_tasks(bad)


def test_bad_inputs_fail_before_lm_eval_runs(run_dir, tmp_path, suite_registry, no_lm_eval_run):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="neither a run folder"):
        lm.main([str(empty), "--tasks", "loldu_local_mc"])
    with pytest.raises(FileNotFoundError, match="no config.json.*merged model folder"):
        lm.run_benchmarks(empty, {"loldu_local_mc": 0}, include_path=LOCAL_TASKS)
    (empty / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no tokenizer files"):
        lm.run_benchmarks(empty, {"loldu_local_mc": 0}, include_path=LOCAL_TASKS)
    with pytest.raises(FileNotFoundError, match="include path"):
        lm.run_benchmarks(run_dir / "merged", {"loldu_local_mc": 0}, include_path=tmp_path / "nope")
    with pytest.raises(ValueError, match="dtype"):
        lm.run_benchmarks(run_dir / "merged", {"loldu_local_mc": 0}, include_path=LOCAL_TASKS, dtype="float8")

    # Unknown names are reported with close matches, from lm-eval's registry and the include path.
    args = [str(run_dir), "--include-path", str(LOCAL_TASKS)]
    with pytest.raises(ValueError, match=r"loldu_local_mx: did you mean loldu_local_mc") as err:
        lm.main([*args, "--tasks", "loldu_local_mx:2,mmlu_anatomyy"])
    assert "mmlu_anatomy" in str(err.value)
    # Code-executing tasks need the explicit flag.
    with pytest.raises(ValueError, match="--allow-code-execution"):
        lm.main([*args, "--tasks", "humaneval"])


def test_paper_suite_names_exist_in_lm_eval_registry(suite_registry):
    """Fails loudly if an lm-eval upgrade renames the paper's tasks (the registry is built offline from YAML)."""
    assert lm.PAPER_SUITE == {"mmlu": 5, "bbh_fewshot": 3, "drop": 3, "humaneval": 0}
    manager = lm.task_manager_for(list(lm.PAPER_SUITE))
    assert set(lm.PAPER_SUITE) <= set(manager.all_tasks)
    # BBH: the answer-only 3-shot group (not chain of thought), every subtask with built-in exemplars.
    bbh = manager.task_index["bbh_fewshot"].cfg["task"]
    assert len(bbh) == 27 and all(name.startswith("bbh_fewshot_") for name in bbh)
    assert all(name in manager.all_tasks for name in bbh)
    assert lm.unsafe_tasks(manager, list(lm.PAPER_SUITE)) == ["humaneval"]


def test_code_execution_flag_reaches_lm_eval(run_dir, tmp_path, suite_registry, monkeypatch):
    """With the flag, HumanEval runs with HF_ALLOW_CODE_EVAL=1 and lm-eval's unsafe-code confirmation."""
    import lm_eval

    calls = []

    def fake_evaluate(**kwargs):
        calls.append({**kwargs, "env": os.environ.get("HF_ALLOW_CODE_EVAL")})
        row = {"alias": "humaneval", "pass@1,create_test": 0.125, "pass@1_stderr,create_test": 0.05}
        return {"results": {"humaneval": row}, "n-shot": {"humaneval": 0}, "n-samples": {}}

    monkeypatch.delenv("HF_ALLOW_CODE_EVAL", raising=False)
    monkeypatch.setattr(lm, "make_lm", lambda *args, **kwargs: "the model")
    monkeypatch.setattr(lm_eval, "simple_evaluate", fake_evaluate, raising=False)
    out = tmp_path / "bench.json"
    summary = lm.run_benchmarks(run_dir / "merged", {"humaneval": 0}, allow_code_execution=True, output=out)
    assert calls[0]["confirm_run_unsafe_code"] is True and calls[0]["env"] == "1"
    assert calls[0]["tasks"] == ["humaneval"] and calls[0]["num_fewshot"] == 0 and calls[0]["model"] == "the model"
    assert summary["results"] == {"humaneval": {"pass@1": 0.125, "pass@1_stderr": 0.05}}
    assert json.loads(out.read_text())["settings"]["allow_code_execution"] is True
