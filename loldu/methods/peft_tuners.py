"""Any PEFT method by its name, and the PEFT methods this project names: one builder, :func:`peft_entry`.

``method=peft method.peft_type=<type>`` applies any method the pinned PEFT ships that adapts layers (its tuners),
with the fields of its config class under ``method.config`` and PEFT's own defaults; a spec names it
``peft:<type>`` (``peft:ia3``), and so do ``metrics.json``, W&B and the report. The family entry ``peft`` builds
these entries on demand (:attr:`~loldu.methods.registry.MethodEntry.members`).

The named methods (``conf/method/<name>.yaml``) are entries of the same builder with this project's conventions:
adalora, dora, vblora, tinylora, road, ia3, loha, lokr and oft. What a PEFT method needs beyond its config is
attached per PEFT type (:data:`TYPE_EXTRAS`), so ``method=adalora`` and ``method=peft method.peft_type=adalora`` run
the same way:

* AdaLoRA reallocates its ranks during training: ``update_and_allocate`` after each optimizer step, its
  orthogonality term added to the loss, and ``total_step`` taken from the run's optimizer steps when left unset
  (:class:`~loldu.methods.registry.TrainingHooks`, called by :mod:`loldu.methods.training`).
* VB-LoRA's vector length and RoAd's group size must divide the adapted layers' sizes: where PEFT's default does
  not (a small model), the greatest common divisor of the default and those sizes is taken.
* IA3's feedforward modules, where unset, are the targets PEFT counts as feedforward for the architecture.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from peft import PeftType
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
from peft.tuners.adalora.layer import AdaLoraLayer
from peft.tuners.tuners_utils import BaseTuner
from peft.utils import TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING
from torch import nn

from loldu.methods.registry import MethodEntry, TrainingHooks, register_method

#: The family's name: ``method=peft``, and the prefix of its members' names (``peft:ia3``).
FAMILY = "peft"
#: Spec keys that mean one spec field whichever node sets them: ``method.config.target_modules`` replaces the model
#: group's targets, ``method.config.modules_to_save`` the heads.
SPEC_FIELDS = {"target_modules": "target_modules", "modules_to_save": "head_modules"}


# ----------------------------------------------------------------------------------------------- PEFT types


def shipped_types() -> dict[str, PeftType]:
    """PEFT's own methods by name (``IA3`` -> ``PeftType.IA3``): the types whose config class PEFT ships (not the
    ones this project adds to its enum, LOLDU, SVFIT...). The compose-time check reads the same names from PEFT's
    source (:mod:`loldu.config.peft_types`; the layers keep loldu.methods and loldu.config apart)."""
    return {
        name: member
        for name, member in PeftType.__members__.items()
        if getattr(PEFT_TYPE_TO_CONFIG_MAPPING.get(member), "__module__", "").startswith("peft.")
    }


def peft_type(name: str) -> PeftType:
    """The PEFT type called ``name``, in any case (``ia3``, ``LoHa``).

    Raises:
        ValueError: not one of PEFT's methods, with the closest name and the list.
    """
    shipped = shipped_types()
    upper = str(name).strip().upper().replace("-", "_")
    if upper in shipped:
        return shipped[upper]
    close = difflib.get_close_matches(upper, list(shipped), n=1, cutoff=0.6)
    hint = f"did you mean method.peft_type={close[0].lower()}? " if close else ""
    raise ValueError(
        f"method.peft_type={name} is not a PEFT method: {hint}the installed PEFT has "
        f"{', '.join(n.lower() for n in shipped)} (in any case)"
    )


def member_name(name: str) -> str:
    """``peft:<type in lower case>`` for a PEFT type name in any case."""
    return f"{FAMILY}:{peft_type(name).value.lower()}"


def spec_mapping(data: Mapping) -> dict:
    """A spec mapping as :class:`~loldu.methods.MethodSpec` takes it: ``method=peft``'s ``peft_type`` folded into
    the name (``peft:ia3``) and its ``config`` into the options; a ``target_modules`` or ``modules_to_save`` given
    among the options replaces the spec's (the model group's) targets or heads.

    Raises:
        ValueError: ``method=peft`` without a type, a name and a type that disagree, or a key given both in
            ``config`` and ``options``.
    """
    out = dict(data)
    name, given = out.get("name"), out.pop("peft_type", None)
    if name == FAMILY or (isinstance(name, str) and name.startswith(f"{FAMILY}:")):
        if given is None and name == FAMILY:
            raise ValueError("method=peft applies any PEFT method by its name: give method.peft_type, e.g. ia3")
        resolved = member_name(given if given is not None else name.split(":", 1)[1])
        if given is not None and name != FAMILY and member_name(name.split(":", 1)[1]) != resolved:
            raise ValueError(f"method name {name} and method.peft_type={given} name different PEFT methods")
        out["name"] = resolved
    config = dict(out.pop("config", None) or {})
    options = dict(out.get("options") or {})
    both = sorted(set(config) & set(options))
    if both:
        raise ValueError(f"{both} given both in method.config and method.options: give each once")
    options.update(config)
    for key, field_name in SPEC_FIELDS.items():
        if options.get(key) is not None:
            out[field_name] = options.pop(key)
        options.pop(key, None)
    out["options"] = options
    return out


# ----------------------------------------------------------------------------------------------- AdaLoRA

#: AdaLoRA's ``total_step`` until the run knows its optimizer steps (``fit_start`` then sets it): large enough for
#: any ``tinit``/``tfinal`` to pass the config's check; a config still holding it when training steps is refused.
UNTIL_FIT = 2**31 - 1


def _adalora_config(model: nn.Module):
    tuner = model.base_model
    return tuner, tuner.peft_config[tuner.trainable_adapter_name]


def _adalora_fit_start(model: nn.Module, total_steps: int) -> None:
    """Set ``total_step`` to the run's optimizer steps when the spec left it unset, and check the schedule fits.

    Raises:
        ValueError: ``tinit`` and ``tfinal`` leave no budgeting phase within ``total_step``.
    """
    _, config = _adalora_config(model)
    if config.total_step == UNTIL_FIT:
        config.total_step = int(total_steps)  # the rank allocator reads this same config
        info = getattr(model, "loldu_method", None)
        if info is not None:  # method.json records what ran
            info.spec.options["total_step"] = int(total_steps)
    if config.tinit >= config.total_step - config.tfinal:
        raise ValueError(
            f"AdaLoRA's schedule tinit={config.tinit}, tfinal={config.tfinal} leaves no budgeting phase in "
            f"total_step={config.total_step} optimizer steps: lower method.options.tinit/tfinal or train longer"
        )


def _adalora_after_step(model: nn.Module, step: int) -> None:
    """AdaLoRA's rank allocation after optimizer step ``step`` (PEFT's ``update_and_allocate``: importance scores
    from the gradients, then the singular values below the budget masked to zero)."""
    tuner, config = _adalora_config(model)
    if config.total_step == UNTIL_FIT:
        raise RuntimeError(
            "AdaLoRA's total_step was never set: give method.options.total_step, or call "
            "loldu.methods.start_training(model, total_steps) before training"
        )
    tuner.update_and_allocate(step)


def _adalora_penalty(model: nn.Module) -> torch.Tensor | None:
    """AdaLoRA's orthogonality term: ``orth_reg_weight`` x the mean over adapted layers of ``||A A^T - I||_F`` and
    ``||B^T B - I||_F`` (PEFT adds it only to a loss the model computes itself; the tasks here compute theirs)."""
    tuner, config = _adalora_config(model)
    name = tuner.trainable_adapter_name
    if not config.orth_reg_weight:
        return None
    terms = []
    for layer in tuner.model.modules():
        if isinstance(layer, AdaLoraLayer) and name in layer.lora_A:
            for factor in (layer.lora_A[name], layer.lora_B[name].T):  # (r, in) and (r, out): orthonormal rows
                gram = factor @ factor.T
                eye = torch.eye(gram.shape[0], device=gram.device, dtype=gram.dtype)
                terms.append(torch.linalg.matrix_norm(gram - eye))
    return config.orth_reg_weight * torch.stack(terms).mean() if terms else None


_ALLOCATOR_AVERAGES = ("ipt", "exp_avg_ipt", "exp_avg_unc")


def _adalora_state(model: nn.Module) -> dict:
    """The rank allocator's importance scores and their averages (keyed by parameter name), and the rank pattern
    once the final phase has fixed it: what ``update_and_allocate`` reads besides the model."""
    tuner, config = _adalora_config(model)
    allocator = tuner.rankallocator
    state = {key: {n: t.detach().clone() for n, t in getattr(allocator, key).items()} for key in _ALLOCATOR_AVERAGES}
    return {**state, "rank_pattern": copy.deepcopy(config.rank_pattern)}


def _adalora_load_state(model: nn.Module, state: dict) -> None:
    tuner, config = _adalora_config(model)
    params = dict(tuner.model.named_parameters())
    unknown = sorted(set().union(*(state[key] for key in _ALLOCATOR_AVERAGES)) - set(params))
    if unknown:
        raise ValueError(f"the checkpoint's AdaLoRA state names parameters this model lacks: {unknown[:3]}")
    for key in _ALLOCATOR_AVERAGES:
        setattr(tuner.rankallocator, key, {n: t.to(params[n].device) for n, t in state[key].items()})
    config.rank_pattern = copy.deepcopy(state["rank_pattern"])


ADALORA_HOOKS = TrainingHooks(
    fit_start=_adalora_fit_start,
    after_step=_adalora_after_step,
    penalty=_adalora_penalty,
    state=_adalora_state,
    load_state=_adalora_load_state,
)


# ----------------------------------------------------------------------------------------------- sizes from the model


@dataclasses.dataclass(frozen=True)
class FittedOptions:
    """A :attr:`~loldu.methods.registry.MethodEntry.model_options` that chooses config ``fields`` from the model
    where the spec leaves them unset. A run leaves those fields null in ``config.yaml`` (their value depends on the
    model, not on the config class); ``adapter_config.json`` holds what ran."""

    fields: tuple[str, ...]
    choose: Callable[[nn.Module, Any], dict]

    def __call__(self, model: nn.Module, spec) -> dict[str, Any]:
        return self.choose(model, spec)


def _target_layers(model: nn.Module, targets) -> list[nn.Module]:
    """The layers with ``in_features``/``out_features`` whose names end in one of ``targets`` (a list)."""
    return [
        module
        for name, module in model.named_modules()
        if hasattr(module, "in_features")
        and hasattr(module, "out_features")
        and any(name == t or name.endswith(f".{t}") for t in targets)
    ]


def _dividing(type_name: str, field_name: str, sides: tuple[str, ...]) -> FittedOptions:
    """``model_options`` for a size that must divide the adapted layers' ``sides`` (in/out features): the config
    class's default where it does, else the greatest common divisor of it and those sizes (a power of two for
    PEFT's defaults, 256 and 64)."""

    def fit(model: nn.Module, spec) -> dict[str, Any]:
        if spec.options.get(field_name) is not None or not isinstance(spec.target_modules, (list, tuple)):
            return {}  # set by the user, or targets PEFT resolves itself (null, a regex)
        config_cls = PEFT_TYPE_TO_CONFIG_MAPPING[PeftType[type_name]]
        default = next(f.default for f in dataclasses.fields(config_cls) if f.name == field_name)
        sizes = [getattr(layer, side) for layer in _target_layers(model, spec.target_modules) for side in sides]
        common = math.gcd(default, *sizes)
        return {field_name: common} if 2 <= common < default else {}

    return FittedOptions((field_name,), fit)


