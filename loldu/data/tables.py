"""CSV/TSV tables of the user-file sources: read with ``datasets.load_dataset("csv")`` after checks that name the fix
(a missing or empty file, text not in the given encoding, a delimiter other than the one assumed)."""

from __future__ import annotations

import csv
from pathlib import Path

from datasets import Dataset


def _existing_file(path: str | Path, key: str) -> Path:
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"source_args.{key}: the file {str(file)!r} does not exist.")
    return file


def _decode(file: Path, key: str, encoding: str) -> None:
    try:
        file.read_bytes().decode(encoding)
    except LookupError as err:
        raise ValueError(
            f"source_args.encoding={encoding!r} is not a known text encoding (e.g. utf-8, latin-1, cp1252)."
        ) from err
    except UnicodeDecodeError as err:
        raise ValueError(
            f"source_args.{key}: the file {str(file)!r} is not {encoding} text (byte {err.object[err.start]:#04x} at "
            f"offset {err.start}); set task.data.source_args.encoding to the file's encoding (e.g. "
            "task.data.source_args.encoding=latin-1 or cp1252), or save the file as UTF-8."
        ) from err


def delimiter_hint(columns: list[str]) -> str:
    """A sentence for a missing-column error when the file's one column looks like another delimiter's header
    (tab, ``;`` or ``|``); empty otherwise."""
    if len(columns) != 1:
        return ""
    if "\t" in columns[0]:
        return " The file looks tab-separated: name it .tsv (or set source_args.delimiter to a tab)."
    sep = next((c for c in ";|" if c in columns[0]), None)
    return f" The file looks {sep!r}-separated: set task.data.source_args.delimiter='{sep}'." if sep else ""


def read_table(path: str | Path, key: str, delimiter: str | None = None, encoding: str = "utf-8") -> Dataset:
    """Reads a CSV (or TSV, by extension ``.tsv``/``.tab``) file with ``datasets.load_dataset("csv")``.

    Cells are kept as written ("NA", "null" stay text); only empty cells are missing.

    Args:
        path: The file.
        key: The config key that gave it (for messages), e.g. ``"train"``.
        delimiter: Overrides the delimiter chosen by extension.
        encoding: The file's text encoding.

    Returns:
        The rows.

    Raises:
        FileNotFoundError: The file does not exist (names the path and the key).
        ValueError: The file is empty, has no data rows, or is not text in ``encoding`` (names the option).
    """
    import datasets

    file = _existing_file(path, key)
    _decode(file, key, encoding)
    lines = [line for line in file.read_bytes().splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"source_args.{key}: the file {str(file)!r} is empty.")
    if len(lines) == 1:
        raise ValueError(f"source_args.{key}: the file {str(file)!r} is empty (a header but no rows).")
    sep = delimiter or ("\t" if file.suffix.lower() in (".tsv", ".tab") else ",")
    quoting = csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL
    options = {"sep": sep, "quoting": quoting, "keep_default_na": False, "na_values": [""], "encoding": encoding}
    rows = datasets.load_dataset("csv", data_files=str(file.resolve()), split="train", **options)
    if len(rows) == 0:
        raise ValueError(f"source_args.{key}: the file {str(file)!r} is empty (a header but no rows).")
    return rows
