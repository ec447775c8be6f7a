"""What ties a saved adapter to its content and to its base model, and the checks on load.

:func:`loldu.methods.save_adapter` writes, next to the method spec in
``method.json``, a ``"saved"`` record:

* ``tensors_sha256``: a sha256 over the tensor file's tensors (names, dtypes,
  shapes and bytes, in name order), so a flipped byte anywhere is caught;
* ``config_sha256``: a sha256 over ``adapter_config.json``'s content in canonical
  form, so an edited rank, alpha, target list or option is caught (None for plain
  methods, which have no config file). Both hashes and their checks live in
  :mod:`loldu.methods.files.digests`, which PEFT's own loader of LoLDU and SVFit
  folders uses too;
* ``base_model``: the base's ``name_or_path`` where known;
* ``base_architecture``: a sha256 over every base parameter's name and shape,
  and their number: all that ties a ``full`` file, where every weight is
  replaced, to its base;
* ``base_fingerprints``: a sketch (:func:`loldu.methods.decompose.fingerprint`,
  7 significant digits) of each base weight the adapter builds on: the adapted
  layers' weights for LoRA, PiSSA, VeRA and FourierFT, every frozen parameter
  for bitfit and linear_probe. LoLDU and SVFit files hold one per adapted
  layer among their tensors already, and those are checked instead.

Every check here runs before the model is touched.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils.other import ModulesToSaveWrapper
from safetensors import safe_open
from torch import nn

from loldu.methods.decompose import fingerprint, same_base
from loldu.methods.files.digests import (  # noqa: F401  (re-exported: the checks of a saved folder live there)
    CONFIG_FILE,
    REFUSE_DAMAGED,
    check_config_digest,
    check_config_rank,
    check_digest,
    config_digest,
    tensor_digest,
)


def weight_fingerprint(weight: torch.Tensor) -> list[float]:
    """:func:`fingerprint` of any parameter, as a JSON-able list (reshaped to 2-D first)."""
    w = weight.detach()
    w = w.reshape(w.shape[0], -1) if w.dim() >= 2 else w.reshape(1, -1)
    return [float(f"{x:.7g}") for x in fingerprint(w).tolist()]


def _unmerged_weight(layer: BaseTunerLayer) -> torch.Tensor:
    weight = layer.get_base_layer().weight
    if not layer.merged:
        return weight
    with torch.no_grad():
        delta = sum(layer.get_delta_weight(name).to(weight.dtype) for name in layer.merged_adapters)
        return weight - delta


def adapted_weights(inner: nn.Module) -> dict[str, torch.Tensor]:
    """The base weight under each PEFT tuner layer, by its name in the plain model."""
    found = {}
    for name, module in inner.named_modules():
        if isinstance(module, BaseTunerLayer) and not isinstance(module, ModulesToSaveWrapper):
            if name.endswith(".base_layer") or not hasattr(module.get_base_layer(), "weight"):
                continue
            found[f"{name}.weight"] = _unmerged_weight(module)
    return found


def linear_fingerprints(model: nn.Module) -> dict[str, list[float]]:
    """Fingerprints of every Linear weight, by parameter name (taken before PiSSA rewrites them)."""
    return {f"{n}.weight": weight_fingerprint(m.weight) for n, m in model.named_modules() if isinstance(m, nn.Linear)}


def base_name(model: nn.Module) -> str | None:
    """The base model's ``name_or_path`` where the model records one, as a portable name (no local path)."""
    from loldu.methods.files.model_card import portable_name

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return portable_name(getattr(getattr(inner, "config", None), "_name_or_path", None))


def architecture(shapes: dict[str, list[int]]) -> dict:
    """sha256 over parameter names and shapes (in name order), and the number of parameters."""
    digest = hashlib.sha256()
    for name in sorted(shapes):
        digest.update(f"{name}|{list(shapes[name])}\n".encode())
    return {"sha256": digest.hexdigest(), "parameters": len(shapes)}


def saved_record(model: nn.Module, info, tensor_file: Path) -> dict:
    """The ``"saved"`` entry of ``method.json`` for a model just saved to ``tensor_file``.

    Call once the folder is final: ``config_sha256`` hashes ``adapter_config.json`` next to ``tensor_file`` as it
    is then (after :func:`~loldu.methods.files.model_card.portable_config` rewrote the base's name).
    """
    config_file = tensor_file.parent / CONFIG_FILE
    if info.spec.name in ("loldu", "svfit"):
        fingerprints = {}  # in the tensor file, one per layer
    elif hasattr(model, "get_base_model"):
        early = info.base_fingerprints or {}
        fingerprints = {
            n: early.get(n) or weight_fingerprint(w) for n, w in adapted_weights(model.get_base_model()).items()
        }
    else:
        fingerprints = {n: weight_fingerprint(p) for n, p in model.named_parameters() if not p.requires_grad}
    return {
        "tensors_sha256": tensor_digest(tensor_file),
        "config_sha256": config_digest(config_file) if hasattr(model, "get_base_model") else None,
        "base_model": base_name(model),
        "base_architecture": architecture(info.base_shapes) if info.base_shapes else None,
        "base_fingerprints": fingerprints,
    }


def _file_fingerprints(tensor_file: Path) -> dict[str, list[float]]:
    """LoLDU/SVFit per-layer fingerprints stored among the tensors, by base parameter name."""
    found = {}
    with safe_open(str(tensor_file), framework="pt") as f:
        for key in f.keys():
            for prefix in ("loldu_", "svfit_"):
                if key.endswith(f".{prefix}fingerprint"):
                    module = key.removeprefix("base_model.model.").removesuffix(f".{prefix}fingerprint")
                    found[f"{module}.weight"] = f.get_tensor(key).tolist()
    return found


def check_base(base_model: nn.Module, saved: dict | None, tensor_file: Path) -> None:
    """Refuse a base whose architecture or adapted/frozen weights differ from the ones saved.

    Raises:
        ValueError: architecture or fingerprints differ; the message names the base to use.
    """
    saved = saved or {}
    where = f": {saved['base_model']}" if saved.get("base_model") else ""
    params = dict(base_model.named_parameters())
    want = saved.get("base_architecture")
    have = architecture({n: list(p.shape) for n, p in params.items()})
    if want and want["sha256"] != have["sha256"]:
        raise ValueError(
            f"{tensor_file}: its tensors do not fit this model: it was saved from another architecture "
            f"({want['parameters']} parameters there, {have['parameters']} here, or other names or shapes); "
            f"load it onto the base model it was trained from{where}"
        )
    sketches = {**saved.get("base_fingerprints", {}), **_file_fingerprints(tensor_file)}
    differ = [
        n
        for n, sketch in sketches.items()
        if n not in params
        or not same_base(torch.tensor(sketch, dtype=torch.float64), torch.tensor(weight_fingerprint(params[n])))
    ]
    if differ:
        raise ValueError(
            f"{tensor_file} was trained on a different base weight ({len(differ)} weights differ, e.g. "
            f"{differ[:3]}; fingerprint mismatch). Load it onto the exact base model it was trained from{where}"
        )
