"""Hugging Face Hub sources (GLUE, any text or image classification dataset), loaded with ``datasets.load_dataset``.

They need network access (or the Hub cache). ``path`` may also be a local folder, which ``datasets.load_dataset``
reads as well; without either, loading raises a RuntimeError that says how to point the config at a local copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from datasets import ClassLabel, DatasetDict

from loldu.data.base import encode_labels, text_dataset
from loldu.data.hub.catalog import check_hub_schema

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
        The loaded ``DatasetDict``, checked against :mod:`loldu.data.hub.catalog`'s record when ``path`` is a
        recorded hub id at its recorded revision.

    Raises:
        RuntimeError: The dataset could not be reached or loaded; the message explains how to use a local copy.
        ValueError: The data differs from the catalogue's record of that revision.
    """
    import datasets

    kwargs = dict(load_kwargs or {})
    try:
        loaded = datasets.load_dataset(path, name, **kwargs)
    except Exception as err:
        label = f"{path!r}" + (f" (configuration {name!r})" if name else "")
        raise RuntimeError(
            f"The dataset {label} could not be reached or loaded ({type(err).__name__}: {err}). Without network "
            "access, point the config at a local copy: set source_args.path to a local folder that "
            "datasets.load_dataset reads (a clone of the dataset repository, or a folder of its parquet/csv/json "
            "files), or switch to the generic 'text_csv' / 'imagefolder' source with files on disk."
        ) from err
    check_hub_schema(loaded, path, name, kwargs.get("revision"))
    return loaded


def _with_revision(load_kwargs: dict | None, revision: str | None) -> dict:
    kwargs = dict(load_kwargs or {})
    if revision is not None:
        if kwargs.get("revision", revision) != revision:
            raise ValueError(f"revision={revision!r} and load_kwargs.revision={kwargs['revision']!r}: set one of them.")
        kwargs["revision"] = revision
    return kwargs


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


def _labels(dataset: Any, column: str, names: list[str] | None, regression: bool, where: str) -> Any:
    if names is None and not regression:
        names = _class_names(dataset, column)
    return encode_labels(dataset[column], names, regression, where)


def _text_parts(
    loaded: Any,
    path: str,
    parts: dict[str, str],
    columns: Sequence[str],
    label_column: str,
    label_names: list[str] | None,
    regression: bool,
) -> DatasetDict:
    if not 1 <= len(columns) <= 2:
        raise ValueError(f"text_columns must name one or two columns; got {list(columns)}.")
    out = {}
    names = list(label_names) if label_names is not None else None
    for part, split in parts.items():
        dataset = _split(loaded, split, path)
        where = f"{path} split {split!r}"
        _check_columns(dataset, [*columns, label_column], where)
        labels, names = _labels(dataset, label_column, names, regression, where)
        pairs = dataset[columns[1]] if len(columns) == 2 else None
        out[part] = text_dataset(dataset[columns[0]], pairs, labels, names, regression)
    return DatasetDict(out)


