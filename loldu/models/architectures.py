"""The paper's model architectures as configs (sizes and vocabularies, no weights), shipped with the package.

``model.pretrained=false`` builds one of them with random weights, offline: the same modules, shapes and adapter
parameter counts as the pre-trained model, for checking a paper run's path (and its memory, on the meta device)
on a machine without the hub. The numbers are the published configs' (``config.json`` of each hub repository);
the builders read them with what ships offline: MiniLM's tokenizer for RoBERTa (its ids all inside RoBERTa's
vocabulary), SmolLM2's for LLaMA (its vocabulary replaces LLaMA's; embeddings are not adapted, so adapter counts
are the real model's), the in21k normalisation for ViT (mean = std = 0.5), a byte-level CLIP tokenizer for Stable
Diffusion.
"""

from __future__ import annotations

from typing import Any

#: hub id -> (transformers ``model_type``, config fields). Only fields that differ from transformers' defaults for
#: that model type, or that define the size, are listed.
ARCHITECTURES: dict[str, tuple[str, dict[str, Any]]] = {
    "google/vit-base-patch16-224-in21k": (
        "vit",
        {
            "hidden_size": 768,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "intermediate_size": 3072,
            "image_size": 224,
            "patch_size": 16,
            "num_channels": 3,
            "qkv_bias": True,
            "layer_norm_eps": 1e-12,
        },
    ),
    "FacebookAI/roberta-base": (
        "roberta",
        {
            "vocab_size": 50265,
            "hidden_size": 768,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "intermediate_size": 3072,
            "max_position_embeddings": 514,
            "type_vocab_size": 1,
            "layer_norm_eps": 1e-5,
            "pad_token_id": 1,
            "bos_token_id": 0,
            "eos_token_id": 2,
        },
    ),
    "meta-llama/Llama-2-7b-hf": (
        "llama",
        {
            "vocab_size": 32000,
            "hidden_size": 4096,
            "intermediate_size": 11008,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 32,
            "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "hidden_act": "silu",
            "tie_word_embeddings": False,
            "bos_token_id": 1,
            "eos_token_id": 2,
        },
    ),
}
ARCHITECTURES["roberta-base"] = ARCHITECTURES["FacebookAI/roberta-base"]

#: Stable Diffusion v1.5's UNet (diffusers ``UNet2DConditionModel``): 4 latent channels at 1/8 of the image side,
#: cross-attention on CLIP ViT-L/14's 768-wide text states.
SD15_UNET: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": [320, 640, 1280, 1280],
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}

#: Stable Diffusion v1.5's VAE (diffusers ``AutoencoderKL``): 8x down-sampling to 4 latent channels.
SD15_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}

#: Stable Diffusion v1.5's text encoder, CLIP ViT-L/14's (transformers ``CLIPTextConfig``); its vocabulary, 49,408,
#: holds every id of the offline byte-level tokenizer that reads it with ``model.pretrained=false``.
SD15_TEXT_ENCODER: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
}


def architecture(name_or_path: str, **overrides: Any) -> Any:
    """The transformers config of a paper model, without its weights.

    Args:
        name_or_path: the hub id the model config names (``model.builder.name_or_path``).
        **overrides: config fields to set (e.g. ``num_labels``, ``num_hidden_layers`` for a slice).

    Raises:
        ValueError: no shipped architecture for ``name_or_path``, naming those there are.
    """
    from transformers import AutoConfig

    if name_or_path not in ARCHITECTURES:
        raise ValueError(
            f"model.pretrained=false builds a shipped architecture, and there is none for {name_or_path!r}: "
            f"use one of {', '.join(sorted(ARCHITECTURES))}, or model.pretrained=true"
        )
    model_type, fields = ARCHITECTURES[name_or_path]
    return AutoConfig.for_model(model_type, **{**fields, **overrides})
