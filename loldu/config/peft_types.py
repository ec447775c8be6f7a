"""The PEFT methods ``method=peft method.peft_type=<TYPE>`` can name, read from the installed PEFT without importing
it (importing PEFT imports torch): the members of its ``PeftType`` enum, parsed from the source of
``peft/utils/peft_types.py``. ``tests/test_peft_tuners.py`` checks the parse against ``peft.PeftType`` itself, so a
PEFT upgrade that changes the file's shape fails there, not here.

Torch-free. The method library resolves the same names against the imported enum
(:mod:`loldu.methods.peft_tuners`); the names are PEFT's, case-insensitive (``ia3``, ``IA3``, ``LoHa``).
"""

from __future__ import annotations

import ast
import difflib
import functools
import importlib.util
from pathlib import Path

from omegaconf import DictConfig

#: The ``method=`` of the generic PEFT method; a run records it as ``peft:<type in lower case>`` (``peft:ia3``).
PEFT_FAMILY = "peft"


@functools.lru_cache(maxsize=1)
def peft_type_names() -> tuple[str, ...]:
    """The member names of the installed PEFT's ``PeftType`` enum, in its order (``PROMPT_TUNING``, ``LORA``...).

    Raises:
        RuntimeError: PEFT is not installed, or its ``PeftType`` is no longer a class of string constants there.
    """
    spec = importlib.util.find_spec("peft")  # a top-level package: located, not imported
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("method=peft needs the peft package, and it is not installed")
    source = Path(list(spec.submodule_search_locations)[0]) / "utils" / "peft_types.py"
    tree = ast.parse(source.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "PeftType":
            names = [
                target.id
                for statement in node.body
                if isinstance(statement, ast.Assign) and isinstance(statement.value, ast.Constant)
                for target in statement.targets
                if isinstance(target, ast.Name) and isinstance(statement.value.value, str)
            ]
            if names:
                return tuple(names)
    raise RuntimeError(f"{source} holds no PeftType enum of string constants: this PEFT version is not supported")


def canonical_peft_type(name: str) -> str:
    """PEFT's name of ``name`` (case-insensitive): ``ia3`` -> ``IA3``, ``loha`` -> ``LOHA``.

    Raises:
        ValueError: not a PEFT type; the message has the closest names and lists them all.
    """
    names = peft_type_names()
    upper = str(name).strip().upper().replace("-", "_")
    if upper in names:
        return upper
    close = difflib.get_close_matches(upper, names, n=1, cutoff=0.6)
    hint = f"did you mean method.peft_type={close[0].lower()}? " if close else ""
    raise ValueError(
        f"method.peft_type={name} is not a PEFT method: {hint}the installed PEFT has "
        f"{', '.join(n.lower() for n in names)} (in any case)"
    )


def peft_method_name(peft_type: str) -> str:
    """The method name a run records for ``method=peft method.peft_type=<peft_type>``: ``peft:ia3``."""
    return f"{PEFT_FAMILY}:{canonical_peft_type(peft_type).lower()}"


def is_peft_family(name: object) -> bool:
    """Whether a method name is the generic PEFT method (``peft``, or ``peft:<type>`` once resolved)."""
    return isinstance(name, str) and (name == PEFT_FAMILY or name.startswith(f"{PEFT_FAMILY}:"))


def check_peft_type(cfg: DictConfig) -> None:
    """Refuse ``method=peft`` without a ``method.peft_type``, or with one PEFT does not have (did-you-mean), while
    composing: before torch loads. Other methods pass.

    Raises:
        ValueError: naming the setting and the valid PEFT types.
    """
    name = cfg.method.get("name")
    if not is_peft_family(name):
        return
    given = cfg.method.get("peft_type")
    if given is None or str(given).strip() == "":
        raise ValueError(
            "method=peft applies any PEFT method by its name: give method.peft_type=<type>, e.g. "
            f"method.peft_type=ia3 (PEFT has {', '.join(n.lower() for n in peft_type_names())})"
        )
    resolved = peft_method_name(str(given))
    if name != PEFT_FAMILY and name != resolved:
        raise ValueError(
            f"method.name={name} and method.peft_type={given} name different PEFT methods: set one, e.g. "
            f"method.peft_type={name.split(':', 1)[1]}"
        )
