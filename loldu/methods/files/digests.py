"""Content hashes of a folder written by :func:`loldu.methods.save_adapter`, and the checks on them.

Shared by :func:`loldu.methods.load_adapter` and by PEFT's own loader for LoLDU and SVFit
(``PeftModel.from_pretrained(base, folder)``: :meth:`loldu.methods.diagonal.DiagonalConfig.from_pretrained` calls
:func:`check_saved_folder`). A leaf module: it imports nothing of this package, so the method configs can import it
without an import cycle.

What ``method.json``'s ``"saved"`` record holds for these checks:

* ``tensors_sha256``: :func:`tensor_digest` of the tensor file;
* ``config_sha256``: :func:`config_digest` of ``adapter_config.json`` as written (after the base's name was made
  portable); None for plain methods, which have no such file.

A folder saved before a hash existed loads with a warning; a hash that differs is refused before the model is
touched.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import torch
from safetensors import safe_open

SPEC_FILE = "method.json"
SAVED_KEY = "saved"
PEFT_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"
REFUSE_DAMAGED = "the file was modified or damaged; re-save it from the run, or download it again"

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

# Folders whose checks ran already in this context (load_adapter, around its call of PeftModel.from_pretrained).
_VERIFIED: ContextVar[tuple[str, ...]] = ContextVar("loldu_verified_adapter_folders", default=())


def tensor_digest(path: str | Path) -> str:
    """sha256 over a safetensors file's tensors: names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    with safe_open(str(path), framework="pt") as f:
        for name in sorted(f.keys()):
            t = f.get_tensor(name).contiguous()
            digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def config_digest(config_file: str | Path) -> str:
    """sha256 over ``adapter_config.json``'s content in canonical form (keys sorted, no whitespace).

    The content, not the bytes: what PEFT reads is the parsed JSON, so a file only re-indented or with its keys
    reordered (an editor, ``jq .``, :func:`~loldu.methods.files.model_card.portable_config`'s own rewrite) loads the
    same adapter and keeps its hash, while any changed, added or removed value (``r``, ``alpha``,
    ``target_modules``, an init option, even ``4`` -> ``4.0``) changes it.

    Raises:
        ValueError: the file is not valid JSON.
    """
    config_file = Path(config_file)
    try:
        content = json.loads(config_file.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{config_file} is not valid JSON ({exc}): {REFUSE_DAMAGED}") from exc
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


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


def check_config_digest(config_file: Path, saved: dict | None, spec_file: Path) -> None:
    """Refuse an ``adapter_config.json`` edited after saving; warn if ``method.json`` holds no hash of it.

    A record without any hash (saved before :func:`check_digest` existed) gets no second warning here: the one
    about the tensors says the folder cannot be verified.

    Raises:
        ValueError: the content differs from the hash (or the file is not valid JSON).
        FileNotFoundError: the file is missing.
    """
    if not saved or "config_sha256" not in saved:
        if saved and "tensors_sha256" in saved:
            warnings.warn(
                f"{config_file} was saved without a content hash (before this check existed), so an edit to it "
                "cannot be detected; re-save the adapter with save_adapter to add one",
                UserWarning,
                stacklevel=3,
            )
        return
    if not config_file.is_file():
        raise FileNotFoundError(
            f"{config_file} not found: the adapter folder {config_file.parent} is incomplete; re-save it from the run"
        )
    if config_digest(config_file) != saved["config_sha256"]:
        raise ValueError(
            f"{config_file} was modified after the adapter was saved: its content does not match the hash stored in "
            f"{spec_file.name} (a hash cannot tell which keys changed, e.g. r, alpha, target_modules or an init "
            "option). Put the original file back, or re-save the adapter from the run."
        )


def check_config_rank(folder: Path, tensor_file: Path, method: str) -> None:
    """Refuse an ``adapter_config.json`` whose rank disagrees with the saved tensors' shapes.

    Runs before :func:`check_config_digest`: for an edited rank its message says which value to put back.

    Raises:
        ValueError: r (or n_frequency) in the config is not what the tensors hold.
    """
    config_file = folder / CONFIG_FILE
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


@contextmanager
def verified(folder: str | Path) -> Iterator[None]:
    """Within: :func:`check_saved_folder` skips ``folder`` (its caller checked it already, more thoroughly)."""
    token = _VERIFIED.set((*_VERIFIED.get(), str(Path(folder).resolve())))
    try:
        yield
    finally:
        _VERIFIED.reset(token)


def check_saved_folder(folder: str | Path) -> None:
    """The folder checks of :func:`~loldu.methods.load_adapter`, for PEFT's own loader (LoLDU and SVFit).

    For a folder with a ``method.json`` (written by ``save_adapter``): the tensors' hash, the rank in
    ``adapter_config.json`` against the tensors, then the config's hash. A folder without one (written by
    ``save_pretrained``), not a local folder (a hub id), or one ``load_adapter`` has just checked is left as it is.
    The base weights are checked by the layers themselves as they load (their fingerprints).

    Raises:
        ValueError: ``method.json`` is not valid JSON; the tensors or the config were modified after saving, or
            the config's rank disagrees with the tensors.
        FileNotFoundError: the tensor file or the config is missing.
    """
    folder = Path(folder)
    spec_file = folder / SPEC_FILE
    if not spec_file.is_file() or str(folder.resolve()) in _VERIFIED.get():
        return
    try:
        data = json.loads(spec_file.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{spec_file} is not valid JSON ({exc}): {REFUSE_DAMAGED}") from exc
    saved = data.get(SAVED_KEY)
    tensor_file = folder / PEFT_FILE
    if not tensor_file.is_file():
        raise FileNotFoundError(f"{tensor_file} not found: the adapter folder {folder} is incomplete; re-save it")
    check_digest(tensor_file, saved, spec_file)
    check_config_rank(folder, tensor_file, data.get("name"))
    check_config_digest(folder / CONFIG_FILE, saved, spec_file)
