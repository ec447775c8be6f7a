"""The package's boundaries: loldu.methods is a plain library, no import cycle anywhere, the layer contracts hold."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest


def test_methods_import_no_training_framework():
    code = (
        "import sys, json, loldu.methods; "
        "print(json.dumps(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('lightning', 'pytorch_lightning', 'hydra', 'omegaconf', 'wandb'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


ROOT = Path(__file__).resolve().parents[1]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Modules of ``modules`` that ``path`` imports anywhere (top level or inside functions)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            target = node.module if node.level == 0 else ".".join(p for p in (base, node.module) if p)
            # ``from pkg import sub`` imports the submodule; ``from pkg import name`` the package
            subs = {f"{target}.{alias.name}" for alias in node.names} & modules
            found.update(subs or {target})
    return {m for m in found if m in modules and m != name}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a path, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt, [*path, nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_method_library_has_no_import_cycle():
    # Every import counts, also those deferred into a function: a cycle hidden that way still
    # makes the result depend on which module a user imports first.
    files = sorted((ROOT / "loldu" / "methods").rglob("*.py"))
    modules = {_module_name(p) for p in files}
    graph = {_module_name(p): _imports(p, modules) for p in files}
    assert "loldu.methods.peft_registry" in graph["loldu.methods.loldu.config"]  # the finder sees imports
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


@pytest.mark.parametrize(
    ("root", "known"),
    [("loldu", ("loldu.run.skeleton", "loldu.run.resume")), ("benchmarks", ("benchmarks.run", "benchmarks.step_time"))],
)
def test_no_import_cycle_anywhere(root, known):
    """No circle between any two modules of the package (or of the benchmarks): the layers of
    pyproject.toml's import-linter contracts keep packages apart, this keeps the modules inside one apart."""
    files = sorted((ROOT / root).rglob("*.py"))
    modules = {_module_name(p) for p in files}
    graph = {_module_name(p): _imports(p, modules) for p in files}
    assert known[1] in graph[known[0]]  # the finder sees imports, also those inside a function
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_import_contracts_hold():
    """`lint-imports` (make lint): the layers (methods | config at the bottom, then models, data, tasks, run,
    sweeps | eval), a method library without training frameworks and a torch-free compose time."""
    lint = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout and "3 kept" in out.stdout


def test_peft_registry_is_a_leaf():
    path = ROOT / "loldu" / "methods" / "peft_registry.py"
    assert _imports(path, {_module_name(p) for p in (ROOT / "loldu").rglob("*.py")}) == set()


def test_a_method_config_imported_first_in_a_fresh_interpreter_works():
    code = (
        "from loldu.methods.loldu.config import LoLDUConfig; from peft import PeftType; "
        "c = LoLDUConfig(r=2, target_modules=['fc1']); assert c.peft_type is PeftType.LOLDU; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_import_loldu_after_torch_registers_with_peft():
    """A library user's `import torch, loldu` is enough for PeftModel.from_pretrained to know LoLDU and SVFit."""
    code = (
        "import torch, loldu\n"
        "from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING\n"
        "assert 'LOLDU' in PEFT_TYPE_TO_CONFIG_MAPPING and 'SVFIT' in PEFT_TYPE_TO_CONFIG_MAPPING\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
