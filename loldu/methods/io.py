"""Merging, saving and loading for every method of :func:`apply_method`."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import PeftModel
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils.other import ModulesToSaveWrapper
from safetensors.torch import load_file, save_file
from torch import nn

from .apply import MethodInfo, MethodSpec, apply_method, spec_dict

PLAIN_FILE = "trainable.safetensors"
SPEC_FILE = "method.json"


def merge_method(model: nn.Module) -> nn.Module:
    """A plain model with the method folded in, equal in output to ``model``.

    For PEFT methods every active adapter is merged into its base layer, tuner
    layers are replaced by their base layers and kept heads (``modules_to_save``)
    by their trained copies. This works for every method, including VeRA and
    FourierFT with a kept classifier, where PEFT's own ``merge_and_unload``
    fails. Plain methods (bitfit, full, linear_probe) are returned as they are.
    """
    if not isinstance(model, PeftModel):
        return model
    inner = model.get_base_model()
    replacements = []
    for name, module in inner.named_modules():
        if isinstance(module, ModulesToSaveWrapper):
            active = module.active_adapters
            trained = module.modules_to_save[active[0]] if active and active[0] in module.modules_to_save else None
            replacements.append((name, trained if trained is not None else module.original_module))
        elif isinstance(module, BaseTunerLayer):
            if not module.merged:
                module.merge()
            replacements.append((name, module.get_base_layer()))
    for name, new in sorted(replacements, key=lambda item: -item[0].count(".")):
        parent_name, _, child = name.rpartition(".")
        parent = inner.get_submodule(parent_name) if parent_name else inner
        setattr(parent, child, new)
    for attr in ("peft_config", "loldu_method"):
        if attr in inner.__dict__:
            del inner.__dict__[attr]
    return inner


def save_adapter(model: nn.Module, path: str | Path) -> Path:
    """Save what the method trained (safetensors, no pickle) into folder ``path``.

    PEFT methods use ``save_pretrained``; plain methods save their trainable
    tensors.
    """
    info: MethodInfo = _info(model)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if isinstance(model, PeftModel):
        # PiSSA's saved config keeps init "pissa": loading redoes the (deterministic)
        # SVD of the fresh base, so the residual base weights are rebuilt too.
        model.save_pretrained(str(path))
    else:
        tensors = {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}
        save_file(tensors, str(path / PLAIN_FILE))
    (path / SPEC_FILE).write_text(json.dumps(spec_dict(info.spec), indent=2))
    return path


def load_adapter(base_model: nn.Module, path: str | Path, is_trainable: bool = False) -> nn.Module:
    """Load an adapter saved by :func:`save_adapter` onto a fresh base model.

    Raises:
        FileNotFoundError: if ``path`` holds no saved adapter.
        ValueError: if the file does not fit the base (names, shapes, or, for
            LoLDU/SVFit, a base weight other than the one it was trained on).
    """
    path = Path(path)
    spec_file = path / SPEC_FILE
    if not spec_file.is_file():
        raise FileNotFoundError(f"{spec_file} not found: {path} is not a folder written by save_adapter")
    data = json.loads(spec_file.read_text())
    spec = MethodSpec.from_mapping(data)
    base_params = sum(p.numel() for p in base_model.parameters())
    if spec.name in ("bitfit", "full", "linear_probe"):
        model = apply_method(base_model, spec)
        tensors = load_file(str(path / PLAIN_FILE))
        params = dict(model.named_parameters())
        bad = [n for n in tensors if n not in params or params[n].shape != tensors[n].shape]
        if bad:
            raise ValueError(f"{path}: tensors {bad[:5]} do not fit this model; it was saved from another architecture")
        with torch.no_grad():
            for name, value in tensors.items():
                params[name].copy_(value)
        return model
    model = PeftModel.from_pretrained(base_model, str(path), is_trainable=is_trainable)
    model.loldu_method = MethodInfo(spec=spec, base_params=base_params)
    return model


def _info(model: nn.Module) -> MethodInfo:
    info = getattr(model, "loldu_method", None)
    if info is None:
        raise ValueError("this model was not prepared by apply_method; call apply_method(model, spec) first")
    return info
