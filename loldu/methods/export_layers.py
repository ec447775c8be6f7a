"""Reading a LoLDU/SVFit model for :mod:`loldu.methods.export`: its adapted layers, adapter, kept heads and names.

Paths are those of the plain (un-adapted) model, as a LoRA adapter file names its modules.
"""

from __future__ import annotations

import torch
from peft import PeftModel
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils.other import ModulesToSaveWrapper
from torch import nn

from .diagonal import DiagonalLayer


def _exportable_layers(model: nn.Module, inner: nn.Module, plain: list, adapter_name: str | None):
    """The LoLDU/SVFit layers ``[(path, layer)]`` of ``inner`` and the adapter to export, checked.

    Raises:
        ValueError: no LoLDU/SVFit layers, an unknown adapter, a merged layer, or a layer inside a kept head.
    """
    layers = [(path, module) for path, module, _ in plain if isinstance(module, DiagonalLayer)]
    if not layers:
        raise ValueError(
            f"{type(inner).__name__} has no LoLDU or SVFit layers; export applies to models prepared with "
            "apply_method(model, {'name': 'loldu' or 'svfit', ...}) or loaded with load_adapter"
        )
    adapter = _resolve_adapter(model, layers, adapter_name)
    merged = [path for path, layer in layers if layer.merged]
    if merged:
        raise ValueError(
            f"layers {merged[:3]} have merged adapters, so their base weights already contain an update; "
            "call model.unmerge_adapter() (or export before merging) and try again"
        )
    inside_heads = [path for path, module, in_head in plain if in_head and isinstance(module, DiagonalLayer)]
    if inside_heads:
        raise ValueError(
            f"adapted layers {inside_heads[:3]} sit inside a kept module (modules_to_save); "
            "such a model cannot be expressed as a LoRA adapter plus kept modules"
        )
    return layers, adapter


def _lora_factors(layers, adapter: str, dtype):
    """``(tensors, ranks, method)``: each layer's ``lora_A`` / ``lora_B`` on the CPU, its rank, and the method name."""
    tensors: dict[str, torch.Tensor] = {}
    ranks: dict[str, int] = {}
    method = None
    for path, layer in layers:
        if adapter not in layer._dict("z"):
            continue
        method = layer.prefix.rstrip("_")
        with torch.no_grad():
            left = layer._dict("left")[adapter].detach().float()
            right = layer._dict("right")[adapter].detach().float()
            dz = layer.delta_diag(adapter).detach().float().to(left.device)
            lora_b = left * dz
            lora_a = right
        out_dtype = layer.get_base_layer().weight.dtype if dtype == "base" else dtype
        tensors[f"{path}.lora_A.weight"] = lora_a.to("cpu", out_dtype).contiguous()
        tensors[f"{path}.lora_B.weight"] = lora_b.to("cpu", out_dtype).contiguous()
        ranks[path] = int(lora_a.shape[0])
    return tensors, ranks, method


def _plain_modules(module: nn.Module, prefix: str = "", in_head: bool = False):
    """``(path, module, in_head)`` for every module, named as in the plain (un-adapted) model.

    Tuner layers are reported at their own path and not entered; a kept head
    (``ModulesToSaveWrapper``) is reported at its path and its original module's
    children under that same path, flagged ``in_head``.
    """
    for name, child in module.named_children():
        path = f"{prefix}{name}"
        yield path, child, in_head
        if isinstance(child, BaseTunerLayer):
            continue
        if isinstance(child, ModulesToSaveWrapper):
            yield from _plain_modules(child.original_module, path + ".", True)
        else:
            yield from _plain_modules(child, path + ".", in_head)


def _resolve_adapter(model: nn.Module, layers, adapter_name: str | None) -> str:
    known = sorted({name for _, layer in layers for name in layer._dict("z").keys()})
    if adapter_name is None:
        if isinstance(model, PeftModel):
            adapter_name = model.active_adapter
        else:
            active = layers[0][1].active_adapters
            adapter_name = active[0] if active else None
    if adapter_name not in known:
        available = sorted(model.peft_config) if isinstance(model, PeftModel) else known
        raise ValueError(
            f"adapter {adapter_name!r} is not a LoLDU/SVFit adapter of this model; "
            f"its adapters: {available}, of which LoLDU/SVFit: {known}. Pass adapter_name= one of those."
        )
    return adapter_name


def _has_head(wrapper: ModulesToSaveWrapper, adapter: str) -> bool:
    return adapter in wrapper.modules_to_save


def _heads(inner: nn.Module, adapter: str):
    for path, module, _ in _plain_modules(inner):
        if isinstance(module, ModulesToSaveWrapper) and _has_head(module, adapter):
            yield path, module.modules_to_save[adapter]


def _target_names(all_names: list[str], adapted: list[str]) -> list[str]:
    """Short target names (``q_proj``, ``to_out.0``) if they select exactly ``adapted``, else full paths."""

    def short(path: str) -> str:
        parts = path.split(".")
        return ".".join(parts[-2:]) if parts[-1].isdigit() and len(parts) > 1 else parts[-1]

    names = sorted({short(p) for p in adapted})
    selected = {n for n in all_names if any(n == s or n.endswith("." + s) for s in names)}
    return names if selected == set(adapted) else sorted(adapted)


def _source_config(model: nn.Module, adapter: str):
    config = getattr(model, "peft_config", None)
    return config.get(adapter) if isinstance(config, dict) else None


def _base_name(model: nn.Module, inner: nn.Module, adapter: str) -> str | None:
    source = _source_config(model, adapter)
    name = getattr(source, "base_model_name_or_path", None)
    if not name:
        name = getattr(inner, "name_or_path", None) or getattr(getattr(inner, "config", None), "_name_or_path", None)
    return name or None
