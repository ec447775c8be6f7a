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

from loldu.methods.apply import (
    MethodInfo,
    MethodSpec,
    apply_method,
    base_info,
    count_parameters,
    layer_progress,
    plain_trainable_names,
    spec_dict,
)
from loldu.methods.files.digests import CONFIG_FILE, PEFT_FILE, SAVED_KEY, SPEC_FILE, verified
from loldu.methods.files.integrity import (
    REFUSE_DAMAGED,
    base_name,
    check_base,
    check_config_digest,
    check_config_rank,
    check_digest,
    saved_record,
)
from loldu.methods.files.model_card import CARD_FILE, model_card, portable_config
from loldu.methods.registry import get_method

PLAIN_FILE = "trainable.safetensors"


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
    tensors. ``method.json`` holds the method spec and a ``"saved"`` record
    (content hashes of the tensors and of ``adapter_config.json``, base
    fingerprints, base architecture; see :mod:`loldu.methods.files.integrity`)
    that :func:`load_adapter` checks, and for LoLDU and SVFit PEFT's own
    ``PeftModel.from_pretrained`` too. The folder
    holds no path of this machine: ``adapter_config.json`` names the base by its
    portable name, and ``README.md`` says what was trained
    (:mod:`loldu.methods.files.model_card`; a run rewrites it with its task and metrics).
    """
    info: MethodInfo = _info(model)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if isinstance(model, PeftModel):
        # PiSSA's saved config keeps init "pissa": loading redoes the (deterministic)
        # SVD of the fresh base, so the residual base weights are rebuilt too.
        model.save_pretrained(str(path))
        portable_config(path)  # before saved_record: the config's hash is of the file as it stays
        tensor_file = path / PEFT_FILE
    else:
        tensors = {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}
        tensor_file = path / PLAIN_FILE
        save_file(tensors, str(tensor_file))
    spec = json.dumps(spec_dict(info.spec), indent=2)
    saved = json.dumps(saved_record(model, info, tensor_file), separators=(",", ":"))  # one line: it is long
    (path / SPEC_FILE).write_text(f'{spec[:-2]},\n  "{SAVED_KEY}": {saved}\n}}\n')
    card = model_card(
        spec_dict(info.spec), base_name(model), count_parameters(model), peft=isinstance(model, PeftModel)
    )
    (path / CARD_FILE).write_text(card)
    return path


def read_spec(path: str | Path) -> tuple[MethodSpec, dict | None]:
    """The method spec and the integrity record (None for files saved before it existed) of a saved adapter.

    Raises:
        FileNotFoundError: if ``path`` holds no ``method.json``.
    """
    spec_file = Path(path) / SPEC_FILE
    if not spec_file.is_file():
        raise FileNotFoundError(f"{spec_file} not found: {path} is not a folder written by save_adapter")
    data = json.loads(spec_file.read_text())
    saved = data.pop(SAVED_KEY, None)
    return MethodSpec.from_mapping(data), saved


def load_adapter(base_model: nn.Module, path: str | Path, is_trainable: bool = False) -> nn.Module:
    """Load an adapter saved by :func:`save_adapter` onto a fresh base model.

    Before the base is touched: the tensors' content hash (a file without one
    loads with a warning), the rank in ``adapter_config.json`` against the
    tensors (first: its message says which rank to put back), the config's
    content hash (likewise), the base's architecture and weight fingerprints,
    and for plain methods the exact set of saved tensors are checked.

    Raises:
        FileNotFoundError: if ``path`` holds no saved adapter.
        ValueError: if the tensors or ``adapter_config.json`` were modified after
            saving, or the adapter does not fit the base (names, shapes, config,
            or a base weight other than the one it was trained on).
    """
    path = Path(path)
    spec, saved = read_spec(path)
    plain = not get_method(spec.name).is_peft
    tensor_file = path / (PLAIN_FILE if plain else PEFT_FILE)
    if not tensor_file.is_file():
        raise FileNotFoundError(f"{tensor_file} not found: the adapter folder {path} is incomplete; re-save it")
    check_digest(tensor_file, saved, path / SPEC_FILE)
    if not plain:
        check_config_rank(path, tensor_file, spec.name)
        check_config_digest(path / CONFIG_FILE, saved, path / SPEC_FILE)
    check_base(base_model, saved, tensor_file)
    if plain:
        tensors = load_file(str(tensor_file))
        _check_plain_tensors(base_model, spec, tensors, tensor_file)
        model = apply_method(base_model, spec)
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in tensors.items():
                params[name].copy_(value)
        return model
    info = base_info(base_model, spec)  # before PiSSA rewrites the base weights
    # LoLDU/SVFit rebuild each layer's factors; their config's loader skips the folder checks done above
    with layer_progress(base_model, spec), verified(path):
        model = PeftModel.from_pretrained(base_model, str(path), is_trainable=is_trainable)
    model.loldu_method = info
    return model


def _check_plain_tensors(base_model: nn.Module, spec: MethodSpec, tensors: dict, tensor_file: Path) -> None:
    params = dict(base_model.named_parameters())
    bad = [n for n in tensors if n not in params or params[n].shape != tensors[n].shape]
    if bad:
        raise ValueError(
            f"{tensor_file}: tensors {bad[:5]} do not fit this model; it was saved from another architecture"
        )
    expected = set(plain_trainable_names(base_model, spec))
    missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing or extra:
        raise ValueError(
            f"{tensor_file} does not hold exactly what {spec.name} trains on this model: missing {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''}, unexpected {extra[:10]}{' ...' if len(extra) > 10 else ''}. "
            f"{REFUSE_DAMAGED}"
        )


def _info(model: nn.Module) -> MethodInfo:
    info = getattr(model, "loldu_method", None)
    if info is None:
        raise ValueError("this model was not prepared by apply_method; call apply_method(model, spec) first")
    return info
