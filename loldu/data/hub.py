"""Hugging Face Hub sources (GLUE, any text or image classification dataset), loaded with ``datasets.load_dataset``.

They need network access (or the Hub cache). ``path`` may also be a local folder, which ``datasets.load_dataset``
reads as well; without either, loading raises a RuntimeError that says how to point the config at a local copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .base import ImagePart, ImageSource, TextPart, TextSource, encode_labels

# task -> (text columns, label names; None for regression). Test labels are hidden, so GLUE's official validation
# split is the test set here and validation is carved from train.
GLUE_TASKS: dict[str, tuple[tuple[str, ...], list[str] | None]] = {
    "cola": (("sentence",), ["unacceptable", "acceptable"]),
    "sst2": (("sentence",), ["negative", "positive"]),
    "mrpc": (("sentence1", "sentence2"), ["not_equivalent", "equivalent"]),
    "qqp": (("question1", "question2"), ["not_duplicate", "duplicate"]),
    "stsb": (("sentence1", "sentence2"), None),
    "mnli": (("premise", "hypothesis"), ["entailment", "neutral", "contradiction"]),
    "qnli": (("question", "sentence"), ["entailment", "not_entailment"]),
    "rte": (("sentence1", "sentence2"), ["entailment", "not_entailment"]),
}


def load_hub_dataset(path: str, name: str | None = None, load_kwargs: dict | None = None) -> Any:
    """Calls ``datasets.load_dataset(path, name, **load_kwargs)``, turning any failure into a RuntimeError.

    Args:
        path: Hub dataset id or local folder.
        name: Dataset configuration name, or None.
        load_kwargs: Extra keyword arguments for ``load_dataset`` (revision, data_files, ...).

    Returns:
        The loaded ``DatasetDict``.

    Raises:
        RuntimeError: The dataset could not be reached or loaded; the message explains how to use a local copy.
    """
    import datasets

    try:
        return datasets.load_dataset(path, name, **dict(load_kwargs or {}))
    except Exception as err:
        label = f"{path!r}" + (f" (configuration {name!r})" if name else "")
        raise RuntimeError(
            f"The dataset {label} could not be reached or loaded ({type(err).__name__}: {err}). Without network "
            "access, point the config at a local copy: set source_args.path to a local folder that "
            "datasets.load_dataset reads (a clone of the dataset repository, or a folder of its parquet/csv/json "
            "files), or switch to the generic 'text_csv' / 'imagefolder' source with files on disk."
        ) from err


def _split(loaded: Any, split: str, path: str) -> Any:
    try:
        return loaded[split]
    except KeyError:
        raise ValueError(f"Dataset {path!r} has no split {split!r}; it has {sorted(loaded.keys())}.") from None


def _check_columns(dataset: Any, columns: Sequence[str], where: str) -> None:
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise ValueError(f"{where}: no column(s) {missing}; the columns are {dataset.column_names}.")


def _class_names(dataset: Any, column: str) -> list[str] | None:
    names = getattr(dataset.features.get(column), "names", None)
    return list(names) if names else None


def _part_names(
    loaded: Any, train_split: str, validation_split: str | None, test_split: str | None, extra_test_splits: Any
) -> dict[str, str]:
    """Part name -> dataset split name (extras keep their names when given as a list; test "auto": "test" if any)."""
    if test_split == "auto":
        test_split = "test" if "test" in loaded else None
    parts = {"train": train_split}
    if validation_split:
        parts["validation"] = validation_split
    if test_split:
        parts["test"] = test_split
    extras = extra_test_splits or {}
    extras = dict(extras) if hasattr(extras, "keys") else {s: s for s in extras}
    clash = sorted(set(extras) & set(parts))
    if clash:
        raise ValueError(f"extra_test_splits may not be named {clash}; those names are taken.")
    return {**parts, **extras}


def _text_source(
    loaded: Any,
    path: str,
    parts: dict[str, str],
    columns: Sequence[str],
    label_column: str,
    label_names: list[str] | None,
    regression: bool,
) -> TextSource:
    if not 1 <= len(columns) <= 2:
        raise ValueError(f"text_columns must name one or two columns; got {list(columns)}.")
    out: dict[str, TextPart] = {}
    names = list(label_names) if label_names is not None else None
    for part, split in parts.items():
        dataset = _split(loaded, split, path)
        where = f"{path} split {split!r}"
        _check_columns(dataset, [*columns, label_column], where)
        if names is None and not regression:
            names = _class_names(dataset, label_column)
        texts = [("" if t is None else str(t)) for t in dataset[columns[0]]]
        pairs = [("" if t is None else str(t)) for t in dataset[columns[1]]] if len(columns) == 2 else None
        labels, names = encode_labels(list(dataset[label_column]), names, regression, where)
        out[part] = TextPart(texts, pairs, labels)
    return TextSource(out, list(names), is_regression=regression)


def glue(task: str, path: str = "nyu-mll/glue", load_kwargs: dict | None = None) -> TextSource:
    """A GLUE task. Parts: train (official train), test (official validation; ``validation_matched`` for MNLI,
    plus ``test_mismatched`` = ``validation_mismatched``). Validation is carved from train by the data module.

    Args:
        task: One of cola, sst2, mrpc, qqp, stsb (regression, 0..5 similarity), mnli, qnli, rte.
        path: Hub id or a local copy of the GLUE dataset repository.
        load_kwargs: Extra keyword arguments for ``datasets.load_dataset``.

    Returns:
        The task's parts.

    Raises:
        ValueError: Unknown task.
        RuntimeError: The dataset could not be loaded (no network and no local copy).
    """
    if task not in GLUE_TASKS:
        raise ValueError(f"Unknown GLUE task {task!r}; choose one of {sorted(GLUE_TASKS)}.")
    columns, names = GLUE_TASKS[task]
    parts = {"train": "train", "test": "validation"}
    if task == "mnli":
        parts = {"train": "train", "test": "validation_matched", "test_mismatched": "validation_mismatched"}
    loaded = load_hub_dataset(path, task, load_kwargs)
    source = _text_source(loaded, path, parts, columns, "label", names, regression=names is None)
    if source.is_regression:
        source.label_names = ["similarity"]
    return source


def hub_text(
    path: str,
    text_columns: str | Sequence[str],
    label_column: str = "label",
    name: str | None = None,
    train_split: str = "train",
    validation_split: str | None = None,
    test_split: str | None = "auto",
    extra_test_splits: Sequence[str] | dict[str, str] | None = None,
    label_names: Sequence[str] | None = None,
    regression: bool = False,
    load_kwargs: dict | None = None,
) -> TextSource:
    """Any text classification/regression dataset loadable with ``datasets.load_dataset``.

    Args:
        path: Hub id or local folder.
        text_columns: One column name, or two for sentence pairs.
        label_column: The label column (class names come from a ClassLabel feature, ``label_names``, or the sorted
            unique training labels).
        name: Configuration name.
        train_split: Split used for training.
        validation_split: Split used for validation; None carves it from train.
        test_split: Split used for testing; None carves it from train; "auto": the "test" split if the dataset
            has one, else carved.
        extra_test_splits: More test splits: a list of split names, or {exposed name: split name}.
        label_names: Class names (string labels map to their index here; integer labels index it).
        regression: Float targets (``num_labels`` = 1).
        load_kwargs: Extra keyword arguments for ``datasets.load_dataset``.

    Returns:
        The parts.

    Raises:
        RuntimeError: The dataset could not be loaded.
        ValueError: Unknown split or column, or a label outside ``label_names``.
    """
    columns = [text_columns] if isinstance(text_columns, str) else list(text_columns)
    loaded = load_hub_dataset(path, name, load_kwargs)
    parts = _part_names(loaded, train_split, validation_split, test_split, extra_test_splits)
    names = list(label_names) if label_names is not None else None
    source = _text_source(loaded, path, parts, columns, label_column, names, bool(regression))
    if source.is_regression and label_names is None:
        source.label_names = [label_column]
    return source


class HubImages(Sequence):
    """Lazy, indexable view of one image column of a ``datasets.Dataset`` (decodes an image on access)."""

    def __init__(self, dataset: Any, column: str):
        self.dataset = dataset.select_columns([column])
        self.column = column

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[int(index)][self.column]


def hub_image(
    path: str,
    image_column: str = "image",
    label_column: str = "label",
    name: str | None = None,
    train_split: str = "train",
    validation_split: str | None = None,
    test_split: str | None = "auto",
    extra_test_splits: Sequence[str] | dict[str, str] | None = None,
    label_names: Sequence[str] | None = None,
    load_kwargs: dict | None = None,
) -> ImageSource:
    """Any image classification dataset loadable with ``datasets.load_dataset`` (e.g. ``uoft-cs/cifar10`` with
    ``image_column="img"``; ``uoft-cs/cifar100`` with ``label_column="fine_label"``).

    Args:
        path: Hub id or local folder.
        image_column: Column holding the images.
        label_column: Column holding the labels.
        name: Configuration name.
        train_split: Split used for training.
        validation_split: Split used for validation; None carves it from train.
        test_split: Split used for testing; None carves it from train; "auto": the "test" split if the dataset
            has one, else carved.
        extra_test_splits: More test splits: a list of split names, or {exposed name: split name}.
        label_names: Class names; default: the ClassLabel feature's names or the sorted unique training labels.
        load_kwargs: Extra keyword arguments for ``datasets.load_dataset``.

    Returns:
        The parts, with images decoded lazily.

    Raises:
        RuntimeError: The dataset could not be loaded.
        ValueError: Unknown split or column, or a label outside ``label_names``.
    """
    loaded = load_hub_dataset(path, name, load_kwargs)
    parts = _part_names(loaded, train_split, validation_split, test_split, extra_test_splits)
    names = list(label_names) if label_names is not None else None
    out: dict[str, ImagePart] = {}
    for part, split in parts.items():
        dataset = _split(loaded, split, path)
        where = f"{path} split {split!r}"
        _check_columns(dataset, [image_column, label_column], where)
        if names is None:
            names = _class_names(dataset, label_column)
        labels, names = encode_labels(list(dataset[label_column]), names, False, where)
        out[part] = ImagePart(HubImages(dataset, image_column), labels)
    return ImageSource(out, list(names))
