"""PEFT's own generic tuner tests (``tests/test_custom_models.py``) run on LoLDU and SVFit.

Run from the project root::

    git clone https://github.com/huggingface/peft ~/src/peft    # ideally at the pinned version's tag (v0.21.2)
    # or the pinned version's sdist, which ships tests/:
    #   pip download peft==0.21.2 --no-binary :all: --no-deps && tar xzf peft-0.21.2.tar.gz   (--peft-src peft-0.21.2)
    .venv/bin/python -m benchmarks.peft_generic --peft-src ~/src/peft                 # both methods
    .venv/bin/python -m benchmarks.peft_generic --peft-src ~/src/peft --methods svfit -k "merge"

PEFT's tests are not part of this repository: they are taken at run time from a PEFT source tree (``--peft-src``: a
work tree or an unpacked PyPI source distribution with a ``tests/`` folder, or a bare git directory read with ``git
archive HEAD``) into a temporary directory; the report names the commit or the sdist's version.
There, right after the ``TEST_CASES`` list of ``test_custom_models.py``, the list is extended with
:func:`mirror_rows` of its LoRA rows for each method (before the test classes are built, so every test parametrized
by ``TEST_CASES``, and ``ALL_PEFT_CONFIG_CLASSES`` derived from it, includes them); their ranks are fitted to the
test models (:func:`fit_ranks`) once these are defined.
pytest runs there, against the installed peft, on the tests whose ids name a method (``-k "LoLDU or SVFit"``),
with a junit XML from which the counts per method and the failures grouped by cause are read. The report is
written to ``benchmarks/results/peft_generic.md`` (``--out``) and printed. The exit status is 0 whatever the
counts: this is a report (2, and no report written, when pytest ran none of the methods' tests).
"""

from __future__ import annotations

import argparse
import ast
import copy
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "peft_generic.md"
TEST_FILE = "tests/test_custom_models.py"

#: Method name (``--methods``) -> the label in the rows' names (what ``-k`` and the counts select on).
LABELS = {"loldu": "LoLDU", "svfit": "SVFit"}
#: The LoRA kwargs the project's configs share; the others (lora_alpha, lora_dropout, use_dora, target_parameters,
#: trainable_token_indices, LoRA's own r, ...) are dropped.
KEPT_KEYS = ("target_modules", "modules_to_save", "init_weights")
#: Rank of the mirrored rows: LoRA's default, lowered by :func:`fit_ranks` to the smallest side of the matrices a
#: row adapts (the project refuses a rank above min(out, in): PEFT's MLP has lin1 20 -> 2, its Conv1d model a 1 x 2
#: kernel).
RANK = 8


def mirror_rows(rows, lora_cls, methods: dict[str, type]) -> list[tuple]:
    """The ``(name, model_id, config_cls, kwargs)`` rows of ``lora_cls`` in ``rows``, for each method.

    Args:
        rows: PEFT's ``TEST_CASES``.
        lora_cls: the class whose rows are mirrored (``peft.LoraConfig``).
        methods: label -> config class, e.g. ``{"LoLDU": LoLDUConfig}``.

    Returns:
        Per method, in ``rows``' order: the name with its LoRA part (``LoRA``/``DoRA`` and what follows) replaced by
        the label, the same model, the method's config class, and the kwargs of :data:`KEPT_KEYS` plus ``r`` =
        :data:`RANK`. A row left with no ``target_modules`` (one targeting parameters only) is dropped, and a row
        whose model and kwargs repeat an earlier one (e.g. a DoRA variant, once ``use_dora`` is gone) too.
    """
    out, seen = [], set()
    for label, config_cls in methods.items():
        for name, model_id, cls, kwargs in rows:
            if cls is not lora_cls:
                continue
            kept = {k: copy.deepcopy(v) for k, v in kwargs.items() if k in KEPT_KEYS}
            if "target_modules" not in kept:
                continue
            key = (label, model_id, repr(sorted(kept.items())))
            if key in seen:
                continue
            seen.add(key)
            new_name = re.sub(r"\b(LoRA|DoRA)\b.*", label, name)
            out.append(
                (new_name if label in new_name else f"{name} {label}", model_id, config_cls, {**kept, "r": RANK})
            )
    return out


def fit_ranks(rows, build) -> None:
    """Lower each row's ``r`` to the smallest side of the weights it targets (in place).

    Args:
        rows: rows of :func:`mirror_rows`.
        build: model id -> the test model (PEFT's ``MockTransformerWrapper.from_pretrained``).

    A weight reads as ``shape[0] x (the rest)``: out x in for ``nn.Linear``, out x in/groups*kernel for a
    convolution, num x dim for an embedding, in x out for transformers' ``Conv1D``. A module without ``weight``
    (``nn.MultiheadAttention``, which the project refuses) does not count.
    """
    for _, model_id, _, kwargs in rows:
        targets = kwargs["target_modules"]
        for name, module in build(model_id).named_modules():
            if isinstance(targets, str):
                hit = re.fullmatch(targets, name) is not None
            else:
                hit = any(name == t or name.endswith("." + t) for t in targets)
            weight = getattr(module, "weight", None)
            if hit and weight is not None and weight.dim() >= 2:
                kwargs["r"] = min(kwargs["r"], weight.shape[0], weight[0].numel())


