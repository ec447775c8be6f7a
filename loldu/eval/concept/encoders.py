"""The DINO and CLIP encoders behind :mod:`loldu.eval.concept`: pretrained checkpoints, or tiny random models.

``load_encoders("pretrained")`` uses ``facebook/dino-vits16`` (or a DINOv2 checkpoint) and
``openai/clip-vit-base-patch32``; ``load_encoders("tiny")`` builds small random models offline, for smoke tests only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from loldu.methods.progress import progress

DINO = "facebook/dino-vits16"
CLIP = "openai/clip-vit-base-patch32"
ENCODER_KINDS = ("pretrained", "tiny")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
TINY_IMAGE_SIZE = 32
BATCH = 32


def as_rgb(image: Any) -> Any:
    """A PIL RGB image from a PIL image or an image file path."""
    from PIL import Image

    if isinstance(image, (str, Path)):
        with Image.open(image) as opened:
            return opened.convert("RGB")
    return image.convert("RGB")


def _features(output: Any) -> torch.Tensor:
    # transformers 5 returns a model output whose pooler_output is the projected embedding; older ones a tensor.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def simple_preprocess(size: int, mean: Sequence[float], std: Sequence[float]) -> Callable[[list[Any]], torch.Tensor]:
    """A preprocessing function: resize to ``size`` x ``size`` (bilinear), scale to [0, 1], normalise.

    Args:
        size: Output side in pixels.
        mean: Per-channel mean subtracted.
        std: Per-channel standard deviation divided by.

    Returns:
        A function from a list of RGB PIL images to a float tensor (N, 3, size, size).
    """
    import numpy as np
    from PIL import Image

    mean_t = torch.tensor(list(mean)).view(1, 3, 1, 1)
    std_t = torch.tensor(list(std)).view(1, 3, 1, 1)

    def preprocess(images: list[Any]) -> torch.Tensor:
        arrays = [np.asarray(image.resize((size, size), Image.BILINEAR), dtype=np.float32) for image in images]
        pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 255.0
        return (pixels - mean_t) / std_t

    return preprocess


class Encoders:
    """The DINO and CLIP encoders behind the concept metrics; every output is L2-normalised, computed without grad.

    Args:
        dino_model: A ViT/DINOv2 model returning ``last_hidden_state`` (CLS token first).
        clip_model: A ``CLIPModel``.
        dino_preprocess: List of RGB PIL images -> pixel tensor for ``dino_model``.
        clip_preprocess: List of RGB PIL images -> pixel tensor for ``clip_model``.
        clip_tokenize: List of texts -> dict of ``input_ids`` and ``attention_mask`` tensors.
        device: Where the models run.
        kind: ``"pretrained"`` or ``"tiny"`` (recorded with the scores).
    """

    def __init__(
        self,
        dino_model: nn.Module,
        clip_model: nn.Module,
        dino_preprocess: Callable[[list[Any]], torch.Tensor],
        clip_preprocess: Callable[[list[Any]], torch.Tensor],
        clip_tokenize: Callable[[list[str]], dict[str, torch.Tensor]],
        device: str | torch.device = "cpu",
        kind: str = "pretrained",
    ):
        self.device = torch.device(device)
        self.dino_model = dino_model.to(self.device).eval()
        self.clip_model = clip_model.to(self.device).eval()
        self.dino_preprocess = dino_preprocess
        self.clip_preprocess = clip_preprocess
        self.clip_tokenize = clip_tokenize
        self.kind = kind

    def _images(self, images: Sequence[Any], preprocess: Callable, embed: Callable) -> torch.Tensor:
        images = [as_rgb(image) for image in images]
        if not images:
            raise ValueError("no images to encode.")
        chunks = []
        with torch.no_grad():
            for start in progress(range(0, len(images), BATCH), "encoding images", unit="batch"):
                pixels = preprocess(images[start : start + BATCH]).to(self.device)
                chunks.append(embed(pixels).float())
        return nn.functional.normalize(torch.cat(chunks), dim=-1).cpu()

    def dino(self, images: Sequence[Any]) -> torch.Tensor:
        """DINO embeddings: the last layer's CLS token, L2-normalised.

        Args:
            images: PIL images or image file paths.

        Returns:
            Tensor (N, d) on the CPU.
        """
        return self._images(
            images, self.dino_preprocess, lambda px: self.dino_model(pixel_values=px).last_hidden_state[:, 0]
        )

    def clip_image(self, images: Sequence[Any]) -> torch.Tensor:
        """CLIP image embeddings (``get_image_features``), L2-normalised.

        Args:
            images: PIL images or image file paths.

        Returns:
            Tensor (N, d) on the CPU.
        """
        return self._images(
            images, self.clip_preprocess, lambda px: _features(self.clip_model.get_image_features(pixel_values=px))
        )

    def clip_text(self, texts: Sequence[str]) -> torch.Tensor:
        """CLIP text embeddings (``get_text_features``), L2-normalised; texts over CLIP's limit are truncated.

        Args:
            texts: The texts.

        Returns:
            Tensor (N, d) on the CPU.
        """
        texts = list(texts)
        if not texts:
            raise ValueError("no texts to encode.")
        chunks = []
        with torch.no_grad():
            for start in progress(range(0, len(texts), BATCH), "encoding texts", unit="batch"):
                tokens = self.clip_tokenize(texts[start : start + BATCH])
                tokens = {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
                chunks.append(_features(self.clip_model.get_text_features(**tokens)).float())
        return nn.functional.normalize(torch.cat(chunks), dim=-1).cpu()


def _hub_error(name: str, err: Exception) -> RuntimeError:
    return RuntimeError(
        f"could not load {name!r} ({type(err).__name__}: {err}). Without network access, point --dino/--clip "
        "(load_encoders(dino=..., clip=...)) at local copies (folders written by save_pretrained, or snapshots in "
        "the HF cache with HF_HUB_OFFLINE=1), or use --encoders tiny (load_encoders('tiny')) for a smoke test "
        "with random weights."
    )


def _pretrained(dino: str, clip: str, device: str) -> Encoders:
    from transformers import AutoConfig, AutoImageProcessor, CLIPModel, CLIPProcessor, Dinov2Model, ViTModel

    try:
        model_type = AutoConfig.from_pretrained(dino).model_type
        if model_type == "dinov2":
            dino_model = Dinov2Model.from_pretrained(dino)
        elif model_type == "vit":
            dino_model = ViTModel.from_pretrained(dino, add_pooling_layer=False)
        else:
            raise ValueError(f"unsupported DINO model_type {model_type!r}: expected 'vit' or 'dinov2'")
        dino_processor = AutoImageProcessor.from_pretrained(dino)
    except Exception as err:  # hub and file errors come with many types
        raise _hub_error(dino, err) from err
    try:
        clip_model = CLIPModel.from_pretrained(clip)
        processor = CLIPProcessor.from_pretrained(clip)
    except Exception as err:
        raise _hub_error(clip, err) from err

    def tokenize(texts: list[str]) -> dict[str, torch.Tensor]:
        return dict(processor.tokenizer(texts, padding=True, truncation=True, return_tensors="pt"))

    return Encoders(
        dino_model,
        clip_model,
        lambda images: dino_processor(images=images, return_tensors="pt")["pixel_values"],
        lambda images: processor.image_processor(images=images, return_tensors="pt")["pixel_values"],
        tokenize,
        device=device,
        kind="pretrained",
    )


def _tiny(dino: str, device: str, seed: int) -> Encoders:
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig, Dinov2Config, Dinov2Model, ViTConfig, ViTModel

    from loldu.models.tiny import tiny_clip_text_config, tiny_clip_tokenizer

    size, max_tokens = TINY_IMAGE_SIZE, 32
    vision = {
        "image_size": size,
        "patch_size": 8,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
    }
    tokenizer = tiny_clip_tokenizer(max_tokens)
    clip_config = CLIPConfig(
        text_config=tiny_clip_text_config(tokenizer, max_tokens).to_dict(),
        vision_config=CLIPVisionConfig(**vision, intermediate_size=64, projection_dim=32).to_dict(),
        projection_dim=32,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if "dinov2" in str(dino).lower():
            dino_model = Dinov2Model(Dinov2Config(**vision, mlp_ratio=2))
        else:
            dino_model = ViTModel(ViTConfig(**vision, intermediate_size=64), add_pooling_layer=False)
        clip_model = CLIPModel(clip_config)

    def tokenize(texts: list[str]) -> dict[str, torch.Tensor]:
        return dict(tokenizer(texts, padding=True, truncation=True, return_tensors="pt"))

    return Encoders(
        dino_model,
        clip_model,
        simple_preprocess(size, IMAGENET_MEAN, IMAGENET_STD),
        simple_preprocess(size, CLIP_MEAN, CLIP_STD),
        tokenize,
        device=device,
        kind="tiny",
    )


def load_encoders(
    kind: str = "pretrained", dino: str = DINO, clip: str = CLIP, device: str = "cpu", seed: int = 0
) -> Encoders:
    """Loads (``"pretrained"``) or builds (``"tiny"``) the DINO and CLIP encoders.

    Args:
        kind: ``"pretrained"``: ``dino`` and ``clip`` with ``from_pretrained`` and their own image processors.
            ``"tiny"``: small random ViT (DINOv2 if ``dino`` names one) and CLIP models with a 32-pixel input and an
            offline byte-level tokenizer, for smoke tests.
        dino: DINO checkpoint (hub id or folder): a ViT (``facebook/dino-vits16``) or a DINOv2 model.
        clip: CLIP checkpoint (hub id or folder).
        device: Where the models run.
        seed: Seed of the tiny models' weights.

    Returns:
        The encoders.

    Raises:
        ValueError: Unknown kind.
        RuntimeError: A pretrained model failed to load; the message names local copies or ``--encoders tiny``.
    """
    if kind == "pretrained":
        return _pretrained(dino, clip, device)
    if kind == "tiny":
        return _tiny(dino, device, seed)
    raise ValueError(f"Unknown encoders kind {kind!r}; choose one of {list(ENCODER_KINDS)}.")
