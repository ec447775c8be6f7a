"""Data sanity before training: what makes a run's numbers meaningless (a refusal) or doubtful (a warning).

:meth:`~loldu.data.module.SplitDataModule.check` fills a :class:`SanityReport` once the splits are planned, before any
model loads: a refusal raises a ValueError that names the fix, warnings are logged once (logger ``loldu.data.sanity``),
and the whole report is kept on the data module as the JSON-ready dict ``datamodule.sanity``. Every check is cheap:
it hashes the inputs (texts, image file bytes, instruction prompts) and counts labels; no image is decoded and no
model is read.

The checks and their thresholds:

* Split sources (:func:`check_sources`): two splits read from the same file (the same path, or files with identical
  bytes) or from the same split of a dataset are refused: never train = test.
* Exact duplicate inputs across splits (:func:`check_duplicates`), counted per pair of splits. An evaluation split
  of which more than ``REFUSE_SHARE`` (50%) of the rows, and at least ``REFUSE_MIN_ROWS`` (10) rows, have an exact
  copy in train is refused (``task.data.max_train_overlap`` sets the share): its scores would measure memorisation.
  Any smaller overlap, and any overlap between two evaluation splits, is a warning. (The row floor keeps toy files of
  a handful of evaluation rows at a warning: their metrics already mean little, and ``min_split_size`` guards their
  size.) Instruction data only ever warns: its ``dedupe`` and ``group_by_instruction`` settings are the fix, and the
  paper's Alpaca hold-out is a plain random one.
* Float labels (:func:`check_labels`): classes inferred from numbers that are not all integers (0.1, 0.2, ...) are
  refused; a regression task never has classes, so never gets here.
* Too many classes (:func:`check_labels`): more distinct training labels than half the training rows, with more
  than ``MANY_CLASSES_MIN_ROWS`` (20) rows, is refused: the label column is free text or an id.
* Stray classes (:func:`check_small_classes`, :func:`check_class_folders`): a class with fewer than
  ``SMALL_CLASS_ROWS`` (5) training rows and under ``SMALL_CLASS_SHARE`` (5%) of the median class, and an image
  class folder whose name starts with ``_``, are warnings; a hidden folder (leading ``.``) is never a class and is
  reported as skipped.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, Image

log = logging.getLogger(__name__)

REFUSE_SHARE = 0.5  # an evaluation split with more than this share of exact copies of train rows is refused
REFUSE_MIN_ROWS = 10  # ... when at least this many of its rows are copies
MANY_CLASSES_MIN_ROWS = 20  # more classes than half the rows is refused above this many training rows
SMALL_CLASS_ROWS = 5  # a class with fewer training rows than this ...
SMALL_CLASS_SHARE = 0.05  # ... and under this share of the median class is a warning
REFUSAL, WARNING = "refusal", "warning"


@dataclass(frozen=True)
class Finding:
    """One result of a check.

    Attributes:
        level: ``"refusal"`` (the run cannot mean anything) or ``"warning"`` (it can, with care).
        check: The check's name: ``sources``, ``duplicates``, ``float_labels``, ``many_classes``, ``small_class``,
            ``class_folder``.
        message: One line naming the data, the problem and the fix.
    """

    level: str
    check: str
    message: str


@dataclass
class SanityReport:
    """The findings of the data checks and the duplicate counts per pair of splits.

    Attributes:
        findings: Refusals and warnings, in the order found.
        duplicates: ``"train/test"`` -> ``{"rows": rows of test, "duplicates": test rows whose input is also in
            train, "share": duplicates / rows}``, for every pair of non-empty splits.
        same_sources: The pairs of splits (``"train/test"``) read from the same file or dataset split (refused; their
            duplicates are not reported again).
    """

    findings: list[Finding] = field(default_factory=list)
    duplicates: dict[str, dict[str, Any]] = field(default_factory=dict)
    same_sources: list[str] = field(default_factory=list)

    def add(self, level: str, check: str, message: str) -> None:
        """Records a finding."""
        self.findings.append(Finding(level, check, message))

    @property
    def refusals(self) -> list[str]:
        """The messages of the refusals."""
        return [f.message for f in self.findings if f.level == REFUSAL]

    @property
    def warnings(self) -> list[str]:
        """The messages of the warnings."""
        return [f.message for f in self.findings if f.level == WARNING]

    def as_dict(self) -> dict[str, Any]:
        """``{"refusals": [...], "warnings": [...], "duplicates": {...}, "same_sources": [...]}``, ready for
        ``json.dumps``."""
        return {
            "refusals": self.refusals,
            "warnings": self.warnings,
            "duplicates": dict(self.duplicates),
            "same_sources": list(self.same_sources),
        }

    def enforce(self) -> None:
        """Logs the warnings, then raises the first refusal (the others are logged as errors first).

        Raises:
            ValueError: A refusal; its message names the fix.
        """
        for message in self.warnings:
            log.warning("Data check: %s", message)
        refusals = self.refusals
        for message in refusals[1:]:
            log.error("Data check: %s", message)
        if refusals:
            more = f" ({len(refusals) - 1} more data problem(s) logged above.)" if len(refusals) > 1 else ""
            raise ValueError(refusals[0] + more)


# -- inputs and duplicates ----------------------------------------------------------------------------------------


def _file_digest(path: str | Path) -> bytes:
    digest = hashlib.sha1()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.digest()


def input_keys(rows: Dataset) -> list[Hashable] | None:
    """One hashable key per row for what the model sees: equal keys are exact duplicate inputs.

    Text rows: ``(text, text_pair)``; instruction rows: ``(instruction, input)`` (the prompt); image rows: the SHA-1
    of the encoded image bytes (the file's bytes for images given by path), without decoding them.

    Args:
        rows: A split's rows in the standard columns (see :mod:`loldu.data.base`).

    Returns:
        The keys, or None for rows of none of these kinds.
    """
    columns = rows.column_names
    if "text" in columns:
        pairs = rows["text_pair"] if "text_pair" in columns else [None] * len(rows)
        return [hash((text, pair)) for text, pair in zip(rows["text"], pairs)]
    if "instruction" in columns:
        extra = rows["input"] if "input" in columns else [""] * len(rows)
        return [hash((instruction, given)) for instruction, given in zip(rows["instruction"], extra)]
    if isinstance(rows.features.get("image"), Image):
        raw = rows.select_columns(["image"]).cast_column("image", Image(decode=False))["image"]
        keys = []
        for image in raw:
            data = image.get("bytes")
            keys.append(hashlib.sha1(data).digest() if data is not None else _file_digest(image["path"]))
        return keys
    return None


def count_duplicates(keys: Mapping[str, Sequence[Hashable]]) -> dict[str, dict[str, Any]]:
    """Counts, for every pair of non-empty splits ``a`` before ``b`` (in ``keys``' order), the rows of ``b`` whose
    key is also in ``a``.

    Args:
        keys: Split name -> its rows' keys (see :func:`input_keys`), train first.

    Returns:
        ``"a/b"`` -> ``{"rows": len(b), "duplicates": count, "share": count / len(b)}``.
    """
    names = [name for name, k in keys.items() if len(k)]
    seen = {name: set(keys[name]) for name in names}
    out = {}
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            count = sum(key in seen[first] for key in keys[second])
            rows = len(keys[second])
            out[f"{first}/{second}"] = {"rows": rows, "duplicates": count, "share": round(count / rows, 4)}
    return out


def check_duplicates(
    report: SanityReport,
    keys: Mapping[str, Sequence[Hashable]],
    where: str,
    fix: str,
    max_share: float | None = REFUSE_SHARE,
) -> None:
    """Counts exact duplicate inputs across splits into ``report.duplicates`` and adds a finding per pair with any.

    An evaluation split with more than ``max_share`` of its rows, and at least ``REFUSE_MIN_ROWS`` rows, also in
    train is refused; any other overlap is a warning.

    Args:
        report: The report to fill.
        keys: Split name -> its rows' keys, train first.
        where: Names the data (a file, a folder, a source).
        fix: What removes the duplicates (appended to the message).
        max_share: The largest share of an evaluation split that may also be in train (None or 1: duplicates are
            only ever warnings).
    """
    report.duplicates.update(count_duplicates(keys))
    for pair, counts in report.duplicates.items():
        first, second = pair.split("/")
        count, rows = counts["duplicates"], counts["rows"]
        if not count or pair in report.same_sources:
            continue
        line = f"{where}: {pair}: {count} of {rows} {second} rows ({counts['share']:.0%}) also in {first}"
        refuse = first == "train" and max_share is not None and count >= REFUSE_MIN_ROWS and count > max_share * rows
        if refuse:
            report.add(
                REFUSAL,
                "duplicates",
                f"{line} (exact same input), so {second} scores would measure memorisation, not generalisation; "
                f"{fix} (or, knowingly, ++task.data.max_train_overlap=1 to only warn).",
            )
        else:
            why = "they score what the model memorised" if first == "train" else f"{second} repeats {first}"
            report.add(WARNING, "duplicates", f"{line} (exact same input: {why}); {fix}.")


def check_sources(report: SanityReport, sources: Mapping[str, tuple[str, str]], where: str) -> None:
    """Refuses two splits read from the same source: the same file (by path or by content) or the same dataset split.

    Args:
        report: The report to fill.
        sources: Split name -> (the setting that gave it, e.g. ``task.data.source_args.test``; a file path or a
            dataset split's description). A description that is an existing file is compared by path and content.
        where: Names the data.
    """
    names = list(sources)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            (key_a, a), (key_b, b) = sources[first], sources[second]
            same = _same_file(a, b)
            if same == "content":
                what = f"files with identical content ({a!r} and {b!r})"
            elif same == "path" or a == b:
                what = f"the same {'file' if Path(a).expanduser().is_file() else 'data'} ({a!r})"
            else:
                continue
            report.same_sources.append(f"{first}/{second}")
            report.add(
                REFUSAL,
                "sources",
                f"{where}: {key_a} and {key_b} give {what}, so {second} would be scored on the {first} data "
                f"({first} = {second}); give {second} its own data, or set {key_b}=null to carve it from train.",
            )


def _same_file(a: str, b: str) -> str | None:
    """``"path"`` or ``"content"`` when ``a`` and ``b`` are the same existing file or files with equal bytes."""
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if not (pa.is_file() and pb.is_file()):
        return None
    if pa.resolve() == pb.resolve():
        return "path"
    if pa.stat().st_size == pb.stat().st_size and _file_digest(pa) == _file_digest(pb):
        return "content"
    return None


def split_sources(source: str, source_args: Mapping[str, Any], parts: Sequence[str]) -> dict[str, tuple[str, str]]:
    """Where each part of a user-file or Hub source is read from, for :func:`check_sources`.

    Args:
        source: The source's name (``text_csv`` gives files; ``hub_text``/``hub_image`` dataset splits).
        source_args: Its arguments.
        parts: The parts the source gave.

    Returns:
        Part -> (the setting that names its data, the file or dataset split); empty for other sources.
    """
    args = dict(source_args)
    if source == "text_csv":
        return {k: (f"task.data.source_args.{k}", str(args[k])) for k in ("train", "validation", "test") if args.get(k)}
    if source not in ("hub_text", "hub_image"):
        return {}
    keys = {"train": "train_split", "validation": "validation_split", "test": "test_split"}
    given = {"train": args.get("train_split", "train"), "validation": args.get("validation_split")}
    test = args.get("test_split", "auto")
    given["test"] = "test" if test == "auto" else test
    extras = args.get("extra_test_splits") or {}
    extras = dict(extras) if hasattr(extras, "keys") else {s: s for s in extras}
    given.update(extras)
    dataset = str(args.get("path")) + (f" ({args['name']})" if args.get("name") else "")
    return {
        part: (f"task.data.source_args.{keys.get(part, 'extra_test_splits')}", f"{dataset} split {split!r}")
        for part, split in given.items()
        if split and part in parts
    }


# -- labels and classes ---------------------------------------------------------------------------------------------


def _number(name: str) -> float | None:
    try:
        value = float(name)
    except ValueError:
        return None
    return value if np.isfinite(value) else None


def check_labels(
    report: SanityReport,
    labels: np.ndarray,
    names: Sequence[str],
    inferred: bool,
    what: str,
    column_fix: str,
    regression_fix: str = "",
) -> None:
    """Refuses class labels that cannot be classes: inferred from non-integer numbers, or nearly one per row.

    Args:
        report: The report to fill.
        labels: Class index of every row of the source's training part.
        names: The class names.
        inferred: The names were inferred from the data (not given with ``label_names`` or by the dataset).
        what: Names the labels, e.g. ``"'data.csv': the label column 'label'"``.
        column_fix: How to pick another label column (e.g. ``set task.data.source_args.label_column``).
        regression_fix: How to ask for regression instead (empty where the task has none).
    """
    rows = len(labels)
    present = np.unique(labels)
    numbers = [_number(str(names[int(i)])) for i in present]
    fractional = [names[int(i)] for i, v in zip(present, numbers) if v is not None and v != round(v)]  # e.g. 0.1, 2.5
    instead = f"for a numeric target, {regression_fix}" if regression_fix else "this task has no regression setting"
    if inferred and fractional and all(v is not None for v in numbers):
        shown = ", ".join(fractional[:3]) + (", ..." if len(fractional) > 3 else "")
        report.add(
            REFUSAL,
            "float_labels",
            f"{what} holds non-integer numbers ({shown}) that became {len(present)} classes; {instead}; for classes, "
            "use integer or named labels (or list the classes in task.data.source_args.label_names).",
        )
        return
    if rows > MANY_CLASSES_MIN_ROWS and len(present) > rows / 2:
        report.add(
            REFUSAL,
            "many_classes",
            f"{what} has {len(present)} distinct values in {rows} training rows, so most classes have one example "
            f"and nothing can be learned or measured: it looks like free text or an id, not a class label; "
            f"{column_fix}" + (f" (or, {instead})" if regression_fix else "") + ".",
        )


def check_small_classes(
    report: SanityReport, labels: np.ndarray, names: Sequence[str], what: str, places: Mapping[str, str] | None = None
) -> None:
    """Warns about classes far smaller than the others (a stray folder, a typo in a label).

    A class is small with fewer than ``SMALL_CLASS_ROWS`` training rows and under ``SMALL_CLASS_SHARE`` of the
    median class (among the classes present).

    Args:
        report: The report to fill.
        labels: Class index of every row of the source's training part.
        names: The class names.
        what: Names the data.
        places: Class name -> where it comes from (e.g. its folder), for the message.
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(names))
    present = counts[counts > 0]
    if len(present) < 2:
        return
    median = float(np.median(present))
    for index, count in enumerate(counts):
        if 0 < count < SMALL_CLASS_ROWS and count < SMALL_CLASS_SHARE * median:
            name = str(names[index])
            place = (places or {}).get(name)
            subject = f"the class folder {place!r}" if place else f"the class {name!r}"
            report.add(
                WARNING,
                "small_class",
                f"{what}: {subject} has {count} training example(s) against a median of {median:g} per class: "
                + ("a stray folder? Move it out of the data folder" if place else "a typo? Fix or drop those rows")
                + " unless it is a real class.",
            )


def check_class_folders(report: SanityReport, folders: Sequence[Path], classes: Sequence[str]) -> None:
    """Reports the hidden folders (leading ``.``) skipped in image class folders and warns about class folders whose
    name starts with ``_`` (often tool output, e.g. ``__MACOSX``).

    Args:
        report: The report to fill.
        folders: The folders that hold class folders (the root, or its train/val/test folders).
        classes: The class names (class-folder names) found.
    """
    for folder in folders:
        for hidden in sorted(d for d in folder.iterdir() if d.is_dir() and d.name.startswith(".")):
            report.add(
                WARNING,
                "class_folder",
                f"skipped the hidden folder {str(hidden)!r}: a folder whose name starts with '.' is never a class "
                "(delete it or move it out of the data folder to silence this).",
            )
    for name in classes:
        if str(name).startswith("_"):
            report.add(
                WARNING,
                "class_folder",
                f"the folder {name!r} in {', '.join(repr(str(f)) for f in folders)} became a class: names starting "
                "with '_' are often not classes (e.g. __MACOSX); move it out of the data folder if it is not one.",
            )