def method_classes(names: str) -> dict[str, type]:
    """Label -> config class of the comma-separated method names (importing ``loldu.methods`` registers them)."""
    from loldu.methods import LoLDUConfig, SVFitConfig

    classes = {"loldu": LoLDUConfig, "svfit": SVFitConfig}
    return {LABELS[n]: classes[n] for n in names.split(",")}


def add_rows(source: str, methods: str) -> str:
    """``source`` (PEFT's test_custom_models.py) with the mirrored rows added to ``TEST_CASES`` right after the list
    (so ``ALL_PEFT_CONFIG_CLASSES``, derived from it, and every test class see them), and their ranks fitted right
    before ``class TestPeftCustomModel`` (once the test models and ``MockTransformerWrapper`` are defined)."""
    tree = ast.parse(source)
    ends = [
        node.end_lineno
        for node in tree.body
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "TEST_CASES" for t in node.targets)
    ]
    starts = [
        min([node.lineno] + [d.lineno for d in node.decorator_list])
        for node in tree.body
        if isinstance(node, ast.ClassDef) and node.name == "TestPeftCustomModel"
    ]
    if not ends or not starts or starts[0] <= ends[0]:
        raise SystemExit(f"no TEST_CASES list before class TestPeftCustomModel in {TEST_FILE}: its layout changed")
    lines = source.splitlines(keepends=True)
    extend = (
        "# Added by loldu's benchmarks/peft_generic.py: the LoRA rows mirrored for this project's methods.\n"
        "from peft import LoraConfig as _LoraConfig  # noqa: E402\n"
        "from benchmarks.peft_generic import fit_ranks as _fit_ranks, method_classes as _classes, "
        "mirror_rows as _mirror  # noqa: E402\n"
        f"_MIRRORED = _mirror(TEST_CASES, _LoraConfig, _classes({methods!r}))\n"
        "TEST_CASES.extend(_MIRRORED)\n"
    )
    fit = "# Added by loldu's benchmarks/peft_generic.py.\n"
    fit += "_fit_ranks(_MIRRORED, MockTransformerWrapper.from_pretrained)\n"
    a, b = ends[0], starts[0] - 1
    return "".join(lines[:a]) + extend + "".join(lines[a:b]) + fit + "\n\n" + "".join(lines[b:])


