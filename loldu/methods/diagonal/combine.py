"""Weighted combinations of LoLDU/SVFit adapters that share their factors.

Adapters trained on the same base with the same rank and the same
decomposition (LU pivot order and precision, or SVD) share ``left`` and
``right``, so ``sum_i w_i left diag(dz_i) right = left diag(sum_i w_i dz_i)
right``: the weighted sum of their updates is exactly one new adapter of the
same kind. The new adapter keeps the first adapter's ``ref`` and ``sigma0``,
starts with ``sigma = sigma0`` and takes ``z = ref + (sum_i w_i dz_i) / sigma0``:
its update equals the combination, and further training moves z on the same
scale as the originals'.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import torch
from peft.utils import ModulesToSaveWrapper
from torch import nn

COMBINATION_TYPES = ("linear",)


def _check_request(tuner, adapters: Sequence[str], weights: Sequence[float], adapter_name: str, kind: str) -> None:
    if kind not in COMBINATION_TYPES:
        raise ValueError(
            f"combination_type {kind!r} is not supported for {type(tuner).__name__}; use 'linear' (exact for "
            "adapters that share their factors). LoRA's svd/cat/ties/dare variants re-factorise, which a "
            "fixed-factor diagonal cannot represent."
        )
    if isinstance(adapters, str) or not adapters:
        raise ValueError(f"adapters must be a non-empty list of adapter names, got {adapters!r}")
    if len(weights) != len(adapters):
        raise ValueError(f"got {len(weights)} weights for {len(adapters)} adapters; pass one weight per adapter")
    if not all(isinstance(w, (int, float)) and math.isfinite(w) for w in weights):
        raise ValueError(f"weights must be finite numbers, got {list(weights)!r}")
    unknown = [a for a in adapters if a not in tuner.peft_config]
    if unknown:
        raise ValueError(f"unknown adapters {unknown}; this model has {sorted(tuner.peft_config)}")
    if adapter_name in tuner.peft_config:
        raise ValueError(f"an adapter named {adapter_name!r} exists already; choose a new name or delete it first")
    heads = sorted(
        name
        for name, module in tuner.model.named_modules()
        if isinstance(module, ModulesToSaveWrapper) and any(a in module.modules_to_save for a in adapters)
    )
    if heads:
        raise ValueError(
            f"adapters {list(adapters)} train modules_to_save {heads} in full; a weighted sum of trained heads is not "
            "defined. Combine adapters without modules_to_save (or combine the heads yourself)."
        )


def _check_layer(layer, where: str, adapters: Sequence[str]) -> None:
    missing = [a for a in adapters if a not in layer._dict("z")]
    if missing:
        raise ValueError(f"adapters {missing} do not adapt {where}; combine adapters with the same target_modules")
    first = adapters[0]
    left, right = layer._dict("left")[first], layer._dict("right")[first]
    for other in adapters[1:]:
        if layer.r[other] != layer.r[first]:
            raise ValueError(
                f"adapters {first!r} (r={layer.r[first]}) and {other!r} (r={layer.r[other]}) differ in rank at "
                f"{where}; only adapters with the same r share factors"
            )
        if not (torch.equal(layer._dict("left")[other], left) and torch.equal(layer._dict("right")[other], right)):
            raise ValueError(
                f"adapters {first!r} and {other!r} use different factors at {where} (a different base, "
                "decompose_dtype, pivot order or SVD); their weighted sum is not one diagonal over shared factors"
            )


def combine_into_layer(layer, adapter_name: str, adapters: Sequence[str], weights: Sequence[float]) -> None:
    """Create ``adapter_name`` in ``layer`` as the weighted sum of ``adapters`` (checked to share factors).

    The frozen factors are shared with the first adapter (no copy); the small
    saved buffers are copied. The new adapter's z and sigma do not require grad.
    """
    src = adapters[0]
    for attr in layer.other_param_names:
        store = getattr(layer, attr)
        if isinstance(store, dict):
            store[adapter_name] = store[src]
        elif isinstance(store, nn.Module) and src in store:
            value = store[src]
            store[adapter_name] = value if attr in (layer.prefix + "left", layer.prefix + "right") else value.clone()
    with torch.no_grad():
        delta = sum(float(w) * layer.delta_diag(a).float() for a, w in zip(adapters, weights))
        sigma0 = layer.sigma0[src]
        sigma = sigma0 if sigma0 != 0 else 1.0
        z_src, sigma_src = layer._dict("z")[src], layer._dict("sigma")[src]
        ref = layer._dict("ref")[adapter_name].float()
        z = (delta + sigma0 * ref) / sigma
        layer._dict("z")[adapter_name] = nn.Parameter(z.to(z_src.dtype), requires_grad=False)
        layer._dict("sigma")[adapter_name] = nn.Parameter(torch.full_like(sigma_src, sigma), requires_grad=False)
    if src in layer.frozen_peft_weight_names:
        layer.frozen_peft_weight_names[adapter_name] = layer.frozen_peft_weight_names[src]


def add_weighted_adapter(
    tuner,
    layer_cls,
    adapters: Sequence[str],
    weights: Sequence[float],
    adapter_name: str,
    combination_type: str = "linear",
) -> None:
    """Add ``adapter_name`` whose update is ``sum_i weights[i] * update(adapters[i])`` in every layer.

    Everything is checked before anything is created.

    Raises:
        ValueError: unknown or existing names, a combination type other than
            'linear', adapters with different targets, ranks or factors.
    """
    _check_request(tuner, adapters, weights, adapter_name, combination_type)
    layers = [
        (name, module)
        for name, module in tuner.model.named_modules()
        if isinstance(module, layer_cls) and any(a in module._dict("z") for a in adapters)
    ]
    for name, layer in layers:
        _check_layer(layer, name, adapters)
    tuner.peft_config[adapter_name] = replace(tuner.peft_config[adapters[0]])
    for _, layer in layers:
        combine_into_layer(layer, adapter_name, adapters, weights)