def _ia3_feedforward(model: nn.Module, spec) -> dict[str, Any]:
    """IA3's ``feedforward_modules`` where unset: the targets whose layers PEFT counts as feedforward for the
    architecture (BERT: ``output.dense``; LLaMA: ``down_proj``), none for an architecture PEFT does not list. (PEFT
    itself would take the whole per-architecture list, which its saved config then refuses to load unless every
    name is also a target.)"""
    if spec.options.get("feedforward_modules") is not None or not isinstance(spec.target_modules, (list, tuple)):
        return {}
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    feedforward = TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING.get(model_type, [])
    names = [name for name, _ in model.named_modules()]
    chosen = [
        target
        for target in spec.target_modules
        if any((n == target or n.endswith(f".{target}")) and any(n.endswith(f) for f in feedforward) for n in names)
    ]
    return {"feedforward_modules": chosen}


# ----------------------------------------------------------------------------------------------- entries

#: Per PEFT type: the config fields ``MethodSpec.r`` and ``.alpha`` set where they are not ``r`` and
#: ``lora_alpha``/``alpha``.
RANK_ALPHA = {"ADALORA": ("target_r", "lora_alpha"), "FOURIERFT": ("n_frequency", "scaling")}
#: Per PEFT type: what it needs beyond its config (MethodEntry fields), for its named entry and for ``peft:<type>``.
TYPE_EXTRAS: dict[str, dict[str, Any]] = {
    "ADALORA": {"hooks": ADALORA_HOOKS, "base_options": {"total_step": UNTIL_FIT}},
    "VBLORA": {"model_options": _dividing("VBLORA", "vector_length", ("in_features", "out_features"))},
    "ROAD": {"model_options": _dividing("ROAD", "group_size", ("out_features",))},
    "IA3": {"model_options": FittedOptions(("feedforward_modules",), _ia3_feedforward)},
}


