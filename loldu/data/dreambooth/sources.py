"""DreamBooth sources: instance images from a folder or the offline demo set, and prior-preservation class images
sampled from the frozen base model (never overwriting a file)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
BUILTIN_SOURCES = ("animal_mnist",)
BUILTIN_KEYS = ("source", "label", "count")


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


def builtin_images(spec: Mapping[str, Any]) -> Dataset:
    """Instance images from an offline demo source.

    Args:
        spec: ``{"source": "animal_mnist", "label": <class name or index>, "count": 5}``: the first ``count`` grey
            28x28 silhouettes of that class from the ``animal-mnist`` package.

    Returns:
        The images (column ``image``).

    Raises:
        ValueError: Unknown source, key or label (lists the valid ones) or a bad count.
        ModuleNotFoundError: The package is not installed (run ``make install``).
    """
    from loldu.data.packaged import ANIMAL_NAMES, animal_mnist

    spec = check_builtin(spec)
    index = _label_index(spec["label"], list(ANIMAL_NAMES))
    part = animal_mnist()["train"]
    rows = np.flatnonzero(np.asarray(part["label"]) == index)
    count = int(spec["count"])
    if count > len(rows):
        raise ValueError(
            f"data.builtin.count is {count}, but animal_mnist has only {len(rows)} {ANIMAL_NAMES[index]!r} images."
        )
    return part.select(rows[:count]).select_columns(["image"])


def check_builtin(spec: Any) -> dict[str, Any]:
    """Checks a ``data.builtin`` mapping and fills its default count.

    Raises:
        ValueError: Not a mapping, unknown keys or source, no label, or a bad count (the message names the fix).
    """
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


CLASS_FILE = re.compile(r"^class_(\d+)\.png$")


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
