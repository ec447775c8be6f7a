"""What ties a saved adapter to its content and to its base model, and the checks on load.

:func:`loldu.methods.save_adapter` writes, next to the method spec in
``method.json``, a ``"saved"`` record:

* ``tensors_sha256``: a sha256 over the tensor file's tensors (names, dtypes,
  shapes and bytes, in name order), so a flipped byte anywhere is caught;
* ``base_model``: the base's ``name_or_path`` where known;
* ``base_fingerprints``: a sketch (:func:`loldu.methods.decompose.fingerprint`)
  of each base weight the adapter builds on: the adapted layers' weights for
  PEFT methods (LoLDU, SVFit, LoRA, PiSSA, VeRA, FourierFT), every frozen
  parameter for bitfit and linear_probe;
* ``base_shapes``: every parameter's name and shape (all methods), which is
  all that ties a ``full`` file, where every weight is replaced, to its base.

Every check here runs before the model is touched.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils.other import ModulesToSaveWrapper
from safetensors import safe_open
from torch import nn

from .decompose import fingerprint, same_base

# Per PEFT method: the saved tensor whose first dimension is the config's rank, and that config key.
RANK_TENSORS = {
    "loldu": ("loldu_z", "r"),
    "svfit": ("svfit_z", "r"),
    "lora": ("lora_A.weight", "r"),
    "pissa": ("lora_A.weight", "r"),
    "vera": ("vera_lambda_d", "r"),
    "fourierft": ("fourierft_spectrum", "n_frequency"),
}
PATTERN_KEYS = ("rank_pattern", "n_frequency_pattern")
REFUSE_DAMAGED = "the file was modified or damaged; re-save it from the run, or download it again"


def tensor_digest(path: str | Path) -> str:
    """sha256 over a safetensors file's tensors: names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    with safe_open(str(path), framework="pt") as f:
        for name in sorted(f.keys()):
            t = f.get_tensor(name).contiguous()
            digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def weight_fingerprint(weight: torch.Tensor) -> list[float]:
    """:func:`fingerprint` of any parameter, as a JSON-able list (reshaped to 2-D first)."""
    w = weight.detach()
    w = w.reshape(w.shape[0], -1) if w.dim() >= 2 else w.reshape(1, -1)
    return fingerprint(w).tolist()


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
    """The base model's ``name_or_path``, where the model records one."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    name = getattr(getattr(inner, "config", None), "_name_or_path", None)
    return str(name) if name else None


def check_digest(tensor_file: Path, saved: dict | None, spec_file: Path) -> None:
    """Refuse a tensor file whose content differs from the hash in ``method.json``; warn if there is none.

    Raises:
        ValueError: the hash differs.
    """
    if not saved or "tensors_sha256" not in saved:
        warnings.warn(
            f"{tensor_file} was saved without a content hash (before this check existed), so it cannot be "
            "verified; re-save it with save_adapter to add one",
            UserWarning,
            stacklevel=3,
        )
        return
    if tensor_digest(tensor_file) != saved["tensors_sha256"]:
        raise ValueError(
            f"{tensor_file}: its tensors do not match the content hash stored in {spec_file.name}: {REFUSE_DAMAGED}"
        )


def check_config_rank(folder: Path, tensor_file: Path, method: str) -> None:
    """Refuse an ``adapter_config.json`` whose rank disagrees with the saved tensors' shapes.

    Raises:
        ValueError: r (or n_frequency) in the config is not what the tensors hold.
    """
    config_file = folder / "adapter_config.json"
    if method not in RANK_TENSORS or not config_file.is_file():
        return
    config = json.loads(config_file.read_text())
    suffix, key = RANK_TENSORS[method]
    if any(config.get(k) for k in PATTERN_KEYS) or not isinstance(config.get(key), int):
        return  # per-layer ranks: PEFT checks each shape itself
    with safe_open(str(tensor_file), framework="pt") as f:
        for name in f.keys():
            if name.endswith(suffix):
                found = f.get_slice(name).get_shape()[0]
                if found != config[key]:
                    raise ValueError(
                        f"{config_file}: {key}={config[key]} in the config, but the tensors in {tensor_file.name} "
                        f"have {key}={found} ({name}): the config and the tensors disagree (was the config edited "
                        f"by hand?). Put back {key}={found}, or re-save the adapter from the run."
                    )


def check_base(base_model: nn.Module, saved: dict | None, tensor_file: Path) -> None:
    """Refuse a base whose architecture or adapted/frozen weights differ from the ones saved.

    Raises:
        ValueError: names, shapes or fingerprints differ; the message names the base to use.
    """
    if not saved:
        return
    where = f": {saved['base_model']}" if saved.get("base_model") else ""
    params = dict(base_model.named_parameters())
    shapes = {n: list(p.shape) for n, p in params.items()}
    want = saved.get("base_shapes", {})
    missing = sorted(n for n in want if n not in shapes)
    changed = sorted(n for n in want if n in shapes and shapes[n] != want[n])
    extra = sorted(n for n in shapes if n not in want) if want else []
    if missing or changed or extra:
        raise ValueError(
            f"{tensor_file}: its tensors do not fit this model: it was saved from another architecture "
            f"(parameters missing here: {missing[:5]}, new here: {extra[:5]}, with other shapes: {changed[:5]}); "
            f"load it onto the base model it was trained from{where}"
        )
    differ = [
        n
        for n, sketch in saved.get("base_fingerprints", {}).items()
        if n not in params
        or not same_base(torch.tensor(sketch, dtype=torch.float64), torch.tensor(weight_fingerprint(params[n])))
    ]
    if differ:
        raise ValueError(
            f"{tensor_file} was trained on a different base weight ({len(differ)} weights differ, e.g. "
            f"{differ[:3]}; fingerprint mismatch). Load it onto the exact base model it was trained from{where}"
        )
