"""Stable Diffusion components for DreamBooth-style fine-tuning of the UNet.

:func:`sd_pipeline` loads a Stable Diffusion checkpoint (hub id or local folder) with diffusers;
:func:`loldu.models.tiny.tiny_sd` builds a small random model with the same structure from configs, offline, for
tests and smoke runs. Both return a
:class:`DiffusionBundle`: the UNet (what adapters target: its attention ``to_q``, ``to_k``, ``to_v``, ``to_out.0``
Linear layers), the frozen VAE and text encoder, the tokenizer and the training noise scheduler.

diffusers is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
SD_VAE = "stabilityai/sd-vae-ft-mse"
# Special tokens of the byte-level CLIP tokenizer built offline (byte_clip_tokenizer).
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
SAMPLERS = ("ddim", "dpm")

# The training noise schedule of Stable Diffusion v1.x. The two keys DDPMScheduler does not take
# (``set_alpha_to_one``, ``skip_prk_steps``) are kept in its config, so sampling schedulers made from it
# with ``from_config`` get SD's settings too.
SD_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "clip_sample": False,
    "steps_offset": 1,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
}


def prompt_token_count(tokenizer: Any, prompt: str) -> int:
    """Number of tokens of a prompt, special tokens included, without truncation.

    Args:
        tokenizer: A transformers tokenizer.
        prompt: The text.

    Returns:
        The token count.
    """
    return len(tokenizer(prompt, truncation=False, add_special_tokens=True, verbose=False)["input_ids"])


def prompt_ids(tokenizer: Any, prompts: str | list[str]) -> torch.Tensor:
    """Token ids padded to ``tokenizer.model_max_length`` and never truncated, int64 of shape (N, max_length).

    Args:
        tokenizer: The text encoder's tokenizer.
        prompts: One prompt or a list.
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    tokens = tokenizer(
        prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=False, return_tensors="pt"
    )
    return tokens.input_ids.to(torch.int64)


def check_prompt_length(tokenizer: Any, prompt: str, what: str = "prompt") -> int:
    """Refuses a prompt the text encoder cannot take whole (CLIP is never asked to truncate it silently).

    Args:
        tokenizer: A transformers tokenizer; its ``model_max_length`` is the limit.
        prompt: The text.
        what: Names the prompt in the message (e.g. ``"data.instance_prompt"``).

    Returns:
        The prompt's token count.

    Raises:
        ValueError: The prompt is longer than the limit; the message gives both numbers.
    """
    count = prompt_token_count(tokenizer, prompt)
    limit = int(tokenizer.model_max_length)
    if count > limit:
        raise ValueError(
            f"The {what} {prompt!r} is {count} tokens long (special tokens included); the text encoder takes at "
            f"most {limit}. Shorten it."
        )
    return count