def source_of(src: Path) -> str:
    """Which revision of PEFT's tests ``src`` holds, for the report: a git checkout's (or git directory's) commit, or
    the version of a source distribution (PyPI's sdist ships tests/, with a ``PKG-INFO``). A folder inside some
    other repository is not taken for that repository's commit."""
    info = src / "PKG-INFO"
    if info.is_file():
        lines = info.read_text().splitlines()
        versions = [line.split(":", 1)[1].strip() for line in lines if line.startswith("Version:")]
        return f"the {versions[0] if versions else 'unversioned'} source distribution"

    def git(*args: str) -> str | None:
        out = subprocess.run(["git", "-C", str(src), *args], capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if git("rev-parse", "--is-bare-repository") == "true" or (top and Path(top).resolve() == src.resolve()):
        head = git("rev-parse", "HEAD")
        if head:
            return f"commit `{head}`"
    return "an unknown revision (neither a git checkout nor a source distribution)"


def export_tests(src: Path, dest: Path) -> None:
    """Copy ``src``'s tests/ tree into ``dest`` (a work tree's or sdist's folder, else ``git archive HEAD``) as a
    package."""
    if (src / "tests").is_dir():
        shutil.copytree(src / "tests", dest / "tests")
    else:
        tar = subprocess.run(["git", "-C", str(src), "archive", "HEAD", "tests"], capture_output=True, check=True)
        with tarfile.open(fileobj=io.BytesIO(tar.stdout)) as archive:
            archive.extractall(dest, filter="data")
    (dest / "tests" / "__init__.py").touch()  # the sdist leaves it out; the tests import their helpers relatively


def method_of(test_id: str, labels: list[str]) -> str | None:
    """The label a test id names (case-insensitive, as ``-k`` matches)."""
    return next((label for label in labels if label.lower() in test_id.lower()), None)


def cause(message: str) -> str:
    """A failure's message as a group key: its first line (the whole message on one line where that line opens a
    module's multi-line repr), with addresses, paths, hashes and numbers masked."""
    text = (message or "").strip() or "(no message)"
    line = text.splitlines()[0]
    if line.count("(") > line.count(")"):
        line = " ".join(text.split())
    line = re.sub(r"0x[0-9a-fA-F]+", "0x…", line)
    line = re.sub(r"(?<![\w.])(/[\w.+-]+)+/?", "<path>", line)
    line = re.sub(r"\b[0-9a-f]{12,}\b", "<hash>", line)
    line = re.sub(r"(?<![\w.])-?\d+(\.\d+)?(e[-+]?\d+)?\b", "<n>", line)
    return line[:240]


def read_junit(path: Path, labels: list[str]) -> dict[str, dict]:
    """Per label: ``passed``/``failed``/``skipped`` counts, and the failures' ``causes`` and the skips' ``reasons``
    (each: :func:`cause` -> [count, first test id])."""
    results = {label: {"passed": 0, "failed": 0, "skipped": 0, "causes": {}, "reasons": {}} for label in labels}
    for case in ET.parse(path).iter("testcase"):
        test_id = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        label = method_of(test_id, labels)
        if label is None:
            continue
        res = results[label]
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        skip = case.find("skipped")
        if bad is not None or skip is not None:
            outcome, groups = ("failed", "causes") if bad is not None else ("skipped", "reasons")
            res[outcome] += 1
            group = res[groups].setdefault(cause((bad if bad is not None else skip).get("message", "")), [0, test_id])
            group[0] += 1
        else:
            res["passed"] += 1
    return results


def report(results: dict[str, dict], header: list[str]) -> str:
    """The markdown report: the header lines, the counts table, then each method's failure and skip groups."""
    lines = [*header, "", "| method | passed | failed | skipped | total |", "|---|---|---|---|---|"]
    for label, res in results.items():
        total = res["passed"] + res["failed"] + res["skipped"]
        lines.append(f"| {label} | {res['passed']} | {res['failed']} | {res['skipped']} | {total} |")
    for label, res in results.items():
        for groups, title in (("causes", "failures by cause"), ("reasons", "skips by reason")):
            lines += ["", f"## {label}: {title}", ""]
            if not res[groups]:
                lines.append("None.")
                continue
            lines += [
                "| count | first line of the message (numbers and paths masked) | example test |",
                "|---|---|---|",
            ]
            for text, (count, example) in sorted(res[groups].items(), key=lambda kv: -kv[1][0]):
                cells = [str(count), text.replace("|", "\\|"), f"`{example}`".replace("|", "\\|")]
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = os.environ.get("PEFT_SRC")
    p.add_argument(
        "--peft-src",
        type=Path,
        default=Path(src) if src else None,
        required=not src,
        help="a PEFT checkout or unpacked sdist (with tests/), or a git directory; default: $PEFT_SRC",
    )
    p.add_argument("--methods", default="loldu,svfit", help="comma-separated: loldu, svfit")
    p.add_argument("-k", dest="extra", default="", help="extra pytest -k expression, ANDed with the methods'")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the markdown report goes")
    args = p.parse_args(argv)
    bad = sorted(set(args.methods.split(",")) - set(LABELS))
    if bad:
        p.error(f"--methods takes {', '.join(LABELS)}; got {', '.join(bad)}")
    if not ((args.peft_src / "tests").is_dir() or (args.peft_src / "HEAD").is_file()):
        p.error(f"{args.peft_src} is neither a PEFT source tree (no tests/) nor a git directory")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from peft import __version__ as peft_version

    labels = [LABELS[n] for n in args.methods.split(",")]
    selection = " or ".join(labels)
    if args.extra:
        selection = f"({selection}) and ({args.extra})"
    with tempfile.TemporaryDirectory(prefix="peft-generic-") as tmp:  # no method name in it: -k sees the path
        tmp = Path(tmp)
        export_tests(args.peft_src, tmp)
        test_file = tmp / TEST_FILE
        test_file.write_text(add_rows(test_file.read_text(), args.methods))
        (tmp / "pytest.ini").write_text("[pytest]\n")  # the rootdir: no ini file above it is read
        junit = tmp / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", TEST_FILE, "-k", selection, "-p", "no:cacheprovider", "-q"]
        cmd += [f"--junitxml={junit}"]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        env.setdefault("HF_HUB_OFFLINE", "1")  # custom models only: a hub call fails at once instead of waiting
        print("$ " + " ".join(cmd), f"(in {tmp})", file=sys.stderr, flush=True)
        start = time.monotonic()
        rc = subprocess.run(cmd, cwd=tmp, env=env).returncode
        minutes = (time.monotonic() - start) / 60
        if not junit.is_file():
            print(f"pytest wrote no junit XML (exit status {rc})", file=sys.stderr)
            return 2
        results = read_junit(junit, labels)
    if not any(res["passed"] + res["failed"] + res["skipped"] for res in results.values()):
        print(
            f"pytest ran no test of {', '.join(labels)} (exit status {rc}; its output is above): "
            f"{args.out} is left as it was",
            file=sys.stderr,
        )
        return 2
    argv_shown = shlex.join(["python", "-m", "benchmarks.peft_generic", *(sys.argv[1:] if argv is None else argv)])
    header = [
        "# PEFT's generic tuner tests on this project's methods",
        "",
        f"Written by `{argv_shown}` on {time.strftime('%Y-%m-%d')}, in {minutes:.1f} min (pytest exit "
        f"status {rc}). PEFT tests: `{TEST_FILE}` of {source_of(args.peft_src)} ({args.peft_src}), with its LoRA rows "
        f"mirrored for {', '.join(labels)} (r = {RANK}, or the smallest side of a targeted weight); installed peft "
        f'{peft_version}; pytest `-k "{selection}"`. A test that errors counts as failed.',
    ]
    text = report(results, header)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
