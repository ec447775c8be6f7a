"""What a training loop asks of the method of a model from :func:`~loldu.methods.apply_method`, whatever it is: its
:class:`~loldu.methods.registry.TrainingHooks` (AdaLoRA reallocates its ranks), and whether it can be merged.

:class:`loldu.tasks.common.FineTuneModule` calls the three hooks; a hand-written loop does the same::

    start_training(model, total_steps)
    for step in range(total_steps):
        loss = task_loss(model, batch)
        extra = training_penalty(model)
        (loss if extra is None else loss + extra).backward()
        optimizer.step()
        after_optimizer_step(model, step)
        optimizer.zero_grad()

A checkpoint that is to resume exactly also keeps ``training_state(model)`` and gives it back with
``load_training_state`` (AdaLoRA's importance averages and rank pattern live outside the model's state dict).
"""

from __future__ import annotations

import torch
from peft import PeftModel
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils.other import ModulesToSaveWrapper
from torch import nn

from loldu.methods.registry import TrainingHooks, get_method


def _hooks(model: nn.Module) -> TrainingHooks | None:
    info = getattr(model, "loldu_method", None)
    return get_method(info.spec.name).hooks if info is not None else None


def start_training(model: nn.Module, total_steps: int) -> None:
    """Once, before the first step: the method learns the run's number of optimizer steps (AdaLoRA's
    ``total_step`` where the spec left it unset)."""
    hooks = _hooks(model)
    if hooks is not None and hooks.fit_start is not None:
        hooks.fit_start(model, int(total_steps))


def after_optimizer_step(model: nn.Module, step: int) -> None:
    """After optimizer step ``step`` (counted from 0), before the gradients are zeroed (AdaLoRA's
    ``update_and_allocate``)."""
    hooks = _hooks(model)
    if hooks is not None and hooks.after_step is not None:
        hooks.after_step(model, int(step))


def training_penalty(model: nn.Module) -> torch.Tensor | None:
    """A term the method adds to the training loss (AdaLoRA's orthogonality), or None."""
    hooks = _hooks(model)
    if hooks is None or hooks.penalty is None:
        return None
    return hooks.penalty(model)


def training_state(model: nn.Module) -> dict | None:
    """What the method keeps outside the model while it trains (AdaLoRA's rank allocator), for a checkpoint; None
    when it keeps nothing."""
    hooks = _hooks(model)
    return hooks.state(model) if hooks is not None and hooks.state is not None else None


def load_training_state(model: nn.Module, state: dict) -> None:
    """Put back a :func:`training_state` when a run resumes.

    Raises:
        ValueError: the model's method keeps no such state (the checkpoint is of another method).
    """
    hooks = _hooks(model)
    if hooks is None or hooks.load_state is None:
        raise ValueError("the checkpoint holds a method's training state, but this run's method keeps none")
    hooks.load_state(model, state)


def check_mergeable(model: nn.Module) -> None:
    """Refuse a model whose method cannot be folded into its base (:func:`~loldu.methods.merge_method`): a PEFT
    method whose layers have no ``merge``. Checked before training when a run asks for ``save_merged=true``.

    Raises:
        ValueError: naming the method and the layer type, and what to do instead.
    """
    if not isinstance(model, PeftModel):
        return
    for name, module in model.named_modules():
        if isinstance(module, BaseTunerLayer) and not isinstance(module, ModulesToSaveWrapper):
            if type(module).merge is BaseTunerLayer.merge:  # PEFT's base class: "not implemented"
                info = getattr(model, "loldu_method", None)
                method = info.spec.name if info is not None else type(model.base_model).__name__
                raise ValueError(
                    f"save_merged=true: method {method} cannot be merged into the base model (PEFT's "
                    f"{type(module).__name__} layers, e.g. {name}, have no merge); drop save_merged (adapter/ is "
                    "saved either way)"
                )
