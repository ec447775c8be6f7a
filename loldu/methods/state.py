"""What a checkpoint keeps: the state each method declares as its adapter, not names that match a pattern."""

from __future__ import annotations

import torch
from peft import PeftModel
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer
from peft.utils.other import ModulesToSaveWrapper
from torch import nn

from loldu.methods.registry import get_method


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The entries of ``model.state_dict()`` that training changed or that the adapter needs to be rebuilt.

    The method is asked (``MethodEntry.adapter_state``); by default:

    * PEFT methods (a ``PeftModel``): the trainable parameters, plus every persistent tensor held by what each
      tuner layer declares as its own (PEFT's ``adapter_layer_names`` and ``other_param_names``: LoLDU's
      reference, pivots, row/column orders and fingerprint; VeRA's shared projections...), plus kept heads
      (``modules_to_save``) whole. The frozen base and LoLDU/SVFit's factor matrices (rebuilt from the base) are
      left out.
    * plain methods (bitfit, linear_probe): their trainable parameters; ``full``: the whole state.

    Args:
        model: A model returned by :func:`loldu.methods.apply_method` (or a ``PeftModel``).

    Returns:
        ``{key: tensor}`` with the keys of ``model.state_dict()``; loading it with ``strict=False`` into a
        freshly built and adapted model restores the adapter exactly.
    """
    info = getattr(model, "loldu_method", None)
    entry = get_method(info.spec.name) if info is not None else None
    if entry is not None and entry.adapter_state is not None:
        return entry.adapter_state(model)
    if isinstance(model, PeftModel):
        return declared_tuner_state(model)
    return trainable_state(model)


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state-dict entries of ``model``'s trainable parameters."""
    trainable = {name for name, p in model.named_parameters(remove_duplicate=False) if p.requires_grad}
    return {k: v for k, v in model.state_dict().items() if k in trainable}


def full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """All of ``model.state_dict()`` (full fine-tuning changes everything)."""
    return dict(model.state_dict())


def declared_tuner_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Trainable parameters plus the persistent state PEFT tuner layers and kept heads declare as theirs.

    State that the layers declare but their tuner holds once for all of them (VeRA's shared projections) is kept
    under the tuner's name too, as PEFT saves it.
    """
    keys = set(trainable_state(model))
    declared: set[str] = set()
    tuners = []
    for name, module in model.named_modules(remove_duplicate=False):
        prefix = f"{name}." if name else ""
        if isinstance(module, ModulesToSaveWrapper):
            keys.update(module.modules_to_save.state_dict(prefix=f"{prefix}modules_to_save.").keys())
        elif isinstance(module, BaseTuner):
            tuners.append((prefix, module))
        elif isinstance(module, BaseTunerLayer):
            names = (*module.adapter_layer_names, *module.other_param_names)
            declared.update(names)
            keys.update(_held_keys(module, prefix, names))
    for prefix, tuner in tuners:
        keys.update(_held_keys(tuner, prefix, declared))
    return {k: v for k, v in model.state_dict().items() if k in keys}


def _held_keys(module: nn.Module, prefix: str, names) -> set[str]:
    """State-dict keys of the attributes ``names`` of ``module`` (submodules or tensors it holds)."""
    keys = set()
    for attr in names:
        held = getattr(module, attr, None)
        if isinstance(held, nn.Module):
            keys.update(held.state_dict(prefix=f"{prefix}{attr}.").keys())
        elif isinstance(held, torch.Tensor):
            keys.add(f"{prefix}{attr}")
    return keys
