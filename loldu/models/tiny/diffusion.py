"""The tiny Stable Diffusion: a byte-level CLIP tokenizer, a small CLIP text encoder, VAE and UNet, built from
configs with random weights (offline). Import it from :mod:`loldu.models.tiny`, the home of every tiny model."""

from __future__ import annotations

from typing import Any

import torch

from loldu.models.diffusion import SD_SCHEDULER_CONFIG, DiffusionBundle, freeze
from loldu.models.diffusion import byte_clip_tokenizer as tiny_clip_tokenizer


def tiny_unet(sample_size: int = 8):
    """A random two-block SD-style UNet (one cross-attention block; 4 latent channels, text width 32).

    Args:
        sample_size: Latent side.
    """
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )


def tiny_clip_text_config(tokenizer: Any, max_prompt_tokens: int, hidden_size: int = 32, projection_dim: int = 32):
    """A small ``CLIPTextConfig`` that matches a tokenizer's vocabulary and special tokens.

    Args:
        tokenizer: The tokenizer (e.g. :func:`tiny_clip_tokenizer`).
        max_prompt_tokens: Position embeddings, i.e. the longest prompt.
        hidden_size: Width; 2 layers, 4 heads.
        projection_dim: Output size of the CLIP projection (used by ``CLIPModel``).

    Returns:
        The config.
    """
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        projection_dim=projection_dim,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=int(max_prompt_tokens),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def tiny_sd(resolution: int = 32, seed: int = 0, max_prompt_tokens: int = 32) -> DiffusionBundle:
    """A small Stable Diffusion with random weights, built from configs (offline), for tests and smoke runs.

    The VAE halves the image side (4 latent channels); the UNet has two blocks (one with cross-attention) with
    attention ``to_q``/``to_k``/``to_v``/``to_out.0`` Linear layers like SD's; the text encoder is a 2-layer CLIP
    over :func:`tiny_clip_tokenizer`; the noise scheduler has SD v1.5's settings.

    Args:
        resolution: Image side in pixels; a multiple of 4 (VAE and UNet each halve it once).
        seed: Seed of the weights (the global RNG state is restored afterwards).
        max_prompt_tokens: Longest prompt in tokens, special tokens included.

    Returns:
        The bundle; the VAE and text encoder are frozen and in eval mode.

    Raises:
        ValueError: Bad resolution or max_prompt_tokens.
    """
    from diffusers import AutoencoderKL, DDPMScheduler
    from transformers import CLIPTextModel

    resolution = int(resolution)
    if resolution < 4 or resolution % 4:
        raise ValueError(f"tiny_sd resolution must be a positive multiple of 4; got {resolution}.")
    if int(max_prompt_tokens) < 3:
        raise ValueError(f"max_prompt_tokens must be >= 3; got {max_prompt_tokens}.")
    tokenizer = tiny_clip_tokenizer(max_prompt_tokens)
    vae_blocks = (16, 32)
    vae_scale = 2 ** (len(vae_blocks) - 1)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * len(vae_blocks),
            up_block_types=("UpDecoderBlock2D",) * len(vae_blocks),
            block_out_channels=vae_blocks,
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=8,
            sample_size=resolution,
        )
        unet = tiny_unet(sample_size=resolution // vae_scale)
        text_encoder = CLIPTextModel(tiny_clip_text_config(tokenizer, max_prompt_tokens))
    noise_scheduler = DDPMScheduler.from_config(dict(SD_SCHEDULER_CONFIG))
    return DiffusionBundle(
        unet=unet,
        vae=freeze(vae),
        text_encoder=freeze(text_encoder),
        tokenizer=tokenizer,
        noise_scheduler=noise_scheduler,
        resolution=resolution,
        name="tiny-sd",
    )
