"""The one LightningDataModule of every family: load a source, check it, split it with :mod:`.splits`, serve loaders.

A family (text, image, instruction, DreamBooth) subclasses :class:`SplitDataModule` and says what its held-out
splits are (:meth:`~SplitDataModule._held_out`), how to turn a split's rows into model inputs
(:meth:`~SplitDataModule._build`) and which collator batches them (:meth:`~SplitDataModule.collator`). Once the
splits are planned, the checks of :mod:`.sanity` run on them (duplicates across splits, labels that cannot be
classes, stray class folders): refusals raise, warnings are logged, and the report is kept in ``.sanity``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import lightning as L
import numpy as np
import torch
from datasets import ClassLabel, Dataset, DatasetDict
from torch.utils.data import DataLoader

from loldu.data.base import SPLITS, call_source, check_source_args
from loldu.data.sanity import (
    REFUSE_SHARE,
    SanityReport,
    check_duplicates,
    check_labels,
    check_small_classes,
    check_sources,
    input_keys,
    split_sources,
)
from loldu.data.splits import (
    MIN_SPLIT_SIZE,
    check_classes,
    check_count,
    check_limit,
    limit,
    split,
    split_rng,
    split_size_message,
    stratified_order,
)


def class_labels(part: Dataset, column: str = "label") -> np.ndarray | None:
    """The class index of every row when ``column`` is a ``ClassLabel`` (None otherwise: no stratification)."""
    if not isinstance(part.features.get(column), ClassLabel):
        return None
    return np.asarray(part[column], dtype=np.int64)


class SplitDataModule(L.LightningDataModule):
    """Base class: reads ``source`` once (:meth:`check`), makes seeded splits, builds them (:meth:`setup`), serves
    loaders.

    Args:
        source: A name in ``SOURCES``.
        source_args: Keyword arguments of the source function.
        batch_size: Training batch size.
        eval_batch_size: Validation/test batch size (None: ``batch_size``).
        num_workers: DataLoader worker processes.
        seed: Seed of the splits, the limits and the training shuffle.
        limit_train: Cap on the number of training examples (a seeded prefix of the split), or None.
        limit_eval: Cap on the number of examples of each evaluation split, or None.
    """

    SOURCES: dict[str, Callable[..., Any]] = {}
    KIND = "data"
    SORT_SPLITS = True  # build each split in source order (else in the seeded split order)

    def __init__(
        self,
        source: str,
        source_args: dict | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        limit_train: int | None = None,
        limit_eval: int | None = None,
    ):
        super().__init__()
        if self.SOURCES:  # a module with its own reader (DreamBooth) has no registry
            check_source_args(self.KIND, self.SOURCES, source, source_args)
        self.source = source
        self.source_args = dict(source_args or {})
        self.batch_size = check_count(batch_size, "batch_size")
        self.eval_batch_size = (
            self.batch_size if eval_batch_size is None else check_count(eval_batch_size, "eval_batch_size")
        )
        self.num_workers = check_count(num_workers, "num_workers", 0)
        self.seed = int(seed)
        self.limit_train = check_limit(limit_train, "limit_train")
        self.limit_eval = check_limit(limit_eval, "limit_eval")
        self.parts: DatasetDict | None = None
        self.split_indices: dict[str, tuple[str, np.ndarray]] = {}
        self.sanity: dict[str, Any] = {}
        self.datasets: dict[str, Any] = {}
        self._generator: torch.Generator | None = None

    # -- hooks for subclasses -------------------------------------------------------------------------------------

    def _held_out(self) -> dict[str, int | float]:
        """Held-out split -> size, in the order they are filled from the train part (when the source lacks them)."""
        raise NotImplementedError

    def _size_keys(self) -> dict[str, str]:
        """Held-out split -> the setting that sizes it (for messages)."""
        return {"test": "test_fraction", "validation": "val_fraction"}

    def _load(self) -> DatasetDict:
        return call_source(self.KIND, self.SOURCES, self.source, self.source_args)

    def _split_rng(self) -> np.random.Generator:
        return split_rng(self.seed, "train")

    def _groups(self, train: Dataset) -> list[np.ndarray] | None:
        return None

    def _build(self, split: str, rows: Dataset) -> Any:
        raise NotImplementedError

    def _check_plan(self, parts: DatasetDict, plan: dict[str, tuple[str, np.ndarray]]) -> None:
        """Refuses a split plan (before limits) that cannot give meaningful results; nothing by default."""

    def _check_data(self, report: SanityReport, parts: DatasetDict) -> None:
        """Adds the family's data checks (sources, labels, folders) to ``report``; nothing by default."""

    def _duplicates_fix(self) -> str:
        """What removes exact duplicate inputs across splits (ends the duplicates message)."""
        return "drop the repeated examples from the data so that every input is in one split only"

    def _max_train_overlap(self) -> float | None:
        """The largest share of an evaluation split that may repeat training inputs (None: only warn)."""
        return None

    def collator(self) -> Callable | None:
        """The batch collator (None: torch's default collate)."""
        return None

    def attach(self, **model_parts: Any) -> None:
        """Sets what the data module takes from the model bundle (tokenizer, image size...), after :meth:`check`
        has read the data and before :meth:`setup` builds the model inputs.

        Args:
            **model_parts: Constructor arguments of this module that come from the model (see
                ``TaskFamily.data_kwargs``).

        Raises:
            TypeError: A name that is not an attribute of this module.
        """
        unknown = sorted(name for name in model_parts if not hasattr(self, name))
        if unknown:
            raise TypeError(f"{type(self).__name__} takes no model part(s) {unknown}.")
        for name, value in model_parts.items():
            setattr(self, name, value)

    # -- reading and splitting ------------------------------------------------------------------------------------

    def _plan(self, parts: DatasetDict) -> dict[str, tuple[str, np.ndarray]]:
        if "train" not in parts:
            raise ValueError(f"A source must provide a 'train' part; it gave {sorted(parts)}.")
        train = parts["train"]
        held_out = {name: size for name, size in self._held_out().items() if name not in parts}
        what = f"The source {self.source!r}"
        labels, groups = class_labels(train), self._groups(train)
        carved = split(len(train), held_out, self._split_rng(), labels, groups, what, self._size_keys())
        plan = {name: ("train", indices) for name, indices in carved.items()}
        for name, part in parts.items():
            if name != "train":
                plan[name] = (name, stratified_order(len(part), class_labels(part), split_rng(self.seed, name)))
        self._check_plan(parts, plan)
        out = {}
        for name in (*SPLITS, *(p for p in plan if p not in SPLITS)):
            part, indices = plan[name]
            indices = limit(indices, self.limit_train if name == "train" else self.limit_eval)
            out[name] = (part, np.sort(indices) if self.SORT_SPLITS else indices)
        return out

    def check(self) -> None:
        """Reads and checks the source and plans the splits (once), without a tokenizer or model; then runs the data
        checks of :mod:`.sanity` on the planned splits, keeps their report in :attr:`sanity` (``{"refusals",
        "warnings", "duplicates", "same_sources"}``, JSON-ready) and logs the warnings.

        Raises:
            ValueError, FileNotFoundError, RuntimeError: Bad or unreachable data; the message names the fix.
        """
        if self.parts is None:
            parts = self._load()
            plan = self._plan(parts)
            report = self._sanity(parts, plan)
            self.sanity = report.as_dict()
            report.enforce()
            self.parts, self.split_indices = parts, plan

    def where(self) -> str:
        """Names the data in messages: the file or folder of a user source, else the source's name."""
        for key in ("train", "root", "path"):
            if isinstance(self.source_args.get(key), str):
                return f"{self.source_args[key]!r}"
        return f"the source {self.source!r}"

    def _sanity(self, parts: DatasetDict, plan: dict[str, tuple[str, np.ndarray]]) -> SanityReport:
        """The checks of :mod:`.sanity` on the planned splits (after limits): the family's own
        (:meth:`_check_data`), then exact duplicate inputs across splits."""
        report = SanityReport()
        self._check_data(report, parts)
        if sum(len(indices) > 0 for _, indices in plan.values()) > 1:
            keys = {name: input_keys(parts[part].select(indices)) for name, (part, indices) in plan.items()}
            if all(k is not None for k in keys.values()):
                check_duplicates(report, keys, self.where(), self._duplicates_fix(), self._max_train_overlap())
        return report

    def rows(self, split: str) -> Dataset:
        """The source rows of a split (after :meth:`check`), in the split's order."""
        part, indices = self.split_indices[split]
        return self.parts[part].select(indices)

    def setup(self, stage: str | None = None) -> None:
        """Runs :meth:`check`, then builds every split's dataset (once; later calls do nothing).

        Args:
            stage: Lightning's stage (unused: all splits are built together).
        """
        if self.datasets:
            return
        self.check()
        self.datasets = {name: self._build(name, self.rows(name)) for name in self.split_indices}
        self._generator = torch.Generator().manual_seed(self.seed)

    def _require_setup(self) -> None:
        if not self.datasets:
            raise RuntimeError(f"{type(self).__name__}: call setup() first.")

    # -- loaders --------------------------------------------------------------------------------------------------

    def _loader(self, split: str, train: bool = False) -> DataLoader:
        self._require_setup()
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            generator=self._generator if train else None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=self.collator(),
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches (seeded generator; the order changes each epoch, reproducibly)."""
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches, in a fixed order."""
        return self._loader("validation")

    def test_dataloader(self) -> DataLoader:
        """Test batches, in a fixed order (extra test sets: :meth:`extra_test_dataloaders`)."""
        return self._loader("test")

    @property
    def extra_test_splits(self) -> list[str]:
        """Names of the source's additional test sets (e.g. ``test_mismatched`` for MNLI); needs setup()."""
        self._require_setup()
        return [name for name in self.datasets if name not in SPLITS]

    def extra_test_dataloaders(self) -> dict[str, DataLoader]:
        """Loaders of the additional test sets, by name (empty for most sources)."""
        return {name: self._loader(name) for name in self.extra_test_splits}

    def split_sizes(self) -> dict[str, int]:
        """Number of examples per split after setup() (after limits)."""
        self._require_setup()
        return {name: len(dataset) for name, dataset in self.datasets.items()}