@dataclass
class DiffusionBundle:
    """A Stable Diffusion model split into the parts DreamBooth training needs.

    Attributes:
        unet: The ``UNet2DConditionModel`` to adapt.
        vae: The ``AutoencoderKL`` (frozen, eval mode); latents are scaled by ``vae.config.scaling_factor``.
        text_encoder: The ``CLIPTextModel`` (frozen, eval mode).
        tokenizer: Its ``CLIPTokenizer``; ``model_max_length`` is the prompt limit in tokens.
        noise_scheduler: The ``DDPMScheduler`` used to add noise during training.
        resolution: Image side in pixels that training and sampling use.
        family: Always ``"diffusion"``.
        name: Where the weights came from (hub id, folder, or ``"tiny-sd"``).
        trained: The part the method trains: ``"unet"``, or ``"text_encoder"`` once :meth:`add_placeholder_tokens`
            has given it new tokens (textual inversion).
    """

    unet: nn.Module
    vae: nn.Module
    text_encoder: nn.Module
    tokenizer: Any
    noise_scheduler: Any
    resolution: int
    family: str = "diffusion"
    name: str = ""
    trained: str = "unet"

    @property
    def vae_scale_factor(self) -> int:
        """How much smaller the latents are than the images, per side."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def add_placeholder_tokens(self, options: Any) -> nn.Module:
        """Textual inversion: add the placeholder token(s) to the tokenizer and their trainable rows to the text
        encoder (:func:`loldu.methods.textual_inversion.add_placeholder_tokens`); from now on the text encoder is
        what trains (``trained``) and every pipeline of this bundle knows the new word.

        Args:
            options: A :class:`~loldu.methods.textual_inversion.TextualInversionOptions` with its initializer word.

        Returns:
            The new :class:`~loldu.methods.textual_inversion.PlaceholderEmbedding`.
        """
        from loldu.methods.textual_inversion import add_placeholder_tokens

        module = add_placeholder_tokens(self.tokenizer, self.text_encoder, options)
        self.trained = "text_encoder"
        return module

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Text-encoder hidden states of prompts, padded to ``tokenizer.model_max_length``.

        Args:
            prompts: The prompts.

        Returns:
            The last hidden states, shape (len(prompts), model_max_length, hidden size), on the text encoder's device.

        Raises:
            ValueError: A prompt is longer than the limit (names the prompt, its token count and the limit).
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        for prompt in prompts:
            check_prompt_length(self.tokenizer, prompt)
        device = next(self.text_encoder.parameters()).device
        with torch.no_grad():
            return self.text_encoder(prompt_ids(self.tokenizer, prompts).to(device))[0]

    def pipeline(self, unet: nn.Module | None = None, scheduler: str = "ddim") -> Any:
        """A ``StableDiffusionPipeline`` for sampling, sharing this bundle's modules (nothing is copied).

        Args:
            unet: The UNet to sample with (e.g. an adapted one); default ``self.unet``.
            scheduler: Sampler, ``"ddim"`` or ``"dpm"`` (DPM-Solver++ multistep), made from the training
                scheduler's config.

        Returns:
            The pipeline, without safety checker and with its progress bar disabled.

        Raises:
            ValueError: Unknown scheduler name.
        """
        from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, StableDiffusionPipeline

        samplers = {"ddim": DDIMScheduler, "dpm": DPMSolverMultistepScheduler}
        if scheduler not in samplers:
            raise ValueError(f"Unknown sampling scheduler {scheduler!r}; choose one of {list(SAMPLERS)}.")
        pipe = StableDiffusionPipeline(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=unet if unet is not None else self.unet,
            scheduler=samplers[scheduler].from_config(self.noise_scheduler.config),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe


def _torch_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"Unknown dtype {dtype!r}; use float32, float16 or bfloat16.")
    return value


def freeze(module: nn.Module) -> nn.Module:
    """``module`` frozen (no gradients) and in eval mode: the parts of a pipeline no method adapts."""
    module.requires_grad_(False)
    return module.eval()


def _load_error(what: str, where: str, err: Exception) -> RuntimeError:
    return RuntimeError(
        f"could not load the {what} from {where!r} ({type(err).__name__}: {err}). Without network access, point "
        "model.builder.name_or_path (UNet, text encoder, tokenizer, scheduler) and model.builder.vae at local "
        "copies: folders written by save_pretrained (the pipeline folder with its unet/, text_encoder/, tokenizer/, "
        "scheduler/ and vae/ sub-folders), or snapshots in the HF cache with HF_HUB_OFFLINE=1."
    )


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable characters (what byte-level BPE sees)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def byte_clip_tokenizer(model_max_length: int = 32) -> Any:
    """A CLIP tokenizer with a byte-level vocabulary and no merges, built in memory (no download, no files).

    Every byte maps to one symbol, in a plain and a word-final (``</w>``) form, so any text tokenises to about one
    token per character (plus the start and end tokens).

    Args:
        model_max_length: The prompt limit in tokens, special tokens included.

    Returns:
        A ``CLIPTokenizer`` with 514 tokens; ``<|endoftext|>`` is also the padding and unknown token.
    """
    from transformers import CLIPTokenizer

    symbols = list(_bytes_to_unicode().values())
    tokens = [*symbols, *(s + "</w>" for s in symbols), BOS_TOKEN, EOS_TOKEN]
    vocab = {token: i for i, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=int(model_max_length))


def sd_pipeline(
    name_or_path: str = SD15,
    vae: str | None = SD_VAE,
    revision: str | None = None,
    dtype: str = "float32",
    resolution: int = 512,
    pretrained: bool = True,
) -> DiffusionBundle:
    """Loads Stable Diffusion's components with diffusers/transformers ``from_pretrained``.

    ``pretrained=False``: SD-1.5's architecture with random weights instead (:func:`sd_architecture`).

    Args:
        name_or_path: A hub id or a local pipeline folder (with ``unet``, ``text_encoder``, ``tokenizer``,
            ``scheduler`` and, when ``vae`` is not given, ``vae`` sub-folders).
        vae: A separate VAE (hub id or folder written by ``save_pretrained``); None or ``""`` uses the pipeline's.
        revision: Git revision of ``name_or_path`` (not applied to a separate ``vae``).
        dtype: Weight dtype name (``float32``, ``float16``, ``bfloat16``).
        resolution: Training/sampling image side in pixels; a multiple of 8.

    Returns:
        The bundle; the VAE and text encoder are frozen and in eval mode.

    Raises:
        ValueError: Bad resolution or dtype.
        RuntimeError: A component failed to load; the message names how to use local copies.
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    resolution = int(resolution)
    if resolution < 8 or resolution % 8:
        raise ValueError(f"model.builder.resolution must be a positive multiple of 8; got {resolution}.")
    torch_dtype = _torch_dtype(dtype)
    if not pretrained:
        return sd_architecture(resolution, torch_dtype)
    parts: dict[str, Any] = {}
    loaders = {
        "unet": lambda: UNet2DConditionModel.from_pretrained(
            name_or_path, subfolder="unet", revision=revision, torch_dtype=torch_dtype
        ),
        "text_encoder": lambda: CLIPTextModel.from_pretrained(
            name_or_path, subfolder="text_encoder", revision=revision, dtype=torch_dtype
        ),
        "tokenizer": lambda: CLIPTokenizer.from_pretrained(name_or_path, subfolder="tokenizer", revision=revision),
        "scheduler": lambda: DDPMScheduler.from_pretrained(name_or_path, subfolder="scheduler", revision=revision),
    }
    for what, load in loaders.items():
        try:
            parts[what] = load()
        except Exception as err:  # hub, file-system and format errors all come with many types
            raise _load_error(what, name_or_path, err) from err
    try:
        if vae:
            parts["vae"] = AutoencoderKL.from_pretrained(vae, torch_dtype=torch_dtype)
        else:
            parts["vae"] = AutoencoderKL.from_pretrained(
                name_or_path, subfolder="vae", revision=revision, torch_dtype=torch_dtype
            )
    except Exception as err:
        raise _load_error("vae", vae or name_or_path, err) from err
    return DiffusionBundle(
        unet=parts["unet"],
        vae=freeze(parts["vae"]),
        text_encoder=freeze(parts["text_encoder"]),
        tokenizer=parts["tokenizer"],
        noise_scheduler=parts["scheduler"],
        resolution=resolution,
        name=str(name_or_path),
    )