def glue(
    task: str, path: str = "nyu-mll/glue", revision: str | None = None, load_kwargs: dict | None = None
) -> DatasetDict:
    """A GLUE task. Parts: train (official train), test (official validation; ``validation_matched`` for MNLI,
    plus ``test_mismatched`` = ``validation_mismatched``). Validation is carved from train by the data module.

    Args:
        task: One of cola, sst2, mrpc, qqp, stsb (regression, 0..5 similarity), mnli, qnli, rte.
        path: Hub id or a local copy of the GLUE dataset repository.
        revision: The hub revision (a commit SHA pins the data; the task configs pin
            :data:`loldu.data.hub.catalog.GLUE_REVISION`); None: the default branch.
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
    loaded = load_hub_dataset(path, task, _with_revision(load_kwargs, revision))
    return _text_parts(loaded, path, parts, columns, "label", names, regression=names is None)


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
    revision: str | None = None,
    load_kwargs: dict | None = None,
) -> DatasetDict:
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
        revision: The hub revision (a commit SHA pins the data); None: the default branch.
        load_kwargs: Extra keyword arguments for ``datasets.load_dataset``.

    Returns:
        The parts.

    Raises:
        RuntimeError: The dataset could not be loaded.
        ValueError: Unknown split or column, or a label outside ``label_names``.
    """
    columns = [text_columns] if isinstance(text_columns, str) else list(text_columns)
    loaded = load_hub_dataset(path, name, _with_revision(load_kwargs, revision))
    parts = _part_names(loaded, train_split, validation_split, test_split, extra_test_splits)
    names = list(label_names) if label_names is not None else None
    return _text_parts(loaded, path, parts, columns, label_column, names, bool(regression))


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
    revision: str | None = None,
    load_kwargs: dict | None = None,
) -> DatasetDict:
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
        revision: The hub revision (a commit SHA pins the data); None: the default branch.
        load_kwargs: Extra keyword arguments for ``datasets.load_dataset``.

    Returns:
        The parts (``image``, decoded on access, and ``label``).

    Raises:
        RuntimeError: The dataset could not be loaded.
        ValueError: Unknown split or column, or a label outside ``label_names``.
    """
    loaded = load_hub_dataset(path, name, _with_revision(load_kwargs, revision))
    parts = _part_names(loaded, train_split, validation_split, test_split, extra_test_splits)
    names = list(label_names) if label_names is not None else None
    out = {}
    for part, split in parts.items():
        dataset = _split(loaded, split, path)
        where = f"{path} split {split!r}"
        _check_columns(dataset, [image_column, label_column], where)
        labels, names = _labels(dataset, label_column, names, False, where)
        images = dataset.select_columns([image_column])
        if image_column != "image":
            images = images.rename_column(image_column, "image")
        out[part] = images.add_column("label", labels.tolist()).cast_column("label", ClassLabel(names=names))
    return DatasetDict(out)


def alpaca_hub(dataset: str = "yahma/alpaca-cleaned", split: str = "train", revision: str | None = None) -> DatasetDict:
    """An Alpaca-format instruction dataset from the Hugging Face Hub (or a local folder ``datasets`` reads).

    Args:
        dataset: Hub dataset id with columns ``instruction``, ``input`` (optional) and ``output``, or a local folder.
        split: The split to read.
        revision: Git revision (branch, tag or commit) of the dataset, or None for the default branch.

    Returns:
        One ``"train"`` part with string ``instruction``, ``input`` and ``output`` (missing values: ``""``).

    Raises:
        RuntimeError: The dataset could not be loaded (e.g. no network); the message names the offline route.
        ValueError: Unknown split, or missing columns.
    """
    from datasets import Dataset

    from loldu.data.packaged import INSTRUCTION_FEATURES

    try:
        loaded = load_hub_dataset(dataset, None, {"revision": revision} if revision else None)
    except RuntimeError as err:
        cause = err.__cause__ if err.__cause__ is not None else err
        raise RuntimeError(
            f"The instruction dataset {dataset!r} could not be loaded ({type(cause).__name__}: {cause}). Without "
            f"network access, download it elsewhere as a JSON or JSON-lines file of objects with 'instruction', "
            f"'input' and 'output' fields, copy it here, and use source='instruction_json' with "
            f"source_args.path set to that file."
        ) from err
    data = _split(loaded, split, dataset)
    missing = [c for c in ("instruction", "output") if c not in data.column_names]
    if missing:
        raise ValueError(
            f"Dataset {dataset!r} split {split!r} has no column(s) {missing}; its columns are {data.column_names} "
            f"(an instruction dataset needs 'instruction' and 'output', and optionally 'input')."
        )
    columns = {c: data[c] if c in data.column_names else [""] * len(data) for c in INSTRUCTION_FEATURES}
    rows = {c: ["" if v is None else str(v) for v in values] for c, values in columns.items()}
    return DatasetDict(train=Dataset.from_dict(rows, features=INSTRUCTION_FEATURES))
