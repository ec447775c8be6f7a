"""Mixed-adapter batches for LoLDU/SVFit (PEFT's ``adapter_names`` convention).

``peft_model(x, adapter_names=["a", "b", "__base__", ...])`` runs each sample
through its own adapter (``"__base__"``: the pre-trained model), at inference
only. :class:`~loldu.methods.diagonal.model.DiagonalModel` checks the names and
hands them to every adapted layer through forward pre-hooks; the layer adds
each adapter's rank-r update to its samples' rows of the base output.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial

import torch
from peft.utils.other import AuxiliaryTrainingWrapper
from torch import nn

BASE_NAME = "__base__"


def check_mixed_batch(layer, x: torch.Tensor, adapter_names: Sequence[str]) -> None:
    """Refuse a mixed batch the layer cannot run as asked.

    Messages are PEFT's (LoRA's ``_check_forward_args``).

    Raises:
        ValueError: names and samples differ in number, or adapters are merged.
    """
    if len(x) != len(adapter_names):
        raise ValueError(
            "Length of `adapter_names` should be the same as the number of inputs, but got "
            f"{len(adapter_names)} and {len(x)} respectively."
        )
    if layer.merged:
        raise ValueError(
            "Cannot pass `adapter_names` when there are merged adapters, please call `unmerge_adapter` first."
        )


def mixed_batch_forward(layer, x: torch.Tensor, adapter_names: Sequence[str], *args, **kwargs) -> torch.Tensor:
    """The base output plus, for each sample, its own adapter's update (none for ``__base__``)."""
    check_mixed_batch(layer, x, adapter_names)
    result = layer.get_base_layer()(x, *args, **kwargs)
    if layer.disable_adapters:
        return result
    for name in dict.fromkeys(adapter_names):
        if name == BASE_NAME or name not in layer._dict("z"):
            continue
        rows = [i for i, n in enumerate(adapter_names) if n == name]
        result[rows] += layer.activation_delta(name, x[rows]).to(result.dtype)
    return result


def _inject_names(module, args, kwargs, adapter_names):
    kwargs["adapter_names"] = adapter_names
    return args, kwargs


def _hook_all(modules: Iterator[nn.Module], layer_cls, names, handles: list) -> None:
    for module in modules:
        if isinstance(module, (layer_cls, AuxiliaryTrainingWrapper)):
            hook = partial(_inject_names, adapter_names=names)
            handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))


@contextmanager
def adapter_names_hooks(tuner, layer_cls, **kwargs):
    """Context giving ``adapter_names`` (from ``kwargs``) to every adapted layer of ``tuner.model``.

    With beam search (``num_beams > 1``) each name is repeated per beam, except
    for an encoder-decoder model's encoder, which sees the original batch.

    Messages are PEFT's (LoRA's ``_enable_peft_forward_hooks``).

    Raises:
        ValueError: in training mode, or for a name no layer knows.
        TypeError: adapter_names is not a list of strings.
    """
    names = kwargs.get("adapter_names")
    if names is None:
        yield
        return
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise TypeError(f"Got adapter names of type {type(names)}, expected a list of str.")
    if tuner.training:
        raise ValueError("Cannot pass `adapter_names` when the model is in training mode.")
    known = set()
    for module in tuner.model.modules():
        if isinstance(module, layer_cls):
            known |= set(module._dict("z").keys())
    unknown = sorted({n for n in names if n != BASE_NAME} - known)
    if unknown:
        raise ValueError(f"Trying to infer with non-existing adapter(s): {', '.join(unknown)}")
    original = list(names)
    beams = kwargs.get("num_beams")
    if isinstance(beams, int) and beams > 1:
        names = [n for n in original for _ in range(beams)]
    handles: list = []
    try:
        _hook_all(tuner.model.modules(), layer_cls, list(names), handles)
        seq2seq = getattr(getattr(tuner.model, "config", None), "is_encoder_decoder", False)
        encoder = tuner.model.get_encoder() if seq2seq and len(names) != len(original) else None
        if isinstance(encoder, nn.Module):
            _hook_all(encoder.modules(), layer_cls, original, handles)  # runs after, so it wins
        yield
    finally:
        for handle in handles:
            handle.remove()
