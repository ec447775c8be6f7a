"""Image classification data for vision models (``pixel_values`` at the model's input size and normalisation)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, DatasetDict

from loldu.data.files import imagefolder, split_folders
from loldu.data.hub import hub_image
from loldu.data.module import LabelledDataModule
from loldu.data.packaged import ANIMAL_NAMES, animal_mnist, digits
from loldu.data.sanity import SanityReport, check_class_folders
from loldu.data.splits import check_size

IMAGE_SOURCES: dict[str, Callable[..., Any]] = {
    "animal_mnist": animal_mnist,
    "digits": digits,
    "hub_image": hub_image,
    "imagefolder": imagefolder,
}


def build_transform(
    image_size: int, mean: Sequence[float], std: Sequence[float], train: bool, augment: bool = True
) -> Callable:
    """The torchvision pipeline from a PIL image to a normalised float tensor (C, image_size, image_size).

    Args:
        image_size: Output height and width.
        mean: Per-channel mean of the model's normalisation.
        std: Per-channel standard deviation.
        train: Training transform (augmented when ``augment``) or evaluation transform.
        augment: Training uses RandomResizedCrop(scale 0.8-1) + RandomHorizontalFlip; otherwise (and for
            evaluation) Resize + CenterCrop.

    Returns:
        The transform.
    """
    from torchvision.transforms import v2

    if train and augment:
        geometry = [v2.RandomResizedCrop(image_size, scale=(0.8, 1.0), antialias=True), v2.RandomHorizontalFlip()]
    else:
        geometry = [v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size)]
    return v2.Compose(
        [*geometry, v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    )


class PixelTransform:
    """A ``Dataset.with_transform`` function: decoded images -> ``pixel_values`` tensors, ``label`` -> ``labels``.

    A class rather than a closure so that DataLoader workers can pickle it.

    Args:
        transform: PIL image -> tensor (see :func:`build_transform`).
        mode: PIL mode the images are converted to first (``"RGB"``: grey images are repeated, or ``"L"``).
    """

    def __init__(self, transform: Callable, mode: str):
        self.transform, self.mode = transform, mode

    def __call__(self, batch: dict) -> dict:
        images = [image if image.mode == self.mode else image.convert(self.mode) for image in batch["image"]]
        return {"pixel_values": [self.transform(image) for image in images], "labels": batch["label"]}


def describe_image_source(source: str, source_args: dict | None = None) -> dict[str, Any]:
    """What is known about an image source's labels without loading it.

    Args:
        source: A name in ``IMAGE_SOURCES``.
        source_args: Its arguments.

    Returns:
        ``{"num_labels", "is_regression", "label_names"}``; None where it is only known after loading.
    """
    args = dict(source_args or {})
    if source == "animal_mnist":
        names = list(ANIMAL_NAMES)
    elif source == "digits":
        names = [str(i) for i in range(10)]
    elif source in IMAGE_SOURCES:
        names = list(args["label_names"]) if args.get("label_names") is not None else None
    else:
        raise ValueError(f"Unknown image source {source!r}; choose one of {sorted(IMAGE_SOURCES)}.")
    return {"num_labels": None if names is None else len(names), "is_regression": False, "label_names": names}


class ImageClassificationDataModule(LabelledDataModule):
    """Image classification batches ``{"pixel_values": float (B, C, S, S), "labels": int64 (B,)}``.

    Images are decoded and transformed on access (``Dataset.with_transform``).

    Args:
        source: One of ``animal_mnist``, ``digits``, ``hub_image``, ``imagefolder``.
        source_args: Keyword arguments of the source function.
        image_size: The model's input size S.
        mean: The model's per-channel normalisation mean.
        std: The model's per-channel normalisation standard deviation.
        channels: 3 (grey images are repeated to RGB) or 1.
        augment: Augment training images (RandomResizedCrop + horizontal flip; off by default, since a flip changes
            what some images mean, e.g. digits); evaluation is Resize + CenterCrop. Task configs turn it on where
            their recipe does.
        val_fraction: Validation size carved from train when the source has no validation split: a fraction in
            (0, 1) or a count.
        test_fraction: Test size carved from train when the source has no test split (same forms).
        **loader_args: batch_size, eval_batch_size, num_workers, seed, limit_train, limit_eval (see
            :class:`~loldu.data.module.SplitDataModule`), min_split_size (fewest rows per split, default 5; see
            :class:`~loldu.data.module.LabelledDataModule`).
    """

    SOURCES = IMAGE_SOURCES
    KIND = "image"

    def __init__(
        self,
        source: str,
        source_args: dict | None = None,
        image_size: int = 224,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        channels: int = 3,
        augment: bool = False,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        **loader_args: Any,
    ):
        super().__init__(source=source, source_args=source_args, **loader_args)
        if int(channels) not in (1, 3):
            raise ValueError(f"channels must be 1 or 3; got {channels}.")
        self.mean, self.std = [float(m) for m in mean], [float(s) for s in std]
        self.channels = int(channels)
        self._check_channels()
        self.save_hyperparameters()
        self.image_size = int(image_size)
        self.augment = bool(augment)
        self.val_fraction = check_size(val_fraction, "val_fraction")
        self.test_fraction = check_size(test_fraction, "test_fraction")

    def _held_out(self) -> dict[str, int | float]:
        return {"test": self.test_fraction, "validation": self.val_fraction}

    def _describe(self) -> dict[str, Any]:
        return describe_image_source(self.source, self.source_args)

    def _one_class_fix(self) -> str:
        if self.source == "imagefolder":
            return "; put the images of each class in a sub-folder of their own (root/<class>/*.png)"
        return ""

    def _label_what(self) -> str:
        if self.source == "imagefolder":
            return f"{self.where()}: the class folders"
        return super()._label_what()

    def _label_column_fix(self) -> str:
        if self.source == "imagefolder":
            return "put the images of each class in one sub-folder of their own (root/<class>/*.png)"
        return super()._label_column_fix()

    def _class_places(self, names: list[str]) -> dict[str, str]:
        if self.source != "imagefolder":
            return {}
        train = split_folders(self.source_args["root"])["train"]  # the root itself in a flat layout
        return {name: str(train / name) for name in names}

    def _duplicates_fix(self) -> str:
        if self.source == "imagefolder":
            return "delete the copied image files (identical bytes) so that every image is in one split only"
        if self.source in ("digits", "animal_mnist"):
            return f"these are the {self.source} data's own repeats, kept as published: scores include them"
        return super()._duplicates_fix()

    def _check_data(self, report: SanityReport, parts: DatasetDict) -> None:
        if self.source == "imagefolder":
            root = Path(self.source_args["root"]).expanduser()
            folders = list(dict.fromkeys([root, *split_folders(root).values()]))
            check_class_folders(report, folders, list(parts["train"].features["label"].names))
        super()._check_data(report, parts)

    def attach(self, **model_parts: Any) -> None:
        """Sets the model's input size and normalisation (``image_size``, ``mean``, ``std``) before :meth:`setup`.

        Raises:
            ValueError: ``mean`` or ``std`` without one value per channel.
        """
        super().attach(**model_parts)
        self.image_size = int(self.image_size)
        self.mean, self.std = [float(m) for m in self.mean], [float(s) for s in self.std]
        self._check_channels()

    def _check_channels(self) -> None:
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"mean and std need {self.channels} values each; got {self.mean} and {self.std}.")

    def _build(self, split: str, rows: Dataset) -> Dataset:
        transform = build_transform(self.image_size, self.mean, self.std, split == "train", self.augment)
        return rows.with_transform(PixelTransform(transform, "RGB" if self.channels == 3 else "L"))