def peft_entry(peft_type_name: str, name: str | None = None, **fields: Any) -> MethodEntry:
    """The method entry of a PEFT type: its config class, rank and alpha fields, and :data:`TYPE_EXTRAS`.

    Args:
        peft_type_name: PEFT's name of the method, in any case (``ia3``).
        name: The entry's name; None: ``peft:<type>``.
        **fields: Further :class:`~loldu.methods.registry.MethodEntry` fields (``alpha_is_rank``, ``base_options``
            of a preset such as DoRA's ``use_dora``), replacing the type's.

    Raises:
        ValueError: not a PEFT method, or one that trains virtual tokens instead of adapting layers.
    """
    member = peft_type(peft_type_name)
    tuner = PEFT_TYPE_TO_TUNER_MAPPING.get(member)
    if not (isinstance(tuner, type) and issubclass(tuner, BaseTuner)):
        raise ValueError(
            f"method.peft_type={member.value.lower()} is a prompt-learning method (it trains virtual tokens the "
            "model is fed, and the tasks here feed none): method=peft applies PEFT's methods that adapt layers, "
            "e.g. method.peft_type=lora, ia3, loha, lokr, oft"
        )
    config_cls = PEFT_TYPE_TO_CONFIG_MAPPING[member]
    names = {f.name for f in dataclasses.fields(config_cls)}
    default_alpha = next((a for a in ("lora_alpha", "alpha") if a in names), None)
    rank_field, alpha_field = RANK_ALPHA.get(member.value, ("r" if "r" in names else None, default_alpha))
    kwargs: dict[str, Any] = {"rank_field": rank_field, "alpha_field": alpha_field}
    kwargs.update(TYPE_EXTRAS.get(member.value, {}))
    kwargs.update(fields)
    return MethodEntry(name or f"{FAMILY}:{member.value.lower()}", config_cls, **kwargs)


@functools.cache
def _member(name: str) -> MethodEntry:
    return peft_entry(name)


@functools.cache  # asked for at every training step (the method's hooks): one type lookup per name
def family_member(name: str) -> MethodEntry:
    """The entry of ``peft:<name>`` (``name`` in any case), built once."""
    return _member(peft_type(name).value)


#: The PEFT methods this project names (``conf/method/<name>.yaml``); see each YAML for the recommended settings.
NAMED = (
    peft_entry("ADALORA", "adalora"),  # rank: target_r (the average rank after reallocation)
    peft_entry("LORA", "dora", alpha_is_rank=True, base_options={"use_dora": True}),  # LoRA's conventions here
    peft_entry("VBLORA", "vblora"),
    peft_entry("TINYLORA", "tinylora"),
    peft_entry("ROAD", "road"),
    peft_entry("IA3", "ia3"),
    peft_entry("LOHA", "loha", alpha_is_rank=True),
    peft_entry("LOKR", "lokr", alpha_is_rank=True),
    peft_entry("OFT", "oft", rank_field=None),  # its size is oft_block_size (r and a block size exclude each other)
)

register_method(MethodEntry(FAMILY, rank_field=None, members=family_member))
for _entry in NAMED:
    register_method(_entry)
