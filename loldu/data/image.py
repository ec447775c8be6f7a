"""Image classification data for vision models (``pixel_values`` at the model's input size and normalisation)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .files import imagefolder, load_image
from .hub import hub_image
from .module import SplitDataModule
from .packaged import ANIMAL_NAMES, animal_mnist, digits

IMAGE_SOURCES: dict[str, Callable[..., Any]] = {
    "animal_mnist": animal_mnist,
    "digits": digits,
    "hub_image": hub_image,
    "imagefolder": imagefolder,
}


class IndexedView(Sequence):
    """The items ``base[indices[i]]`` of an indexable collection, without copying it."""

    def __init__(self, base: Sequence[Any], indices: np.ndarray):
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        return self.base[int(self.indices[index])]


def take(images: Sequence[Any], indices: np.ndarray) -> Sequence[Any]:
    """Selects images by index: a copy for NumPy arrays, a lazy view otherwise.

    Args:
        images: Array of images or any indexable collection.
        indices: Positions to keep.

    Returns:
        The selected images.
    """
    if isinstance(images, np.ndarray):
        return images[indices]
    return IndexedView(images, indices)


def to_pil(item: Any, mode: str) -> Any:
    """Converts a source item (uint8 array, PIL image or file path) into a PIL image of the given mode.

    Args:
        item: A uint8 array (H, W) / (H, W, 1|3|4), a PIL image, or an image file path.
        mode: ``"RGB"`` (grey images are repeated to 3 channels) or ``"L"``.

    Returns:
        The PIL image.
    """
    from PIL import Image

    if isinstance(item, (str, Path)):
        item = load_image(item)
    elif isinstance(item, np.ndarray):
        array = item if item.dtype == np.uint8 else np.clip(item, 0, 255).astype(np.uint8)
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        item = Image.fromarray(array)
    return item if item.mode == mode else item.convert(mode)


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


class ImageDataset(Dataset):
    """Images and labels; each item is ``{"pixel_values": tensor (C, H, W), "labels": int}``.

    Args:
        images: Indexable images (see :func:`to_pil`).
        labels: Class index per image.
        transform: PIL image -> tensor.
        mode: PIL mode the images are converted to first (``"RGB"`` or ``"L"``).
    """

    def __init__(self, images: Sequence[Any], labels: np.ndarray, transform: Callable, mode: str = "RGB"):
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform
        self.mode = mode

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = to_pil(self.images[index], self.mode)
        return {"pixel_values": self.transform(image), "labels": int(self.labels[index])}


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


class ImageClassificationDataModule(SplitDataModule):
    """Image classification batches ``{"pixel_values": float (B, C, S, S), "labels": int64 (B,)}``.

    Args:
        source: One of ``animal_mnist``, ``digits``, ``hub_image``, ``imagefolder``.
        source_args: Keyword arguments of the source function.
        image_size: The model's input size S.
        mean: The model's per-channel normalisation mean.
        std: The model's per-channel normalisation standard deviation.
        channels: 3 (grey images are repeated to RGB) or 1.
        augment: Augment training images (RandomResizedCrop + horizontal flip); evaluation is Resize + CenterCrop.
        batch_size: Training batch size.
        eval_batch_size: Validation/test batch size (None: ``batch_size``).
        num_workers: DataLoader worker processes.
        seed: Seed of the splits, the limits and the training shuffle.
        val_fraction: Fraction of train carved into validation when the source has no validation split.
        test_fraction: Fraction of train carved into test when the source has no test split.
        limit_train: Cap on training examples, or None.
        limit_eval: Cap on examples of each evaluation split, or None.
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
        augment: bool = True,
        **loader_args: Any,
    ):
        # loader_args: batch_size, eval_batch_size, num_workers, seed, val_fraction, test_fraction,
        # limit_train, limit_eval (see the base class).
        super().__init__(source=source, source_args=source_args, **loader_args)
        if int(channels) not in (1, 3):
            raise ValueError(f"channels must be 1 or 3; got {channels}.")
        self.mean, self.std = [float(m) for m in mean], [float(s) for s in std]
        if len(self.mean) != int(channels) or len(self.std) != int(channels):
            raise ValueError(f"mean and std need {channels} values each; got {self.mean} and {self.std}.")
        self.save_hyperparameters()
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.augment = bool(augment)

    @classmethod
    def describe(cls, source: str, source_args: dict | None = None) -> dict[str, Any]:
        """See :func:`describe_image_source`."""
        return describe_image_source(source, source_args)

    def _build_dataset(self, source: Any, split: str, part: str, indices: np.ndarray) -> Dataset:
        data = source.parts[part]
        transform = build_transform(self.image_size, self.mean, self.std, split == "train", self.augment)
        mode = "RGB" if self.channels == 3 else "L"
        return ImageDataset(take(data.images, indices), data.labels[indices], transform, mode)