class LabelledDataModule(SplitDataModule):
    """A :class:`SplitDataModule` whose rows carry a ``label`` column (classification or regression).

    :meth:`check` also refuses classification data with fewer than two classes in training, and splits (before
    ``limit_train`` / ``limit_eval``) smaller than ``min_split_size`` rows, whose metrics would mean nothing. Then the
    checks of :mod:`.sanity` refuse two splits read from the same file or dataset split, labels that cannot be
    classes (non-integer numbers, nearly one class per row) and evaluation splits that mostly repeat training inputs,
    and warn about smaller overlaps and stray classes (see :attr:`sanity`).

    Args:
        *args: See :class:`SplitDataModule`.
        min_split_size: Fewest rows a train, validation or test split may have.
        max_train_overlap: The largest share (0 to 1) of a validation or test split whose inputs may be exact copies
            of training inputs; more is refused when at least 10 rows are copies (1: only warn).
        **kwargs: See :class:`SplitDataModule`.
    """

    def __init__(
        self,
        *args: Any,
        min_split_size: int = MIN_SPLIT_SIZE,
        max_train_overlap: float = REFUSE_SHARE,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.min_split_size = check_count(min_split_size, "min_split_size")
        if isinstance(max_train_overlap, bool) or not isinstance(max_train_overlap, (int, float)):
            raise ValueError(f"max_train_overlap must be a share from 0 to 1; got {max_train_overlap!r}.")
        if not 0.0 <= float(max_train_overlap) <= 1.0:
            raise ValueError(f"max_train_overlap must be a share from 0 to 1; got {max_train_overlap!r}.")
        self.max_train_overlap = float(max_train_overlap)

    def _one_class_fix(self) -> str:
        """Appended to the one-class error: what else the user may have meant."""
        return ""

    def _check_plan(self, parts: DatasetDict, plan: dict[str, tuple[str, np.ndarray]]) -> None:
        labels = class_labels(parts["train"])
        if labels is not None:
            check_classes(labels, parts["train"].features["label"].names, self.where(), self._one_class_fix())
        small = {name: len(indices) for name, (_, indices) in plan.items() if len(indices) < self.min_split_size}
        if small:
            raise ValueError(split_size_message(small, plan, self.min_split_size, self._size_keys(), self.where()))

    def _describe(self) -> dict[str, Any]:
        """What the source says before loading: ``label_names`` (None: inferred from the data) and more."""
        raise NotImplementedError

    # -- data checks (see :mod:`.sanity`) ---------------------------------------------------------------------------

    def _max_train_overlap(self) -> float | None:
        return None if self.max_train_overlap >= 1.0 else self.max_train_overlap

    def _labels_inferred(self) -> bool:
        """Whether class names come from the label values (a source that reads a label column, without
        ``label_names``): only then can numbers have become classes by mistake."""
        params = inspect.signature(self.SOURCES[self.source]).parameters if self.source in self.SOURCES else {}
        return "label_column" in params and self.source_args.get("label_names") is None

    def _label_what(self) -> str:
        """Names the labels in messages."""
        return f"{self.where()}: the label column {self.source_args.get('label_column', 'label')!r}"

    def _label_column_fix(self) -> str:
        """How to point the data at the column that holds the classes."""
        return "set task.data.source_args.label_column to the column that holds the classes"

    def _regression_fix(self) -> str:
        """How to ask for regression instead of classes (empty: the family has no regression)."""
        return ""

    def _class_places(self, names: list[str]) -> dict[str, str]:
        """Class name -> where its examples come from (e.g. its folder), for messages; empty by default."""
        return {}

    def _check_data(self, report: SanityReport, parts: DatasetDict) -> None:
        check_sources(report, split_sources(self.source, self.source_args, list(parts)), self.where())
        labels = class_labels(parts["train"])
        if labels is None:
            return
        names = list(parts["train"].features["label"].names)
        inferred = self._labels_inferred()
        check_labels(
            report, labels, names, inferred, self._label_what(), self._label_column_fix(), self._regression_fix()
        )
        check_small_classes(report, labels, names, self.where(), self._class_places(names))

    @property
    def label_names(self) -> list[str]:
        """Class names, index i naming label i (regression: ``[target name]``); known before setup() unless the
        source infers them from the data."""
        feature = self.parts["train"].features.get("label") if self.parts is not None else None
        if isinstance(feature, ClassLabel):
            return list(feature.names)
        names = self._describe()["label_names"]
        if names is None:
            raise RuntimeError(f"{type(self).__name__}: label_names of source {self.source!r} are known after setup().")
        return names

    @property
    def is_regression(self) -> bool:
        """True when labels are float targets (``num_labels`` is then 1); known after :meth:`check`."""
        if self.parts is not None:
            return not isinstance(self.parts["train"].features["label"], ClassLabel)
        return bool(self._describe()["is_regression"])

    @property
    def num_labels(self) -> int:
        """Number of model outputs: the number of classes, 1 for regression."""
        return len(self.label_names)
