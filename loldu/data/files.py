"""User-file sources: CSV/TSV text files (``datasets.load_dataset("csv")``), image folders and instruction JSON.

Every source checks its input first and names the fix in its errors. Relative paths resolve against the working
directory.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, DatasetDict

from loldu.data.base import encode_labels, image_dataset, text_dataset
from loldu.data.packaged import INSTRUCTION_FEATURES
from loldu.data.tables import delimiter_hint, read_table

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")
FIELDS_HELP = (
    "each example must be an object with string fields 'instruction' and 'output' and an optional string field 'input'"
)
SPLIT_FOLDERS = {
    "train": "train",
    "val": "validation",
    "valid": "validation",
    "validation": "validation",
    "test": "test",
}


def text_csv(
    train: str,
    text_columns: str | Sequence[str] = "text",
    label_column: str = "label",
    validation: str | None = None,
    test: str | None = None,
    label_names: Sequence[str] | None = None,
    regression: bool = False,
    delimiter: str | None = None,
    encoding: str = "utf-8",
) -> DatasetDict:
    """Text classification/regression data from CSV or TSV files.

    Args:
        train: Training file. Splits without a file (validation, test) are carved from it.
        text_columns: One column name, or two for sentence pairs.
        label_column: The label column.
        validation: Validation file, or None.
        test: Test file, or None.
        label_names: Class names: string labels map to their index, integer labels index it. Default: the sorted
            unique training labels (integer labels 0..k give names "0".."k").
        regression: Float targets (``num_labels`` = 1).
        delimiter: Overrides the delimiter chosen by extension (``,``; tab for ``.tsv``/``.tab``).
        encoding: The files' text encoding (e.g. ``latin-1`` or ``cp1252`` for files saved by older tools).

    Returns:
        The parts (``text``, ``text_pair`` for pairs, ``label``).

    Raises:
        FileNotFoundError: A file does not exist.
        ValueError: Empty file, missing column (lists the file's columns), a label not in the label names, or a file
            that is not text in ``encoding``.
    """
    columns = [text_columns] if isinstance(text_columns, str) else list(text_columns)
    if not 1 <= len(columns) <= 2:
        raise ValueError(f"source_args.text_columns must name one or two columns; got {columns}.")
    names = list(label_names) if label_names is not None else None
    tables = {}
    for key, path in (("train", train), ("validation", validation), ("test", test)):
        if path is None:
            continue
        rows = read_table(path, key, delimiter, encoding)
        missing = [c for c in [*columns, label_column] if c not in rows.column_names]
        if missing:
            keys = [
                k
                for k, names in (("text_columns", columns), ("label_column", [label_column]))
                if set(names) & set(missing)
            ]
            raise ValueError(
                f"source_args.{key}: the file {str(path)!r} has no column(s) {missing}; "
                f"its columns are {rows.column_names}. Set {' and '.join(f'task.data.source_args.{k}' for k in keys)} "
                f"to the file's column names.{delimiter_hint(rows.column_names)}"
            )
        labels, names = encode_labels(rows[label_column], names, bool(regression), f"{path}")
        tables[key] = (rows, labels)
    parts = {
        key: text_dataset(rows[columns[0]], rows[columns[1]] if len(columns) == 2 else None, labels, names, regression)
        for key, (rows, labels) in tables.items()
    }
    return DatasetDict(parts)


def _check_image(path: Path) -> None:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.verify()
    except Exception as err:
        raise ValueError(f"Cannot decode the image file {str(path)!r}: {err}") from err


def _scan_classes(folder: Path, extensions: tuple[str, ...]) -> dict[str, list[Path]]:
    class_dirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise ValueError(f"The folder {str(folder)!r} is empty: expected one sub-folder of images per class.")
    classes = {}
    for class_dir in class_dirs:
        files = sorted(
            p
            for p in class_dir.rglob("*")
            if p.is_file() and p.suffix.lower() in extensions and not p.name.startswith(".")
        )
        if not files:
            raise ValueError(
                f"The class folder {str(class_dir)!r} is empty: it holds no images {list(extensions)}; add its "
                "images, or move the folder out of the data folder if it is not a class."
            )
        classes[class_dir.name] = files
    return classes


def _layout(root: Path) -> dict[str, Path]:
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not subdirs:
        raise ValueError(
            f"The folder {str(root)!r} is empty: expected train/ val/ test/ sub-folders or one folder per class."
        )
    names = {d.name for d in subdirs}
    if "train" not in names or not names <= set(SPLIT_FOLDERS):
        return {"train": root}
    layout: dict[str, Path] = {}
    for folder in subdirs:
        split = SPLIT_FOLDERS[folder.name]
        if split in layout:
            raise ValueError(f"{str(root)!r} has both {layout[split].name}/ and {folder.name}/; keep one.")
        layout[split] = folder
    return layout


def split_folders(root: str | Path) -> dict[str, Path]:
    """The folder of each split part in an :func:`imagefolder` root: ``{"train": root}`` for one folder per class,
    else the train/val/test folders by part name (``"validation"`` for val/valid).

    Args:
        root: The dataset folder (it must exist).

    Returns:
        Part name -> the folder that holds its class folders.
    """
    return _layout(Path(root).expanduser())


def imagefolder(root: str, extensions: Sequence[str] | None = None, verify: bool = True) -> DatasetDict:
    """Images in class folders: ``root/{train,val,test}/<class>/*`` or just ``root/<class>/*`` (then split).

    Class names are the sorted class-folder names of ``train``; images are decoded lazily with PIL. Hidden folders
    and files (a name starting with ``.``, e.g. ``.ipynb_checkpoints``) are skipped; the data module's checks report
    the skipped folders (see :mod:`loldu.data.sanity`).

    Args:
        root: The dataset folder. A ``val`` (or ``valid``/``validation``) or ``test`` folder missing from the split
            layout is carved from train.
        extensions: Image file extensions to use (default: common PIL formats); other files are ignored.
        verify: Check every image decodes during setup (one pass over the files' headers and data).

    Returns:
        The parts (``image`` decoded on access, ``label``).

    Raises:
        FileNotFoundError: The root folder does not exist.
        ValueError: An empty folder, an undecodable image, or class sets differing between splits.
    """
    folder = Path(root).expanduser()
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise FileNotFoundError(f"source_args.root: the folder {str(folder)!r} {what}.")
    exts = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in (extensions or IMAGE_EXTENSIONS))
    scanned = {split: _scan_classes(path, exts) for split, path in _layout(folder).items()}
    names = sorted(scanned["train"])
    for split, classes in scanned.items():
        if sorted(classes) != names:
            extra, missing = sorted(set(classes) - set(names)), sorted(set(names) - set(classes))
            raise ValueError(
                f"The class folders of {split!r} differ from train's in {str(folder)!r}: "
                f"extra {extra}, missing {missing}."
            )
    parts = {}
    for split, classes in scanned.items():
        files = [f for name in names for f in classes[name]]
        if verify:
            for file in files:
                _check_image(file)
        labels = np.asarray([i for i, name in enumerate(names) for _ in classes[name]], dtype=np.int64)
        parts[split] = image_dataset(files, labels, names)
    return DatasetDict(parts)


def _check_item(item: Any, where: str) -> dict:
    if not isinstance(item, dict):
        raise ValueError(f"{where} is a {type(item).__name__}, not an object; {FIELDS_HELP}.")
    for key in ("instruction", "output"):
        if key not in item:
            raise ValueError(f"{where} has no {key!r} field; {FIELDS_HELP}.")
        if not isinstance(item[key], str):
            raise ValueError(
                f"{where}: the {key!r} field is a {type(item[key]).__name__}, not a string; {FIELDS_HELP}."
            )
    extra = item.get("input")
    if extra is not None and not isinstance(extra, str):
        raise ValueError(f"{where}: the 'input' field is a {type(extra).__name__}, not a string; {FIELDS_HELP}.")
    return {"instruction": item["instruction"], "input": extra or "", "output": item["output"]}


def instruction_json(path: str | Path) -> DatasetDict:
    """Instruction examples from a local file: a JSON array of objects, or JSON lines (one object per line).

    Each object has string fields ``instruction`` and ``output`` and an optional string ``input`` (default ``""``);
    other fields are ignored. A file whose first non-blank character is ``[`` is read as an array, any other as JSON
    lines (blank lines are skipped). Relative paths resolve against the working directory.

    Args:
        path: The file.

    Returns:
        One ``"train"`` part of the examples (``instruction``, ``input``, ``output``), in file order.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file is not UTF-8, is invalid JSON (with its line), holds no examples, or an item is not an
            object or lacks a string ``instruction``/``output`` field (with its index or line).
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"instruction_json: the file {str(file)!r} does not exist (source_args.path).")
    try:
        content = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"{file}: not UTF-8 text ({err}); save it as UTF-8.") from err
    if not content.strip():
        raise ValueError(f"{file} is empty; it must hold a JSON array of examples or one JSON object per line.")
    if content.lstrip().startswith("["):
        try:
            items = json.loads(content)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{file}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}. The file must hold one "
                "JSON array of example objects (or be a JSON-lines file with one object per line)."
            ) from err
        if not items:
            raise ValueError(f"{file} holds an empty JSON array; it needs at least one example.")
        examples = [_check_item(item, f"{file}: item {index} (0-based)") for index, item in enumerate(items)]
        return DatasetDict(train=Dataset.from_list(examples, features=INSTRUCTION_FEATURES))
    examples = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{file}: invalid JSON at line {number}, column {err.colno}: {err.msg}. A JSON-lines file needs one "
                "complete JSON object per line; a JSON file must start with '[' and hold an array of objects."
            ) from err
        examples.append(_check_item(item, f"{file}: line {number}"))
    return DatasetDict(train=Dataset.from_list(examples, features=INSTRUCTION_FEATURES))
