"""benchmarks/peft_generic.py without PEFT's source: the rows it adds to a fake TEST_CASES, where it adds them, and
how it reads a junit XML."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from benchmarks.peft_generic import add_rows, cause, fit_ranks, mirror_rows, read_junit, report


class LoraConfig:
    pass


class IA3Config:
    pass


class LoLDUConfig:
    pass


class SVFitConfig:
    pass


TEST_CASES = [
    ("Vanilla MLP 1 LoRA", "MLP", LoraConfig, {"target_modules": "lin0"}),
    ("Vanilla MLP 2 LoRA", "MLP", LoraConfig, {"target_modules": ["lin0"]}),
    ("Vanilla MLP 5 LoRA", "MLP", LoraConfig, {"target_modules": ["lin0"], "modules_to_save": ["lin1"]}),
    ("Vanilla MLP 6 LoRA", "MLP", LoraConfig, {"target_modules": ["lin0"], "lora_alpha": 4, "lora_dropout": 0.1}),
    ("Vanilla MLP 9 LoRA with DoRA", "MLP", LoraConfig, {"target_modules": "lin1", "use_dora": True, "r": 8}),
    ("Conv1d LoRA with DoRA", "Conv1d", LoraConfig, {"target_modules": ["conv1d"], "use_dora": True}),
    ("MLP 1 using nn.Parameter LoRA", "MLP", LoraConfig, {"target_parameters": ["lin0.weight"]}),
    ("Vanilla MLP 1 IA3", "MLP", IA3Config, {"target_modules": "lin0", "feedforward_modules": []}),
]
METHODS = {"LoLDU": LoLDUConfig, "SVFit": SVFitConfig}


def test_lora_rows_are_mirrored_with_translated_kwargs_and_duplicates_removed():
    rows = mirror_rows(TEST_CASES, LoraConfig, METHODS)
    expected = [
        ("Vanilla MLP 1 {}", "MLP", {"target_modules": "lin0", "r": 8}),
        ("Vanilla MLP 2 {}", "MLP", {"target_modules": ["lin0"], "r": 8}),
        ("Vanilla MLP 5 {}", "MLP", {"target_modules": ["lin0"], "modules_to_save": ["lin1"], "r": 8}),
        # MLP 6 is MLP 2 once lora_alpha and lora_dropout are dropped; MLP 9's own r gives way to the harness's.
        ("Vanilla MLP 9 {}", "MLP", {"target_modules": "lin1", "r": 8}),
        ("Conv1d {}", "Conv1d", {"target_modules": ["conv1d"], "r": 8}),
        # The nn.Parameter row targets no module once target_parameters is gone; IA3's row is not LoRA's.
    ]
    assert rows == [
        (name.format(label), model, cls, kwargs) for label, cls in METHODS.items() for name, model, kwargs in expected
    ]
    rows[0][3]["target_modules"] = "changed"
    assert TEST_CASES[0][3] == {"target_modules": "lin0"}, "the mirrored kwargs are copies"


def test_ranks_are_lowered_to_the_smallest_side_of_the_targeted_weights():
    def build(model_id):
        torch.manual_seed(0)
        model = nn.Module()
        model.emb = nn.Embedding(100, 5)  # 100 x 5
        model.conv1d = Conv1D(1, 5)  # transformers' Conv1D: weight 5 x 1
        model.lin0 = nn.Linear(10, 20)  # 20 x 10
        model.conv2d = nn.Conv2d(16, 16, 3, groups=8)  # 16 x 2*3*3
        model.mha = nn.MultiheadAttention(10, 2)  # no weight: refused by the project, not counted
        return model

    rows = [
        ("a", "M", LoLDUConfig, {"target_modules": ["emb"], "r": 8}),
        ("b", "M", LoLDUConfig, {"target_modules": ["emb", "conv1d"], "r": 8}),
        ("c", "M", LoLDUConfig, {"target_modules": "lin0", "r": 8}),  # a string is a regex on the full name
        ("d", "M", LoLDUConfig, {"target_modules": "lin", "r": 8}),
        ("e", "M", LoLDUConfig, {"target_modules": ["conv2d", "mha"], "r": 20}),
    ]
    fit_ranks(rows, build)
    assert [row[3]["r"] for row in rows] == [5, 1, 8, 8, 16]


def test_rows_are_added_after_the_list_and_ranks_fitted_before_the_test_class():
    source = (
        "from peft import LoraConfig\n"
        "TEST_CASES = [\n"
        '    ("Vanilla MLP 1 LoRA", "MLP", LoraConfig, {"target_modules": "lin0"}),\n'
        "]\n"
        "ALL_PEFT_CONFIG_CLASSES = sorted({row[2] for row in TEST_CASES}, key=lambda cls: cls.__name__)\n"
        "class MockTransformerWrapper:\n"
        "    pass\n"
        "@decorated\n"
        "class TestPeftCustomModel:\n"
        "    pass\n"
    )
    lines = add_rows(source, "svfit").splitlines()
    extend = lines.index("TEST_CASES.extend(_MIRRORED)")
    fit = lines.index("_fit_ranks(_MIRRORED, MockTransformerWrapper.from_pretrained)")
    assert lines.index("_MIRRORED = _mirror(TEST_CASES, _LoraConfig, _classes('svfit'))") == extend - 1
    assert lines.index("]") < extend < lines.index(source.splitlines()[4]) < lines.index("    pass") < fit
    assert fit < lines.index("@decorated")
    added = [ln for ln in lines if ln.startswith("#") or "_MIRRORED" in ln or ln.startswith("from ") or not ln]
    assert [ln for ln in lines if ln not in added] == source.splitlines()[1:], "PEFT's own lines kept, in order"
    compile("\n".join(lines), "test_custom_models.py", "exec")


def test_junit_is_counted_per_method_and_failures_grouped(tmp_path):
    junit = tmp_path / "junit.xml"
    cls = "tests.test_custom_models.TestPeftCustomModel"
    junit.write_text(
        "<testsuites><testsuite>"
        f'<testcase classname="{cls}" name="test_a[Vanilla MLP 1 LoLDU-MLP-LoLDUConfig-config_kwargs1]"/>'
        f'<testcase classname="{cls}" name="test_a[MHA 1 LoLDU-MHA-LoLDUConfig-config_kwargs2]">'
        '<failure message="ValueError: Target module MultiheadAttention(&#10;  (out_proj): Linear()&#10;) is not '
        'supported at 0x7f00">trace</failure></testcase>'
        f'<testcase classname="{cls}" name="test_b[MHA 2 LoLDU-MHA-LoLDUConfig-config_kwargs3]">'
        '<error message="ValueError: Target module MultiheadAttention(&#10;  (out_proj): Linear()&#10;) is not '
        'supported at 0x7f11">x</error>'
        "</testcase>"
        f'<testcase classname="{cls}" name="test_gpu[SVFitConfig]"><skipped message="no GPU"/></testcase>'
        f'<testcase classname="{cls}" name="test_a[Vanilla MLP 1 LoRA-MLP-LoraConfig-config_kwargs0]"/>'
        "</testsuite></testsuites>"
    )
    results = read_junit(junit, ["LoLDU", "SVFit"])
    assert {k: results["LoLDU"][k] for k in ("passed", "failed", "skipped")} == {"passed": 1, "failed": 2, "skipped": 0}
    assert {k: results["SVFit"][k] for k in ("passed", "failed", "skipped")} == {"passed": 0, "failed": 0, "skipped": 1}
    # One group: a module's multi-line repr is kept on one line, the addresses masked; the first test its example.
    assert results["LoLDU"]["causes"] == {
        "ValueError: Target module MultiheadAttention( (out_proj): Linear() ) is not supported at 0x…": [
            2,
            "TestPeftCustomModel::test_a[MHA 1 LoLDU-MHA-LoLDUConfig-config_kwargs2]",
        ]
    }
    assert results["SVFit"]["reasons"] == {"no GPU": [1, "TestPeftCustomModel::test_gpu[SVFitConfig]"]}
    text = report(results, ["# title"])
    assert "| LoLDU | 1 | 2 | 0 | 3 |" in text and "| SVFit | 0 | 0 | 1 | 1 |" in text
    assert "| 2 | ValueError: Target module MultiheadAttention(" in text and "| 1 | no GPU |" in text
    assert (
        cause("AssertionError: max diff 0.25 > 1e-05 in /tmp/x/y with lin0/modules_to_save\nmore")
        == "AssertionError: max diff <n> > <n> in <path> with lin0/modules_to_save"
    )


def _git(cwd, *args):
    import subprocess

    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True, env=env)
    return out.stdout.strip()


def test_the_report_names_the_sdists_version_or_the_checkouts_own_commit(tmp_path):
    from benchmarks.peft_generic import source_of

    sdist = tmp_path / "peft-9.9.9"
    (sdist / "tests").mkdir(parents=True)
    (sdist / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: peft\nVersion: 9.9.9\n")
    assert source_of(sdist) == "the 9.9.9 source distribution"
    repo = tmp_path / "repo"
    (repo / "tests").mkdir(parents=True)
    (repo / "tests" / "x.py").write_text("")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "x")
    assert source_of(repo) == f"commit `{_git(repo, 'rev-parse', 'HEAD')}`"
    # A folder inside another repository is not that repository's revision of PEFT's tests.
    assert source_of(repo / "tests").startswith("an unknown revision")


def _sdist(root, test_source):
    """A PEFT-like source distribution: PKG-INFO, tests/ without __init__.py, a helper imported relatively."""
    (root / "tests").mkdir(parents=True)
    (root / "PKG-INFO").write_text("Version: 9.9.9\n")
    (root / "tests" / "testing_common.py").write_text("VALUE = 1\n")
    (root / "tests" / "test_custom_models.py").write_text(test_source)
    return root


SDIST_TESTS = (
    "from peft import LoraConfig\n"
    "from torch import nn\n"
    "from .testing_common import VALUE\n"
    "TEST_CASES = [\n"
    '    ("Vanilla MLP 1 LoRA", "MLP", LoraConfig, {"target_modules": "lin0"}),\n'
    "]\n"
    "class MockTransformerWrapper:\n"
    "    @staticmethod\n"
    "    def from_pretrained(model_id):\n"
    "        model = nn.Module()\n"
    "        model.lin0 = nn.Linear(10, 4)\n"
    "        return model\n"
    "class TestPeftCustomModel:\n"
    '    @__import__("pytest").mark.parametrize("name, model_id, config_cls, config_kwargs", TEST_CASES)\n'
    "    def test_rank(self, name, model_id, config_cls, config_kwargs):\n"
    "        assert VALUE == 1 and config_kwargs.get('r', 4) == 4\n"
)


def test_an_sdists_tests_run_as_a_package_and_the_report_names_its_version(tmp_path):
    """PyPI's sdist has tests/ but no tests/__init__.py, and PEFT's tests import their helpers relatively: they run
    (one real pytest run), the mirrored row's rank is fitted (lin0 is 4 x 10), and the header names the version."""
    from benchmarks.peft_generic import main

    out = tmp_path / "report.md"
    src = _sdist(tmp_path / "peft-9.9.9", SDIST_TESTS)
    assert main(["--peft-src", str(src), "--methods", "loldu", "--out", str(out)]) == 0
    text = out.read_text()
    assert "of the 9.9.9 source distribution" in text and "| LoLDU | 1 | 0 | 0 | 1 |" in text, text


def test_a_run_with_none_of_the_methods_tests_writes_no_report(tmp_path, monkeypatch, capsys):
    """pytest collecting nothing (an import error, a -k matching nothing) is not a report of 0 of 0."""
    import subprocess

    import benchmarks.peft_generic as harness

    def pytest_run(cmd, cwd, env):
        junit = next(arg.split("=", 1)[1] for arg in cmd if arg.startswith("--junitxml="))
        Path(junit).write_text("<testsuites><testsuite/></testsuites>")
        return subprocess.CompletedProcess(cmd, 2)

    monkeypatch.setattr(harness.subprocess, "run", pytest_run)
    out = tmp_path / "report.md"
    out.write_text("the last report")
    src = _sdist(tmp_path / "peft-9.9.9", SDIST_TESTS)
    assert harness.main(["--peft-src", str(src), "--out", str(out)]) == 2
    assert out.read_text() == "the last report"
    assert "pytest ran no test of LoLDU, SVFit (exit status 2" in capsys.readouterr().err
