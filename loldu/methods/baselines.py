"""The baselines: PEFT's LoRA, PiSSA, VeRA and FourierFT, and the plain methods (BitFit, full fine-tuning, linear
probing; for Stable Diffusion, Textual Inversion and DreamBooth's full UNet fine-tuning), registered in the method
table. Their defaults are PEFT's config defaults."""

from __future__ import annotations

from peft import FourierFTConfig, LoraConfig, VeraConfig
from torch import nn

from loldu.methods import textual_inversion
from loldu.methods.registry import MethodEntry, register_method
from loldu.methods.state import full_state


def in_head(param_name: str, heads) -> bool:
    """Whether parameter ``param_name`` lies inside one of the modules ``heads`` (matched by dotted name)."""
    dotted = f".{param_name}."
    return any(f".{h}." in dotted for h in heads)


def _bitfit_trains(name: str, spec) -> bool:
    return name.endswith("bias") or in_head(name, spec.head_modules)


def _probe_trains(name: str, spec) -> bool:
    return in_head(name, spec.head_modules)


def _all_train(name: str, spec) -> bool:
    return True


def _check_bitfit(model: nn.Module, spec) -> None:
    if not any(n.endswith("bias") for n, _ in model.named_parameters()):
        raise ValueError(f"bitfit trains biases, and {type(model).__name__} has no bias parameters")


def _check_probe(model: nn.Module, spec) -> None:
    if not spec.head_modules:
        raise ValueError("linear_probe trains the head only: set head_modules (e.g. ['classifier'])")


def _check_unet(model: nn.Module, spec) -> None:
    if getattr(getattr(model, "config", None), "cross_attention_dim", None) is None:
        raise ValueError(
            f"dreambooth_full fine-tunes a Stable Diffusion UNet in full, and {type(model).__name__} is none: use it "
            "with a diffusion model and task (e.g. model=tiny_sd task=dreambooth_animal), or method=full elsewhere"
        )


BASELINES = (
    MethodEntry("lora", LoraConfig, alpha_field="lora_alpha", alpha_is_rank=True),
    MethodEntry(
        "pissa", LoraConfig, alpha_field="lora_alpha", alpha_is_rank=True, base_options={"init_lora_weights": "pissa"}
    ),
    MethodEntry("vera", VeraConfig),
    MethodEntry("fourierft", FourierFTConfig, rank_field="n_frequency", alpha_field="scaling"),
    MethodEntry("bitfit", rank_field=None, trainable=_bitfit_trains, check=_check_bitfit),
    MethodEntry("full", rank_field=None, trainable=_all_train, adapter_state=full_state),
    MethodEntry("linear_probe", rank_field=None, trainable=_probe_trains, check=_check_probe),
    MethodEntry(
        "textual_inversion",
        rank_field=None,
        trainable=textual_inversion.trains,
        check=textual_inversion.check_model,
        options_cls=textual_inversion.TextualInversionOptions,
    ),
    MethodEntry("dreambooth_full", rank_field=None, trainable=_all_train, check=_check_unet, adapter_state=full_state),
)

for _entry in BASELINES:
    register_method(_entry)
