"""DreamBooth data: a few images of one subject with a fixed prompt, plus optional prior-preservation class images.

The instance images come from a folder of image files or from a built-in offline demo source (animal silhouettes
from the ``animal-mnist`` package). Everything is decoded once and kept in memory (DreamBooth folders are small).
All input problems (missing folder, no images, undecodable files, prompts too long for the text encoder, missing
prior-preservation settings) are raised by :meth:`DreamBoothDataModule.check`, before any model work.

Prior preservation needs ``num_class_images`` images of the subject's class in ``class_dir``; the ones missing are
made with :func:`generate_class_images` from the frozen base model before training.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
BUILTIN_SOURCES = ("animal_mnist",)
BUILTIN_KEYS = ("source", "label", "count")
CLASS_FILE = re.compile(r"^class_(\d+)\.png$")


def list_images(folder: str | Path) -> list[Path]:
    """The image files directly inside a folder (by extension, see ``IMAGE_SUFFIXES``), sorted; hidden files skipped.

    Args:
        folder: The folder (must exist).

    Returns:
        The files' paths.
    """
    return sorted(
        p
        for p in Path(folder).iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def read_images(files: list[Path], what: str) -> list[Any]:
    """Decodes image files to RGB PIL images, reporting every file that fails (not just the first).

    Args:
        files: The files.
        what: Names the data in messages (e.g. ``"data.instance_dir"``).

    Returns:
        The decoded images, in the order of ``files``.

    Raises:
        ValueError: Some files do not decode; all of them are listed.
    """
    from PIL import Image

    images, bad = [], []
    for file in files:
        try:
            with Image.open(file) as image:
                images.append(image.convert("RGB"))
        except Exception as err:  # PIL raises several types for broken files
            bad.append(f"{file} ({type(err).__name__}: {err})")
    if bad:
        listing = "\n  ".join(bad)
        raise ValueError(
            f"{what}: {len(bad)} of {len(files)} image files cannot be decoded:\n  {listing}\n"
            "Delete or replace them (re-export them as PNG or JPEG)."
        )
    return images


def builtin_images(spec: Mapping[str, Any]) -> list[Any]:
    """Instance images from an offline demo source, as RGB PIL images.

    Args:
        spec: ``{"source": "animal_mnist", "label": <class name or index>, "count": 5}``: the first ``count`` grey
            28x28 silhouettes of that class from the ``animal-mnist`` package.

    Returns:
        The images.

    Raises:
        ValueError: Unknown source, key or label (lists the valid ones) or a bad count.
        ModuleNotFoundError: The package is not installed (run ``make install``).
    """
    from PIL import Image

    from .packaged import ANIMAL_NAMES, animal_mnist

    spec = _check_builtin(spec)
    names = list(ANIMAL_NAMES)
    index = _label_index(spec["label"], names)
    source = animal_mnist()
    part = source.parts["train"]
    rows = np.flatnonzero(np.asarray(part.labels) == index)
    count = int(spec["count"])
    if count > len(rows):
        raise ValueError(
            f"data.builtin.count is {count}, but animal_mnist has only {len(rows)} {names[index]!r} images."
        )
    return [Image.fromarray(np.asarray(part.images[i], dtype=np.uint8)).convert("RGB") for i in rows[:count]]


def _check_builtin(spec: Any) -> dict[str, Any]:
    if not isinstance(spec, Mapping):
        raise ValueError(
            f"data.builtin must be a mapping like {{source: animal_mnist, label: dog, count: 5}}; got {spec!r}."
        )
    spec = dict(spec)
    unknown = sorted(set(spec) - set(BUILTIN_KEYS))
    if unknown:
        raise ValueError(f"Unknown data.builtin keys {unknown}; it accepts {list(BUILTIN_KEYS)}.")
    if spec.get("source") not in BUILTIN_SOURCES:
        raise ValueError(f"Unknown data.builtin.source {spec.get('source')!r}; choose one of {list(BUILTIN_SOURCES)}.")
    if spec.get("label") is None:
        raise ValueError("data.builtin.label is missing: give a class name or index of the builtin source.")
    spec.setdefault("count", 5)
    if isinstance(spec["count"], bool) or not isinstance(spec["count"], int) or spec["count"] < 1:
        raise ValueError(f"data.builtin.count must be an integer >= 1; got {spec['count']!r}.")
    return spec


def _label_index(label: Any, names: list[str]) -> int:
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
        if 0 <= int(label) < len(names):
            return int(label)
    elif isinstance(label, str) and label.strip().lower() in names:
        return names.index(label.strip().lower())
    choices = ", ".join(f"{i}={n}" for i, n in enumerate(names))
    raise ValueError(f"Unknown data.builtin.label {label!r}; the animal_mnist classes are: {choices}.")


def resize_shorter(image: Any, resolution: int) -> torch.Tensor:
    """Resizes (bilinear) so the shorter side is ``resolution``; returns a uint8 tensor (3, H, W).

    Args:
        image: An RGB PIL image.
        resolution: The target shorter side.

    Returns:
        The uint8 pixels, channels first.
    """
    from PIL import Image

    width, height = image.size
    scale = resolution / min(width, height)
    size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    if size != (width, height):
        image = image.resize(size, Image.BILINEAR)
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()


class DreamBoothDataset(Dataset):
    """Instance (and class) images as crops in [-1, 1] with their prompt's token ids.

    Length is the larger of the two image counts; the shorter list cycles.

    Args:
        instance: Resized uint8 instance images (3, H, W), shorter side = ``resolution``.
        instance_ids: Token ids of the instance prompt (padded).
        resolution: Crop side.
        center_crop: Center crops; otherwise random crops.
        random_flip: Horizontal flips with probability 0.5.
        seed: Seed of the crops and flips (in DataLoader workers, the worker's seed is used instead).
        classes: Resized class images for prior preservation, or None.
        class_ids: Token ids of the class prompt (padded), or None.
    """

    def __init__(
        self,
        instance: list[torch.Tensor],
        instance_ids: torch.Tensor,
        resolution: int,
        center_crop: bool = True,
        random_flip: bool = False,
        seed: int = 0,
        classes: list[torch.Tensor] | None = None,
        class_ids: torch.Tensor | None = None,
    ):
        self.instance = instance
        self.instance_ids = instance_ids
        self.classes = classes
        self.class_ids = class_ids
        self.resolution = int(resolution)
        self.center_crop = bool(center_crop)
        self.random_flip = bool(random_flip)
        self.generator = torch.Generator().manual_seed(int(seed))

    def __len__(self) -> int:
        return max(len(self.instance), len(self.classes or []))

    def _randint(self, high: int) -> int:
        # In a worker process, use the worker's global RNG (seeded by the DataLoader from its seeded generator,
        # different per worker and per epoch); in the main process, this dataset's own generator.
        generator = None if get_worker_info() is not None else self.generator
        return int(torch.randint(0, high, (1,), generator=generator))

    def transform(self, pixels: torch.Tensor) -> torch.Tensor:
        """Crops (center or random) to ``resolution`` square, optionally flips, and scales to [-1, 1]."""
        res = self.resolution
        height, width = pixels.shape[-2:]
        if self.center_crop:
            top, left = int(round((height - res) / 2.0)), int(round((width - res) / 2.0))
        else:
            top, left = self._randint(height - res + 1), self._randint(width - res + 1)
        crop = pixels[:, top : top + res, left : left + res]
        if self.random_flip and self._randint(2):
            crop = crop.flip(-1)
        return crop.float() / 127.5 - 1.0

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = {
            "pixel_values": self.transform(self.instance[index % len(self.instance)]),
            "input_ids": self.instance_ids,
        }
        if self.classes:
            item["class_pixel_values"] = self.transform(self.classes[index % len(self.classes)])
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


class DreamBoothDataModule(L.LightningDataModule):
    """DreamBooth training data: the subject's images with one prompt, plus prior-preservation class images.

    Args:
        instance_prompt: The prompt of the subject's images, e.g. ``"a photo of sks dog"``.
        tokenizer: The text encoder's tokenizer; ``model_max_length`` is the prompt limit (and the padding length).
        resolution: Image side after resizing and cropping.
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
        batch_size: Instance images per batch (the batch holds twice as many rows with prior preservation).
        num_workers: DataLoader worker processes.
        seed: Seed of the shuffle, crops and flips.
        limit_train: Use at most this many instance images (``debug=fast``), or None.
        limit_eval: Accepted for a uniform ``debug`` config; there is no evaluation split.
    """

    def __init__(
        self,
        instance_prompt: str,
        tokenizer: Any,
        resolution: int,
        instance_dir: str | None = None,
        builtin: Mapping[str, Any] | None = None,
        class_dir: str | None = None,
        class_prompt: str | None = None,
        with_prior_preservation: bool = False,
        num_class_images: int = 100,
        center_crop: bool = True,
        random_flip: bool = False,
        batch_size: int = 1,
        num_workers: int = 0,
        seed: int = 0,
        limit_train: int | None = None,
        limit_eval: int | None = None,
    ):
        super().__init__()
        if limit_train is not None and int(limit_train) < 1:
            raise ValueError(f"limit_train must be >= 1 or null, got {limit_train}")
        self.limit_train = None if limit_train is None else int(limit_train)
        self.instance_prompt = instance_prompt
        self.tokenizer = tokenizer
        self.resolution = int(resolution)
        self.instance_dir = instance_dir
        self.builtin = builtin
        self.class_dir = class_dir
        self.class_prompt = class_prompt
        self.with_prior_preservation = bool(with_prior_preservation)
        self.num_class_images = int(num_class_images)
        self.center_crop = bool(center_crop)
        self.random_flip = bool(random_flip)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self._instance_images: list[Any] | None = None
        self.dataset: DreamBoothDataset | None = None
        self._generator: torch.Generator | None = None
        self._check_args()

    # -- checks ---------------------------------------------------------------------------------------------------

    def _check_args(self) -> None:
        if (self.instance_dir is None) == (self.builtin is None):
            raise ValueError(
                "Give exactly one of data.instance_dir (a folder of the subject's images) and data.builtin "
                f"(an offline demo source such as {{source: animal_mnist, label: dog, count: 5}}); got "
                f"instance_dir={self.instance_dir!r}, builtin={self.builtin!r}."
            )
        if self.builtin is not None:
            _check_builtin(self.builtin)
        if not isinstance(self.instance_prompt, str) or not self.instance_prompt.strip():
            raise ValueError("data.instance_prompt is empty; give the subject's prompt, e.g. 'a photo of sks dog'.")
        if self.resolution < 1:
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
        from ..models.diffusion import check_prompt_length

        check_prompt_length(self.tokenizer, self.instance_prompt, "data.instance_prompt")
        if self.with_prior_preservation:
            check_prompt_length(self.tokenizer, self.class_prompt, "data.class_prompt")

    def _load_instances(self) -> list[Any]:
        if self.builtin is not None:
            return builtin_images(self.builtin)
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
        return read_images(files, "data.instance_dir")

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
        if self._instance_images is None:
            self._instance_images = self._load_instances()[: self.limit_train]
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

    # -- LightningDataModule ----------------------------------------------------------------------------------

    def _token_ids(self, prompt: str) -> torch.Tensor:
        from ..models.diffusion import prompt_ids

        return prompt_ids(self.tokenizer, prompt)[0]

    def setup(self, stage: str | None = None) -> None:
        """Runs :meth:`check`, loads the class images and builds the dataset (once; later calls do nothing).

        Raises:
            ValueError: As :meth:`check`, or class images missing or undecodable.
        """
        if self.dataset is not None:
            return
        self.check()
        resized = [resize_shorter(image, self.resolution) for image in self._instance_images]
        classes, class_ids = None, None
        if self.with_prior_preservation:
            classes = [resize_shorter(image, self.resolution) for image in self._load_classes()]
            class_ids = self._token_ids(self.class_prompt)
        self.dataset = DreamBoothDataset(
            resized,
            self._token_ids(self.instance_prompt),
            self.resolution,
            center_crop=self.center_crop,
            random_flip=self.random_flip,
            seed=self.seed,
            classes=classes,
            class_ids=class_ids,
        )
        self._generator = torch.Generator().manual_seed(self.seed)

    def instance_images(self) -> list[Any]:
        """The decoded reference images of the subject (RGB PIL, original size), e.g. for concept metrics."""
        if self._instance_images is None:
            self.check()
        return list(self._instance_images)

    def train_dataloader(self) -> DataLoader:
        """Shuffled (seeded) batches of :func:`collate_dreambooth`."""
        self.setup("fit")
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            shuffle=True,
            generator=self._generator,
            num_workers=self.num_workers,
            collate_fn=collate_dreambooth,
            persistent_workers=self.num_workers > 0,
        )


def _next_class_number(folder: Path) -> int:
    numbers = [int(m.group(1)) for p in folder.iterdir() if (m := CLASS_FILE.match(p.name))]
    return max(numbers, default=-1) + 1


def generate_class_images(
    pipeline: Any,
    class_dir: str | Path,
    class_prompt: str,
    count: int,
    seed: int = 0,
    batch_size: int = 4,
    num_inference_steps: int = 25,
    resolution: int | None = None,
) -> list[Path]:
    """Samples class images for prior preservation into ``class_dir``, never overwriting a file.

    New files continue the numbering of existing ``class_NNNNN.png`` files; image number ``n`` is sampled with a
    CPU generator seeded ``seed + n``, so the same files come out again on another run or device type.

    Args:
        pipeline: A diffusers text-to-image pipeline (the frozen base model), e.g. ``bundle.pipeline()``.
        class_dir: The folder (created if missing).
        class_prompt: The prompt of every image.
        count: How many images to write (e.g. ``datamodule.class_images_missing()``); <= 0 writes none.
        seed: Base seed.
        batch_size: Images per pipeline call.
        num_inference_steps: Sampling steps.
        resolution: Image side; None uses the pipeline's default.

    Returns:
        The paths written, in order.

    Raises:
        FileNotFoundError: ``class_dir`` exists but is a file.
        ValueError: ``batch_size`` < 1.
    """
    folder = Path(class_dir).expanduser()
    if folder.exists() and not folder.is_dir():
        raise FileNotFoundError(f"class_dir {str(folder)!r} is a file, not a folder; point it elsewhere.")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
    count = int(count)
    if count <= 0:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    number = _next_class_number(folder)
    size = {} if resolution is None else {"height": int(resolution), "width": int(resolution)}
    written: list[Path] = []
    while len(written) < count:
        todo = min(int(batch_size), count - len(written))
        numbers = list(range(number, number + todo))
        generators = [torch.Generator().manual_seed(int(seed) + n) for n in numbers]
        images = pipeline(
            [class_prompt] * todo,
            num_inference_steps=int(num_inference_steps),
            generator=generators,
            output_type="pil",
            **size,
        ).images
        for n, image in zip(numbers, images):
            target = folder / f"class_{n:05d}.png"
            partial = folder / f".class_{n:05d}.png.part"
            image.save(partial, format="PNG")
            if target.exists():  # written meanwhile by someone else: keep theirs
                partial.unlink()
                continue
            os.replace(partial, target)
            written.append(target)
        number += todo
    return written
