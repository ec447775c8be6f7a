"""The fuzz list: user mistakes as a new user makes them on the command line. Each gets exit status 2 and one
``error:`` line naming the setting and the fix, no traceback, and nothing written outside the run's folder.

Cases marked ``before torch`` are refused while composing (loldu.config): they must not load torch.
``python -m benchmarks.refusal_time`` compares their time with ``--cfg job`` of the same command.
"""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, TRAIN_ENV

BEFORE_TORCH = True
AFTER_TORCH = False

#: (id, command-line arguments, a piece of the expected message, refused before torch loads). ``{data}`` is a
#: folder holding ``a.csv``.
CASES = [
    ("bool typo", ["save_merged=maybe"], "save_merged must be true or false", BEFORE_TORCH),
    ("option bool", ["method.options.train_sigma=maybe"], "train_sigma must be true or false for loldu", BEFORE_TORCH),
    ("top-level bool", ["train_sigma=maybe"], "train_sigma must be true or false for loldu", BEFORE_TORCH),
    ("option choice", ["init=foo"], "method=loldu: init='foo' (method.options.init) is not one of", BEFORE_TORCH),
    ("unknown option", ["+method.options.forward_pth=auto"], "did you mean method.options.forward_path", BEFORE_TORCH),
    ("method setting", ["method=lora", "init=normal"], "init=normal is a setting of loldu, svfit", BEFORE_TORCH),
    ("force-added typo", ["++task.num_label=3"], "did you mean task.num_labels=3?", BEFORE_TORCH),
    ("added typo", ["+task.num_label=3"], "did you mean task.num_labels=3?", BEFORE_TORCH),
    ("nested typo", ["task.max_lenght=5"], "did you mean task.max_length=5?", BEFORE_TORCH),
    ("top-level typo", ["rnak=8"], "did you mean rank=8?", BEFORE_TORCH),
    ("added top-level", ["+rnak=8"], "did you mean rank=8?", BEFORE_TORCH),
    ("zero length", ["task.max_length=0"], "task.max_length must be an integer >= 1", BEFORE_TORCH),
    ("negative length", ["task.max_length=-5"], "task.max_length must be an integer >= 1", BEFORE_TORCH),
    ("zero steps", ["model=tiny_sd", "task=dreambooth_animal", "task.max_steps=0"], "task.max_steps must be", True),
    ("two epoch settings", ["trainer.max_epochs=5"], "use epochs=5", BEFORE_TORCH),
    ("zero accumulation", ["+trainer.accumulate_grad_batches=0"], "accumulate_grad_batches must be", BEFORE_TORCH),
    ("monitor typo", ["task.monitor=val/accuracy"], "did you mean task.monitor=val/acc?", BEFORE_TORCH),
    ("lr text", ["lr=abc"], "lr must be a positive number", BEFORE_TORCH),
    ("lr zero", ["lr=0"], "lr must be a positive number", BEFORE_TORCH),
    ("float epochs", ["epochs=2.5"], "epochs must be an integer >= 1", BEFORE_TORCH),
    ("negative decay", ["weight_decay=-1"], "weight_decay must be a number >= 0", BEFORE_TORCH),
    ("trainer bool", ["trainer.deterministic=maybe"], "trainer.deterministic must be true or false", BEFORE_TORCH),
    ("list as text", ["optimizer.betas=abc"], "optimizer.betas must be a list", BEFORE_TORCH),
    ("scheduler", ["task_schedule.scheduler=cosine"], "task_schedule.scheduler must be linear or constant", True),
    ("rank too big", ["rank=100000"], "rank=100000 does not fit", BEFORE_TORCH),
    ("family mismatch", ["model=tiny_vit"], "is a image model and task 'rotten_tomatoes' needs a text", True),
    ("ckpt_path", ["+ckpt_path=x.ckpt"], "resume a run with resume=<run dir>", BEFORE_TORCH),
    ("no run folder", ["resume=/nonexistent/run"], "resume=/nonexistent/run: no such run folder", BEFORE_TORCH),
    ("missing file", ["task=text_csv", "task.data.source_args.train=missing.csv"], "no such file", BEFORE_TORCH),
    (
        "train = test",
        ["task=text_csv", "task.data.source_args.train={data}/a.csv", "task.data.source_args.test={data}/a.csv"],
        "is the same file as task.data.source_args.train",
        BEFORE_TORCH,
    ),
    ("optimizer keyword", ["+optimizer.foo=1"], "torch.optim.AdamW takes no keyword 'foo'", AFTER_TORCH),
    ("trainer keyword", ["+trainer.max_step=3"], "did you mean trainer.max_steps?", AFTER_TORCH),
]


#: train.py as users run it, saying at exit whether torch was ever imported.
PROBE = (
    "import atexit, runpy, sys\n"
    "atexit.register(lambda: sys.stderr.write(f'probe: torch loaded {\"torch\" in sys.modules}\\n'))\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def _run(cwd: Path, args: list[str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", PROBE, str(ROOT / "train.py"), "model=tiny_bert", "debug=fast", *args]
    return subprocess.run(command, cwd=cwd, env=TRAIN_ENV, capture_output=True, text=True, timeout=600)


def _files(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_a_user_mistake_gets_one_line_and_nothing_is_written_outside_its_run_folder(tmp_path, case):
    _, args, message, before_torch = case
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.csv").write_text("text,label\nfine,1\n")
    before = _files(tmp_path)
    args = [a.replace("{data}", str(data)) for a in args]
    done = _run(tmp_path, args)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert errors and message in errors[-1], done.stderr[-3000:]
    new = _files(tmp_path) - before
    outside = [p for p in new if p.parts[0] != "outputs"]
    assert not outside, f"written outside the run folder: {outside}"
    for status in (tmp_path / "outputs").rglob("status.json"):  # a refused run says so; nothing else ran
        assert json.loads(status.read_text())["status"] == "failed"
    assert f"probe: torch loaded {not before_torch}" in done.stderr, "refused while composing, before torch"


def test_a_failed_write_marks_the_run_failed_with_the_reason(tmp_path, monkeypatch):
    from helpers import run_composed

    import loldu.run.skeleton as skeleton

    def full_disk(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(skeleton, "atomic_write_text", full_disk)
    with pytest.raises(OSError, match="No space left"):
        run_composed(tmp_path, "model=tiny_bert")
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["status"] == "failed" and "No space left on device" in status["error"]


def test_when_even_the_status_cannot_be_replaced_it_is_written_in_place(tmp_path, monkeypatch):
    from loldu.run import folder

    record = folder.claim_run_dir(tmp_path)

    def no_room(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(folder, "write_json", no_room)
    folder.mark_failed(tmp_path, RuntimeError("the run's own error"), record["started_at"])
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["status"] == "failed" and status["error"] == "RuntimeError: the run's own error"
