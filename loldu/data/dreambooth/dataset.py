"""The DreamBooth training set: instance (and prior-preservation class) images with their prompt's token ids,
resized, cropped and flipped by ``torchvision.transforms.v2`` from a seeded stream, and the collator that stacks
instance and class examples into one batch (:class:`~loldu.data.dreambooth.DreamBoothDataModule` builds both)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import get_worker_info


def build_transform(resolution: int, center_crop: bool, random_flip: bool) -> Callable:
    """The torchvision v2 pipeline of a training image: shorter side to ``resolution`` (bilinear), a square crop
    (center or random), an optional horizontal flip, then a float tensor (3, resolution, resolution) in [-1, 1]."""
    from torchvision.transforms import v2

    crop = v2.CenterCrop(resolution) if center_crop else v2.RandomCrop(resolution)
    flip = [v2.RandomHorizontalFlip()] if random_flip else []
    scale = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5] * 3, [0.5] * 3)]
    return v2.Compose([v2.Resize(resolution, antialias=True), crop, *flip, *scale])


class DreamBoothDataset(TorchDataset):
    """Instance (and class) images as crops in [-1, 1] with their prompt's token ids.

    Length is the larger of the two image counts; the shorter list cycles.

    Args:
        instance: RGB PIL instance images.
        instance_ids: Token ids of the instance prompt (padded).
        transform: See :func:`build_transform`.
        seed: Seed of the random crops and flips (in DataLoader workers, the worker's seed is used instead).
        classes: RGB PIL class images for prior preservation, or None.
        class_ids: Token ids of the class prompt (padded), or None.
    """

    def __init__(
        self,
        instance: list[Any],
        instance_ids: torch.Tensor,
        transform: Callable,
        seed: int = 0,
        classes: list[Any] | None = None,
        class_ids: torch.Tensor | None = None,
    ):
        self.instance, self.instance_ids = instance, instance_ids
        self.classes, self.class_ids = classes, class_ids
        self.transform = transform
        self.generator = torch.Generator().manual_seed(int(seed))

    def __len__(self) -> int:
        return max(len(self.instance), len(self.classes or []))

    def _pixels(self, image: Any) -> torch.Tensor:
        if get_worker_info() is not None:  # the worker's global RNG, seeded by the DataLoader's seeded generator
            return self.transform(image)
        with torch.random.fork_rng(devices=[]):  # in the main process: this dataset's own seeded stream
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=self.generator)))
            return self.transform(image)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = {"pixel_values": self._pixels(self.instance[index % len(self.instance)]), "input_ids": self.instance_ids}
        if self.classes:
            item["class_pixel_values"] = self._pixels(self.classes[index % len(self.classes)])
            item["class_input_ids"] = self.class_ids
        return item


def collate_dreambooth(examples: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """Stacks examples into one batch, class examples (if any) after the instance examples.

    Args:
        examples: Items of :class:`DreamBoothDataset`.

    Returns:
        ``{"pixel_values": (B or 2B, 3, H, W), "input_ids": (B or 2B, L), "num_instance": B}``.
    """
    pixels = [e["pixel_values"] for e in examples]
    ids = [e["input_ids"] for e in examples]
    if "class_pixel_values" in examples[0]:
        pixels += [e["class_pixel_values"] for e in examples]
        ids += [e["class_input_ids"] for e in examples]
    return {
        "pixel_values": torch.stack(pixels).contiguous(),
        "input_ids": torch.stack(ids),
        "num_instance": len(examples),
    }
