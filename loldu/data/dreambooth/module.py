"""The DreamBooth data module: instance (and class) images with their prompts, checked before any model work."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from datasets import Dataset, DatasetDict, Features, Image
from torch.utils.data import DataLoader

from loldu.data.dreambooth.dataset import DreamBoothDataset, build_transform, collate_dreambooth
from loldu.data.dreambooth.sources import (
    IMAGE_SUFFIXES,
    builtin_images,
    check_builtin,
    list_images,
    read_images,
)
from loldu.data.module import SplitDataModule


class DreamBoothDataModule(SplitDataModule):
    """DreamBooth training data: the subject's images with one prompt, plus prior-preservation class images.

    Args:
        instance_prompt: The prompt of the subject's images, e.g. ``"a photo of sks dog"``.
        tokenizer: The text encoder's tokenizer; ``model_max_length`` is the prompt limit (and the padding length).
            None until :meth:`attach` gives it (the images are read and checked without it).
        resolution: Image side after resizing and cropping (None until :meth:`attach`).
        instance_dir: Folder of the subject's images (png, jpg, jpeg, webp, bmp). Exactly one of ``instance_dir``
            and ``builtin`` must be given.
        builtin: An offline demo source instead of a folder: ``{"source": "animal_mnist", "label": "dog",
            "count": 5}`` (label: a class name or index).
        class_dir: Folder of class images for prior preservation (created by :func:`generate_class_images`).
        class_prompt: The prompt of the class images, e.g. ``"a photo of dog"``.
        with_prior_preservation: Add class images to each batch (after the instance images).
        num_class_images: How many class images to use (the first ones, sorted by name).
        center_crop: Center crops; otherwise random crops.
        random_flip: Random horizontal flips.
        **loader_args: batch_size (instance images per batch, default 1; the batch holds twice as many rows with
            prior preservation), num_workers, seed (of the shuffle, crops and flips), limit_train (use at most this
            many instance images), limit_eval (accepted for a uniform ``debug`` config; there is no evaluation split).
    """

    KIND = "dreambooth"
    # Training data only: Lightning's defaults (no validation or test loop) replace the shared module's loaders.
    val_dataloader = L.LightningDataModule.val_dataloader
    test_dataloader = L.LightningDataModule.test_dataloader

    def __init__(
        self,
        instance_prompt: str,
        tokenizer: Any = None,
        resolution: int | None = None,
        instance_dir: str | None = None,
        builtin: Mapping[str, Any] | None = None,
        class_dir: str | None = None,
        class_prompt: str | None = None,
        with_prior_preservation: bool = False,
        num_class_images: int = 100,
        center_crop: bool = True,
        random_flip: bool = False,
        **loader_args: Any,
    ):
        super().__init__(source="dreambooth", **{"batch_size": 1, **loader_args})
        self.instance_prompt = instance_prompt
        self.tokenizer = tokenizer
        self.resolution = None if resolution is None else int(resolution)
        self.instance_dir = instance_dir
        self.builtin = builtin
        self.class_dir = class_dir
        self.class_prompt = class_prompt
        self.with_prior_preservation = bool(with_prior_preservation)
        self.num_class_images = int(num_class_images)
        self.center_crop = bool(center_crop)
        self.random_flip = bool(random_flip)
        self._check_args()

    @property
    def dataset(self) -> DreamBoothDataset | None:
        """The training dataset after setup(), else None."""
        return self.datasets.get("train")

    # -- checks ---------------------------------------------------------------------------------------------------

    def _check_args(self) -> None:
        if (self.instance_dir is None) == (self.builtin is None):
            raise ValueError(
                "Give exactly one of data.instance_dir (a folder of the subject's images) and data.builtin "
                f"(an offline demo source such as {{source: animal_mnist, label: dog, count: 5}}); got "
                f"instance_dir={self.instance_dir!r}, builtin={self.builtin!r}."
            )
        if self.builtin is not None:
            check_builtin(self.builtin)
        if not isinstance(self.instance_prompt, str) or not self.instance_prompt.strip():
            raise ValueError("data.instance_prompt is empty; give the subject's prompt, e.g. 'a photo of sks dog'.")
        if self.resolution is not None and self.resolution < 1:
            raise ValueError(f"data.resolution must be >= 1; got {self.resolution}.")
        if self.batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1; got {self.batch_size}.")
        if self.with_prior_preservation:
            missing = [
                key for key, value in (("class_prompt", self.class_prompt), ("class_dir", self.class_dir)) if not value
            ]
            if missing:
                raise ValueError(
                    f"with_prior_preservation needs data.{' and data.'.join(missing)}: the class images' prompt "
                    "(e.g. 'a photo of dog') and the folder that holds (or will hold) them. Set them, or set "
                    "with_prior_preservation=false."
                )
            if self.num_class_images < 1:
                raise ValueError(
                    f"data.num_class_images must be >= 1 with prior preservation; got {self.num_class_images}."
                )

    def _check_prompts(self) -> None:
        from loldu.models.diffusion import check_prompt_length

        if self.tokenizer is None:  # checked again once the model's tokenizer is attached
            return
        check_prompt_length(self.tokenizer, self.instance_prompt, "data.instance_prompt")
        if self.with_prior_preservation:
            check_prompt_length(self.tokenizer, self.class_prompt, "data.class_prompt")

    def _instance_files(self) -> list[Path]:
        folder = Path(self.instance_dir).expanduser()
        if not folder.exists():
            raise FileNotFoundError(
                f"data.instance_dir: the folder {str(folder)!r} does not exist. Point it at a folder of the "
                "subject's images, or use data.builtin for the offline demo."
            )
        if not folder.is_dir():
            raise FileNotFoundError(
                f"data.instance_dir: {str(folder)!r} is a file, not a folder. Point it at the folder that holds "
                "the subject's images."
            )
        files = list_images(folder)
        if not files:
            raise ValueError(
                f"data.instance_dir: the folder {str(folder)!r} holds no image files; accepted extensions are "
                f"{', '.join(s[1:] for s in IMAGE_SUFFIXES)}. Add the subject's images (3-5 are typical)."
            )
        return files

    def _load(self) -> DatasetDict:
        if self.builtin is not None:
            return DatasetDict(train=builtin_images(self.builtin))
        images = read_images(self._instance_files(), "data.instance_dir")
        return DatasetDict(train=Dataset.from_dict({"image": images}, features=Features(image=Image())))

    def _plan(self, parts: DatasetDict) -> dict[str, tuple[str, np.ndarray]]:
        # Nothing is held out: every instance image trains, in file order (limit_train keeps the first ones).
        return {"train": ("train", np.arange(len(parts["train"]))[: self.limit_train])}

    def check(self) -> None:
        """Checks every input that can be checked without a model; decodes (and keeps) the instance images.

        Class images are checked by :meth:`setup`, since they may be generated after this check.

        Raises:
            ValueError: Bad arguments, no image files, undecodable images (all listed) or a prompt too long for
                the tokenizer.
            FileNotFoundError: ``instance_dir`` is missing or not a folder.
        """
        self._check_args()
        self._check_prompts()
        super().check()
        if self.with_prior_preservation:
            folder = Path(self.class_dir).expanduser()
            if folder.exists() and not folder.is_dir():
                raise FileNotFoundError(f"data.class_dir: {str(folder)!r} is a file, not a folder; point it elsewhere.")

    def class_images_missing(self) -> int:
        """How many more images ``class_dir`` needs to hold ``num_class_images`` (0 without prior preservation)."""
        if not self.with_prior_preservation:
            return 0
        folder = Path(self.class_dir).expanduser()
        have = len(list_images(folder)) if folder.is_dir() else 0
        return max(0, self.num_class_images - have)

    def attach(self, **model_parts: Any) -> None:
        """Sets the model's ``tokenizer`` and ``resolution``, then checks the prompts' lengths against it.

        Raises:
            ValueError: A prompt longer than the text encoder takes, or a resolution < 1.
        """
        super().attach(**model_parts)
        self.resolution = None if self.resolution is None else int(self.resolution)
        self._check_args()
        self._check_prompts()

    def _load_classes(self) -> list[Any]:
        missing = self.class_images_missing()
        if missing:
            raise ValueError(
                f"data.class_dir {str(self.class_dir)!r} needs {self.num_class_images} class images for prior "
                f"preservation but {missing} are missing. Generate them with "
                "loldu.data.dreambooth.generate_class_images(pipeline, class_dir, class_prompt, "
                "count=datamodule.class_images_missing()), or lower data.num_class_images."
            )
        files = list_images(Path(self.class_dir).expanduser())[: self.num_class_images]
        return read_images(files, "data.class_dir")

    def _build(self, split: str, rows: Dataset) -> DreamBoothDataset:
        from loldu.models.diffusion import prompt_ids

        if self.tokenizer is None or self.resolution is None:
            raise ValueError("DreamBoothDataModule needs tokenizer and resolution (pass them, or call attach()).")

        classes, class_ids = None, None
        if self.with_prior_preservation:
            classes, class_ids = self._load_classes(), prompt_ids(self.tokenizer, self.class_prompt)[0]
        return DreamBoothDataset(
            [image.convert("RGB") for image in rows["image"]],
            prompt_ids(self.tokenizer, self.instance_prompt)[0],
            build_transform(self.resolution, self.center_crop, self.random_flip),
            seed=self.seed,
            classes=classes,
            class_ids=class_ids,
        )

    def collator(self) -> Callable:
        """:func:`collate_dreambooth`: class rows after the instance rows."""
        return collate_dreambooth

    def instance_images(self) -> list[Any]:
        """The decoded reference images of the subject (RGB PIL, original size), e.g. for concept metrics."""
        self.check()
        return [image.convert("RGB") for image in self.rows("train")["image"]]

    def train_dataloader(self) -> DataLoader:
        """Shuffled (seeded) batches of :func:`collate_dreambooth` (runs :meth:`setup` first)."""
        self.setup("fit")
        return super().train_dataloader()
