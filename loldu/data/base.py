"""Shared helpers of the data sources: argument checks, label encoding, standard ``datasets`` columns.

A source is a small function that returns a ``datasets.DatasetDict`` of *parts*. ``"train"`` is always present;
``"validation"`` and ``"test"`` are present when the source has them (whatever is missing is carved from ``"train"``
by :mod:`loldu.data.splits`), and any other part is an extra test set. Text parts have the columns ``text`` (and
``text_pair`` for sentence pairs) and ``label``; image parts ``image`` and ``label``. ``label`` is a ``ClassLabel``
(its names are the class names) or a float32 regression target.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from datasets import ClassLabel, Dataset, Features, Image, Value

SPLITS = ("train", "validation", "test")


def check_source_args(
    kind: str, registry: dict[str, Callable[..., Any]], source: str, source_args: dict | None
) -> Callable[..., Any]:
    """Checks a source name and its arguments against the source function's signature, without loading anything.

    Args:
        kind: ``"text"`` or ``"image"`` (used in messages).
        registry: Source name -> function.
        source: The source's name.
        source_args: Keyword arguments for the function.

    Returns:
        The source function.

    Raises:
        ValueError: Unknown source or unknown/missing source_args keys.
    """
    if source not in registry:
        raise ValueError(f"Unknown {kind} source {source!r}; choose one of {sorted(registry)}.")
    fn = registry[source]
    args = dict(source_args or {})
    params = inspect.signature(fn).parameters
    unknown = sorted(set(args) - set(params))
    if unknown:
        raise ValueError(f"Unknown source_args {unknown} for {kind} source {source!r}; it accepts {sorted(params)}.")
    missing = [n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in args]
    if missing:
        raise ValueError(f"The {kind} source {source!r} needs source_args {missing}.")
    return fn


def call_source(kind: str, registry: dict[str, Callable[..., Any]], source: str, source_args: dict | None) -> Any:
    """Calls a registered source function with ``source_args`` (checked by :func:`check_source_args`).

    Args:
        kind: ``"text"`` or ``"image"`` (used in messages).
        registry: Source name -> function.
        source: The source's name.
        source_args: Keyword arguments for the function.

    Returns:
        Whatever the source function returns.
    """
    return check_source_args(kind, registry, source, source_args)(**dict(source_args or {}))


def _is_integral(values: np.ndarray) -> bool:
    if values.dtype.kind in "iub":
        return True
    if values.dtype.kind == "f":
        return bool(np.all(np.isfinite(values)) and np.all(values == np.round(values)))
    return False


def infer_label_names(values: Sequence[Any]) -> list[str]:
    """Label names for a classification column given without ``label_names``.

    Integer labels 0..k give ``["0", ..., "k"]``; string labels give their sorted unique values.

    Args:
        values: The training labels.

    Returns:
        The label names.
    """
    array = np.asarray(values)
    if _is_integral(array) and array.size:
        if array.min() < 0:
            raise ValueError(f"Integer labels must be >= 0; found {int(array.min())}.")
        return [str(i) for i in range(int(array.max()) + 1)]
    return sorted({str(v) for v in values})


def encode_labels(
    values: Sequence[Any], label_names: list[str] | None, regression: bool, where: str
) -> tuple[np.ndarray, list[str]]:
    """Turns a raw label column into int64 class indices (or float32 regression targets).

    String labels are looked up in ``label_names``; integer labels are indices into it.

    Args:
        values: The raw labels.
        label_names: Known class names; None to infer them from ``values``.
        regression: Float targets instead of classes.
        where: Names the data in error messages (a file, a split).

    Returns:
        The encoded labels and the label names (inferred when not given).

    Raises:
        ValueError: Missing labels, non-numeric regression targets, or a label not in ``label_names``.
    """
    items = list(values)
    if any(v is None or (isinstance(v, float) and np.isnan(v)) for v in items):
        raise ValueError(f"{where}: some labels are missing (empty or NaN).")
    if regression:
        try:
            return np.asarray(items, dtype=np.float32), list(label_names or ["target"])
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: regression labels must be numbers ({err}).") from err
    names = [str(n) for n in label_names] if label_names is not None else infer_label_names(items)
    lookup = {name: i for i, name in enumerate(names)}
    array = np.asarray(items)
    integral = _is_integral(array) and array.dtype.kind != "b"
    keys = [str(int(v)) for v in array] if integral else [str(v) for v in items]
    if all(k in lookup for k in keys):
        return np.asarray([lookup[k] for k in keys], dtype=np.int64), names
    if integral:
        bad = sorted({int(v) for v in array if not 0 <= int(v) < len(names)})
        if not bad:
            return array.astype(np.int64), names
        raise ValueError(f"{where}: unknown label {bad[0]!r}; labels must be label names or indices into {names}.")
    unknown = sorted(set(keys) - set(lookup))
    raise ValueError(f"{where}: unknown label {unknown[0]!r}; valid label names are {names}.")


def text_dataset(
    texts: Sequence[Any], pairs: Sequence[Any] | None, labels: np.ndarray, names: list[str], regression: bool
) -> Dataset:
    """A text part in the standard columns (missing texts become ``""``).

    Args:
        texts: First text of each example.
        pairs: Second text of each example, or None.
        labels: Encoded labels (see :func:`encode_labels`).
        names: Class names (ignored for regression).
        regression: Float targets instead of classes.

    Returns:
        The part.
    """
    columns = {"text": ["" if t is None else str(t) for t in texts]}
    if pairs is not None:
        columns["text_pair"] = ["" if t is None else str(t) for t in pairs]
    features = Features({name: Value("string") for name in columns})
    features["label"] = Value("float32") if regression else ClassLabel(names=list(names))
    return Dataset.from_dict({**columns, "label": labels.tolist()}, features=features)


def image_dataset(images: Sequence[Any], labels: np.ndarray, names: list[str]) -> Dataset:
    """An image part in the standard columns (images: arrays, PIL images or file paths, decoded on access).

    Args:
        images: The images.
        labels: Class indices.
        names: Class names.

    Returns:
        The part.
    """
    features = Features(image=Image(), label=ClassLabel(names=list(names)))
    images = [str(i) if isinstance(i, Path) else i for i in images]
    return Dataset.from_dict({"image": images, "label": labels.tolist()}, features=features)
