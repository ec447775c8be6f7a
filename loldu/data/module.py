"""The LightningDataModule logic shared by the text and image data modules: load a source, split it, serve loaders."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .base import SPLITS, call_source, check_source_args
from .splits import make_splits


def split_loader(module: Any, split: str, train: bool, collate_fn: Callable | None) -> DataLoader:
    """The DataLoader of one split of a set-up data module (``datasets``, ``batch_size``, ``eval_batch_size``,
    ``num_workers`` and the seeded ``_generator``): shuffled with the generator for training, in order otherwise."""
    return DataLoader(
        module.datasets[split],
        batch_size=module.batch_size if train else module.eval_batch_size,
        shuffle=train,
        generator=module._generator if train else None,
        num_workers=module.num_workers,
        persistent_workers=module.num_workers > 0,
        collate_fn=collate_fn,
    )


class SplitDataModule(L.LightningDataModule):
    """Base class: loads ``source`` with ``source_args`` once in :meth:`setup`, makes seeded splits, serves loaders.

    Subclasses set ``SOURCES`` (name -> source function) and ``KIND``, and implement :meth:`_build_dataset` and
    :meth:`_collate_fn`.

    Args:
        source: A name in ``SOURCES``.
        source_args: Keyword arguments of the source function.
        batch_size: Training batch size.
        eval_batch_size: Validation/test batch size (None: ``batch_size``).
        num_workers: DataLoader worker processes.
        seed: Seed of the splits, the limits and the training shuffle.
        val_fraction: Fraction of train carved into validation when the source has no validation split.
        test_fraction: Fraction of train carved into test when the source has no test split.
        limit_train: Cap on the number of training examples (a seeded, class-balanced subset), or None.
        limit_eval: Cap on the number of examples of each evaluation split, or None.
    """

    SOURCES: dict[str, Callable[..., Any]] = {}
    KIND = "data"

    def __init__(
        self,
        source: str,
        source_args: dict | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        limit_train: int | None = None,
        limit_eval: int | None = None,
    ):
        super().__init__()
        check_source_args(self.KIND, self.SOURCES, source, source_args)
        if int(batch_size) < 1 or (eval_batch_size is not None and int(eval_batch_size) < 1):
            raise ValueError(f"batch sizes must be >= 1; got {batch_size} and {eval_batch_size}.")
        self.source = source
        self.source_args = dict(source_args or {})
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size) if eval_batch_size is not None else self.batch_size
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.val_fraction = float(val_fraction)
        self.test_fraction = float(test_fraction)
        self.limit_train = None if limit_train is None else int(limit_train)
        self.limit_eval = None if limit_eval is None else int(limit_eval)
        self.datasets: dict[str, Dataset] = {}
        self.split_indices: dict[str, tuple[str, np.ndarray]] = {}
        self._label_names: list[str] | None = None
        self._generator: torch.Generator | None = None

    # -- hooks for subclasses -------------------------------------------------------------------------------------

    def _build_dataset(self, source: Any, split: str, part: str, indices: np.ndarray) -> Dataset:
        raise NotImplementedError

    def _collate_fn(self) -> Callable | None:
        return None

    def _stratify_labels(self, source: Any, part: str) -> np.ndarray | None:
        return source.parts[part].labels

    def _on_loaded(self, source: Any) -> None:
        self._label_names = list(source.label_names)

    # -- LightningDataModule API ----------------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        """Loads the source, splits it and builds every split's dataset (once; later calls do nothing).

        Args:
            stage: Lightning's stage (unused: all splits are built together).
        """
        if self.datasets:
            return
        source = call_source(self.KIND, self.SOURCES, self.source, self.source_args)
        self._on_loaded(source)
        sizes = {name: len(part) for name, part in source.parts.items()}
        labels = {name: self._stratify_labels(source, name) for name in source.parts}
        self.split_indices = make_splits(
            sizes, labels, self.seed, self.val_fraction, self.test_fraction, self.limit_train, self.limit_eval
        )
        self.datasets = {
            split: self._build_dataset(source, split, part, indices)
            for split, (part, indices) in self.split_indices.items()
        }
        self._generator = torch.Generator().manual_seed(self.seed)

    def _require_setup(self) -> None:
        if not self.datasets:
            raise RuntimeError(f"{type(self).__name__}: call setup() first.")

    def _loader(self, split: str, train: bool = False) -> DataLoader:
        self._require_setup()
        return split_loader(self, split, train, self._collate_fn())

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
        """Loaders of the additional test sets, by name (empty for most sources).

        Returns:
            Split name -> DataLoader.
        """
        return {name: self._loader(name) for name in self.extra_test_splits}

    def split_sizes(self) -> dict[str, int]:
        """Number of examples per split after setup().

        Returns:
            Split name -> size.
        """
        self._require_setup()
        return {name: len(indices) for name, (_, indices) in self.split_indices.items()}

    # -- label metadata -------------------------------------------------------------------------------------------

    @classmethod
    def describe(cls, source: str, source_args: dict | None = None) -> dict[str, Any]:
        """What is known about a source's labels without loading it.

        Args:
            source: The source name.
            source_args: Its arguments.

        Returns:
            ``{"num_labels", "is_regression", "label_names"}``; values unknown before loading are None.
        """
        raise NotImplementedError

    def _described(self, key: str) -> Any:
        value = type(self).describe(self.source, self.source_args).get(key)
        if value is None:
            raise RuntimeError(f"{type(self).__name__}: {key} of source {self.source!r} is known after setup().")
        return value

    @property
    def label_names(self) -> list[str]:
        """Class names (for regression: ``[target name]``)."""
        return list(self._label_names) if self._label_names is not None else self._described("label_names")

    @property
    def num_labels(self) -> int:
        """Number of model outputs: the number of classes, 1 for regression."""
        return len(self._label_names) if self._label_names is not None else self._described("num_labels")
