"""Export LoLDU and SVFit adapters as plain rank-r LoRA adapters, losslessly.

A LoLDU/SVFit layer adds ``left @ diag(dz) @ right`` to its frozen weight, with
``dz = sigma * z - sigma0 * ref``. That update has rank at most r and is exactly
a LoRA update ``lora_B @ lora_A * scaling`` with::

    lora_B = left * dz      (out x r)
    lora_A = right          (r x in)
    scaling = lora_alpha / r = 1   (lora_alpha = r)

so a trained adapter can be shipped to tools that know LoRA only: PEFT
(:func:`save_as_peft_lora`, loaded with ``peft.PeftModel.from_pretrained``) and
diffusers (:func:`save_as_diffusers_lora`, loaded with
``UNet2DConditionModel.load_lora_adapter`` or a pipeline's ``load_lora_weights``).
Neither needs this package to load the result.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Literal

import torch
from peft import LoraConfig, PeftModel
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils.other import ModulesToSaveWrapper
from safetensors.torch import save_file
from torch import nn

from loldu.methods.diagonal import DiagonalLayer

PEFT_WEIGHTS_NAME = "adapter_model.safetensors"
PEFT_KEY_PREFIX = "base_model.model."
DIFFUSERS_WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
DIFFUSERS_UNET_PREFIX = "unet"
# The safetensors metadata key diffusers reads its LoraConfig arguments from.
DIFFUSERS_METADATA_KEY = "lora_adapter_metadata"


def diagonal_to_lora(
    model: nn.Module,
    adapter_name: str | None = None,
    dtype: torch.dtype | Literal["base"] = torch.float32,
) -> tuple[dict[str, torch.Tensor], dict]:
    """The LoRA factors equal to a model's LoLDU/SVFit adapter.

    Args:
        model: a ``PeftModel`` with LoLDU or SVFit layers (or a module with such
            layers injected), not merged.
        adapter_name: the adapter to export; default the active one.
        dtype: dtype of the returned tensors: float32 (default, what the layers
            compute the update in), any torch dtype, or ``"base"`` for the dtype
            of each adapted layer's base weight.

    Returns:
        ``(tensors, info)``. ``tensors`` maps ``"{path}.lora_A.weight"`` (r x in)
        and ``"{path}.lora_B.weight"`` (out x r) to CPU tensors, where ``path``
        is the adapted module's name inside the base model (e.g.
        ``model.layers.0.self_attn.q_proj``). ``info`` holds ``r`` (the most
        common rank), ``lora_alpha`` (= r), ``target_modules`` (short names if
        they select exactly the adapted layers, else full paths),
        ``rank_pattern`` / ``alpha_pattern`` (paths whose rank differs from
        ``r``, empty when all agree), ``layers`` (all adapted paths),
        ``modules_to_save`` (paths of kept heads), ``adapter_name``, ``method``
        and ``base_model_name_or_path``.

    Raises:
        ValueError: if the model has no LoLDU/SVFit layers, the adapter name is
            unknown or is not a LoLDU/SVFit adapter, or a layer is merged.
    """
    inner = model.get_base_model() if isinstance(model, PeftModel) else model
    plain = list(_plain_modules(inner))
    layers, adapter = _exportable_layers(model, inner, plain, adapter_name)
    tensors, ranks, method = _lora_factors(layers, adapter, dtype)

    r = Counter(ranks.values()).most_common(1)[0][0]
    rank_pattern = {path: rank for path, rank in ranks.items() if rank != r}
    all_names = [path for path, _, _ in plain]
    heads = [path for path, _ in _heads(inner, adapter)]
    info = {
        "r": r,
        "lora_alpha": r,
        "target_modules": _target_names(all_names, list(ranks)),
        "rank_pattern": rank_pattern,
        # alpha = rank per layer keeps every layer's LoRA scaling at exactly 1.
        "alpha_pattern": dict(rank_pattern),
        "layers": list(ranks),
        "modules_to_save": heads,
        "adapter_name": adapter,
        "method": method,
        "base_model_name_or_path": _base_name(model, inner, adapter),
    }
    return tensors, info


def save_as_peft_lora(
    model: nn.Module,
    path: str | Path,
    adapter_name: str | None = None,
    dtype: torch.dtype | Literal["base"] = torch.float32,
) -> Path:
    """Save a LoLDU/SVFit adapter as a PEFT LoRA adapter folder.

    The folder holds ``adapter_config.json`` (a ``LoraConfig`` with
    ``lora_alpha = r``, so the scaling is 1) and ``adapter_model.safetensors``
    in PEFT's saved key format. Kept heads (``modules_to_save``, e.g. a new
    classifier) are saved in full too, so ``peft.PeftModel.from_pretrained(base,
    path)`` on the same base model gives the same outputs as ``model``; loading
    needs plain PEFT only.

    Args:
        model: the adapted model (see :func:`diagonal_to_lora`).
        path: folder to write (created if needed).
        adapter_name: the adapter to export; default the active one.
        dtype: dtype of the LoRA factors (see :func:`diagonal_to_lora`).

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ValueError: see :func:`diagonal_to_lora`.
    """
    tensors, info = diagonal_to_lora(model, adapter_name, dtype=dtype)
    source = _source_config(model, info["adapter_name"])
    config = LoraConfig(
        r=info["r"],
        lora_alpha=info["lora_alpha"],
        target_modules=info["target_modules"],
        rank_pattern=info["rank_pattern"],
        alpha_pattern=info["alpha_pattern"],
        modules_to_save=info["modules_to_save"] or None,
        lora_dropout=0.0,
        bias="none",
        task_type=getattr(source, "task_type", None),
        base_model_name_or_path=info["base_model_name_or_path"],
        inference_mode=True,
    )
    out = {PEFT_KEY_PREFIX + key: value for key, value in tensors.items()}
    inner = model.get_base_model() if isinstance(model, PeftModel) else model
    for head_path, head in _heads(inner, info["adapter_name"]):
        for key, value in head.state_dict().items():
            out[f"{PEFT_KEY_PREFIX}{head_path}.{key}"] = value.detach().to("cpu").contiguous()
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(path))
    save_file(out, str(path / PEFT_WEIGHTS_NAME), metadata={"format": "pt"})
    return path


def save_as_diffusers_lora(
    unet_model: nn.Module,
    path: str | Path,
    weight_name: str = DIFFUSERS_WEIGHTS_NAME,
    adapter_name: str | None = None,
    dtype: torch.dtype | Literal["base"] = torch.float32,
) -> Path:
    """Save an adapted diffusers UNet's LoLDU/SVFit adapter as a diffusers LoRA file.

    Format (diffusers 0.42): PEFT-style keys with the pipeline's component
    prefix, ``unet.{module path}.lora_A.weight`` / ``...lora_B.weight``, no
    ``.alpha`` entries. diffusers then builds its ``LoraConfig`` from the
    ranks with ``lora_alpha = r`` (scale 1, the update is ``lora_B @ lora_A``).
    The file also carries that ``LoraConfig``'s arguments (r, lora_alpha,
    target_modules, rank/alpha patterns) in its ``lora_adapter_metadata``
    safetensors metadata, prefixed with ``unet.`` as diffusers' own pipeline
    writer does, so the loaded config is the exact one rather than inferred.

    The result loads with plain diffusers:
    ``UNet2DConditionModel.load_lora_adapter(path, weight_name=..., prefix="unet")``
    or ``StableDiffusionPipeline.load_lora_weights(path, weight_name=...)``.

    Args:
        unet_model: a ``PeftModel`` wrapping a diffusers ``UNet2DConditionModel``
            with LoLDU/SVFit layers (or the UNet with the layers injected).
        path: folder to write (created if needed).
        weight_name: file name inside ``path`` (diffusers' default name unless given).
        adapter_name: the adapter to export; default the active one.
        dtype: dtype of the LoRA factors (see :func:`diagonal_to_lora`).

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ValueError: see :func:`diagonal_to_lora`; also if the model keeps full
            modules (modules_to_save), which a diffusers LoRA file cannot carry.
    """
    tensors, info = diagonal_to_lora(unet_model, adapter_name, dtype=dtype)
    if info["modules_to_save"]:
        raise ValueError(
            f"modules {info['modules_to_save']} are trained in full (modules_to_save); a diffusers LoRA file "
            "cannot carry them. Use merge_method(model) and save_pretrained to keep them."
        )
    prefix = DIFFUSERS_UNET_PREFIX
    out = {f"{prefix}.{key}": value for key, value in tensors.items()}
    lora_kwargs = {
        "r": info["r"],
        "lora_alpha": info["lora_alpha"],
        "target_modules": info["target_modules"],
        "rank_pattern": info["rank_pattern"],
        "alpha_pattern": info["alpha_pattern"],
    }
    metadata = {
        "format": "pt",
        DIFFUSERS_METADATA_KEY: json.dumps({f"{prefix}.{k}": v for k, v in lora_kwargs.items()}, sort_keys=True),
    }
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path / weight_name), metadata=metadata)
    return path


# -- reading a LoLDU/SVFit model: its adapted layers, adapter, kept heads and names (paths of the plain model,
# as a LoRA adapter file names its modules)


def _exportable_layers(model: nn.Module, inner: nn.Module, plain: list, adapter_name: str | None):
    """The LoLDU/SVFit layers ``[(path, layer)]`` of ``inner`` and the adapter to export, checked.

    Raises:
        ValueError: no LoLDU/SVFit layers, an unknown adapter, a convolution or embedding layer, a merged layer, or
            a layer inside a kept head.
    """
    layers = [(path, module) for path, module, _ in plain if isinstance(module, DiagonalLayer)]
    if not layers:
        raise ValueError(
            f"{type(inner).__name__} has no LoLDU or SVFit layers; export applies to models prepared with "
            "apply_method(model, {'name': 'loldu' or 'svfit', ...}) or loaded with load_adapter"
        )
    adapter = _resolve_adapter(model, layers, adapter_name)
    not_matmul = [f"{path} ({type(layer.get_base_layer()).__name__})" for path, layer in layers if not layer.kind.fused]
    if not_matmul:
        raise ValueError(
            f"layers {not_matmul[:3]} are convolutions or embeddings; export writes LoRA factors of Linear and "
            "Conv1D layers only. Save the adapter with save_adapter instead, or merge it (merge_and_unload)"
        )
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
