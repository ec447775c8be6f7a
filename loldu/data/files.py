"""User-file sources: CSV/TSV text files and image folders. Relative paths resolve against the working directory."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .base import ImagePart, ImageSource, TextPart, TextSource, encode_labels

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")
SPLIT_FOLDERS = {
    "train": "train",
    "val": "validation",
    "valid": "validation",
    "validation": "validation",
    "test": "test",
}


def _existing_file(path: str | Path, key: str) -> Path:
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"source_args.{key}: the file {str(file)!r} does not exist.")
    return file


def read_table(path: str | Path, key: str, delimiter: str | None = None) -> Any:
    """Reads a CSV (or TSV, by extension ``.tsv``/``.tab``) file into a pandas DataFrame.

    Cells are kept as written ("NA", "null" stay text); only empty cells are missing.

    Args:
        path: The file.
        key: The config key that gave it (for messages), e.g. ``"train"``.
        delimiter: Overrides the delimiter chosen by extension.

    Returns:
        The DataFrame.

    Raises:
        FileNotFoundError: The file does not exist (names the path and the key).
        ValueError: The file is empty or has no data rows.
    """
    import pandas as pd

    file = _existing_file(path, key)
    tab = file.suffix.lower() in (".tsv", ".tab")
    sep = delimiter or ("\t" if tab else ",")
    quoting = csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL
    try:
        frame = pd.read_csv(file, sep=sep, quoting=quoting, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        raise ValueError(f"source_args.{key}: the file {str(file)!r} is empty.") from None
    if len(frame) == 0:
        raise ValueError(f"source_args.{key}: the file {str(file)!r} is empty (a header but no rows).")
    return frame


def text_csv(
    train: str,
    text_columns: str | Sequence[str] = "text",
    label_column: str = "label",
    validation: str | None = None,
    test: str | None = None,
    label_names: Sequence[str] | None = None,
    regression: bool = False,
    delimiter: str | None = None,
) -> TextSource:
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

    Returns:
        The parts.

    Raises:
        FileNotFoundError: A file does not exist.
        ValueError: Empty file, missing column (lists the file's columns), or a label not in the label names.
    """
    columns = [text_columns] if isinstance(text_columns, str) else list(text_columns)
    if not 1 <= len(columns) <= 2:
        raise ValueError(f"source_args.text_columns must name one or two columns; got {columns}.")
    names = list(label_names) if label_names is not None else None
    parts: dict[str, TextPart] = {}
    for key, path in (("train", train), ("validation", validation), ("test", test)):
        if path is None:
            continue
        frame = read_table(path, key, delimiter)
        missing = [c for c in [*columns, label_column] if c not in frame.columns]
        if missing:
            raise ValueError(
                f"source_args.{key}: the file {str(path)!r} has no column(s) {missing}; "
                f"its columns are {list(map(str, frame.columns))}."
            )
        texts = [frame[c].fillna("").astype(str).tolist() for c in columns]
        labels, names = encode_labels(frame[label_column].tolist(), names, bool(regression), f"{path}")
        parts[key] = TextPart(texts[0], texts[1] if len(texts) == 2 else None, labels)
    if regression and label_names is None:
        names = [label_column]
    return TextSource(parts, list(names), is_regression=bool(regression))


def load_image(path: str | Path) -> Any:
    """Opens and decodes an image file with PIL.

    Args:
        path: The file.

    Returns:
        The decoded PIL image.

    Raises:
        ValueError: The file cannot be decoded as an image (names the file).
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except Exception as err:
        raise ValueError(f"Cannot decode the image file {str(path)!r}: {err}") from err


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
            raise ValueError(f"The class folder {str(class_dir)!r} is empty: it holds no images {list(extensions)}.")
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


def imagefolder(root: str, extensions: Sequence[str] | None = None, verify: bool = True) -> ImageSource:
    """Images in class folders: ``root/{train,val,test}/<class>/*`` or just ``root/<class>/*`` (then split).

    Class names are the sorted class-folder names of ``train``; images are decoded lazily with PIL.

    Args:
        root: The dataset folder. A ``val`` (or ``valid``/``validation``) or ``test`` folder missing from the split
            layout is carved from train.
        extensions: Image file extensions to use (default: common PIL formats); other files are ignored.
        verify: Check every image decodes during setup (one pass over the files' headers and data).

    Returns:
        The parts.

    Raises:
        FileNotFoundError: The root folder does not exist.
        ValueError: An empty folder, an undecodable image, or class sets differing between splits.
    """
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"source_args.root: the folder {str(folder)!r} does not exist.")
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
        parts[split] = ImagePart(files, labels)
    return ImageSource(parts, names)