def sd_architecture(resolution: int = 512, dtype: torch.dtype = torch.float32) -> DiffusionBundle:
    """Stable Diffusion v1.5 at its real sizes with random weights, offline (``model.pretrained=false``): the UNet,
    VAE and CLIP ViT-L/14 text encoder of :mod:`loldu.models.architectures`, read by :func:`byte_clip_tokenizer`
    (77 tokens), and SD v1.5's noise schedule. The method's targets and counts are the real model's.
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from loldu.models.architectures import SD15_TEXT_ENCODER, SD15_UNET, SD15_VAE

    tokenizer = byte_clip_tokenizer(SD15_TEXT_ENCODER["max_position_embeddings"])
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    text_config = CLIPTextConfig(**SD15_TEXT_ENCODER, **ids, pad_token_id=tokenizer.pad_token_id)
    unet = UNet2DConditionModel(**{**SD15_UNET, "sample_size": resolution // 8}).to(dtype)
    return DiffusionBundle(
        unet=unet,
        vae=freeze(AutoencoderKL(**{**SD15_VAE, "sample_size": resolution}).to(dtype)),
        text_encoder=freeze(CLIPTextModel(text_config).to(dtype)),
        tokenizer=tokenizer,
        noise_scheduler=DDPMScheduler.from_config(dict(SD_SCHEDULER_CONFIG)),
        resolution=resolution,
        name="sd15-architecture",
    )
