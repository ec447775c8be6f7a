"""Absolute paths of this task's data files, resolved from this module's location.

The task YAML refers to them with ``!function local_files.ITEMS``: lm-eval resolves a
``!function`` reference by importing the named module from the YAML's own folder and
taking the attribute, so the data file is found whatever the working directory is.
A plain relative ``data_files`` entry would be resolved by ``datasets`` against the
current working directory instead.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
ITEMS = str(HERE / "loldu_local_mc.jsonl")
