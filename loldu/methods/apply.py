"""One entry point for every method the framework offers, and parameter counts.

``apply_method(model, spec)`` turns a plain model into a fine-tunable one with
any method of the table in :mod:`.registry`: LoLDU and SVFit (this package),
LoRA, PiSSA, VeRA and FourierFT (PEFT), BitFit, full fine-tuning and linear
probing, and any PEFT method by name (``peft:<type>``, :mod:`.peft_tuners`).
``count_parameters`` reports adapter parameters and trainable parameters
including heads separately.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields

from peft import get_peft_model
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn
from torch.nn.modules.module import register_module_module_registration_hook

from loldu.methods.baselines import in_head
from loldu.methods.diagonal import DiagonalLayer
from loldu.methods.diagonal.kinds import SUPPORTED
from loldu.methods.peft_tuners import spec_mapping
from loldu.methods.registry import get_method

# The layer types LoRA, LoLDU and SVFit adapt (Linear, GPT-2's Conv1D, Conv1d/2d/3d, Embedding).
ADAPTABLE = tuple(cls for cls, _ in SUPPORTED)


@dataclass
class MethodSpec:
    """What to apply.

    Attributes:
        name: one of :data:`METHODS` (the registered methods), or ``peft:<type>`` for any PEFT method (a mapping
            may give ``name="peft"`` with ``peft_type`` and ``config`` instead, as ``conf/method/peft.yaml`` does).
        r: rank (loldu, svfit, lora, pissa, vera) or number of frequencies (fourierft).
            None: the default of the method's config class.
        alpha: scale numerator (loldu/svfit sigma0 = alpha/r; lora/pissa lora_alpha;
            fourierft scaling). None: the method's default (alpha = r for loldu/svfit/lora/pissa).
        target_modules: modules to adapt; None: the model family's default.
        head_modules: modules trained in full and counted as head, e.g. ["classifier"].
        options: further fields of the method's PEFT config (e.g. ``{"init": "normal"}`` for
            loldu); a None value means the config class's default.
    """

    name: str = "loldu"
    r: int | None = None
    alpha: float | None = None
    target_modules: list[str] | None = None
    head_modules: list[str] = field(default_factory=list)
    options: dict = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, data: Mapping) -> MethodSpec:
        """Build from a dict (e.g. a Hydra node); unknown keys go to ``options``. ``method=peft``'s ``peft_type``
        and ``config`` become the name ``peft:<type>`` and options (:func:`~loldu.methods.peft_tuners.spec_mapping`).
        """
        data = spec_mapping(data)
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known and k != "options"}
        options = dict(data.get("options") or {})
        options.update({k: v for k, v in data.items() if k not in known})
        kwargs["options"] = options
        for key in ("target_modules", "head_modules"):
            if kwargs.get(key) is not None:
                kwargs[key] = list(kwargs[key])
        return cls(**kwargs)


@dataclass
class MethodInfo:
    """Stored on the adapted model as ``model.loldu_method``."""

    spec: MethodSpec
    base_params: int
    # Name -> shape of every base parameter, taken before the method changed anything.
    base_shapes: dict[str, list[int]] | None = None
    # Fingerprints taken before injection, for methods that rewrite base weights (PiSSA).
    base_fingerprints: dict[str, list[float]] | None = None


# Config-class fields that are PEFT's bookkeeping or set from the spec's other keys (r, alpha, targets, heads).
NOT_OPTIONS = frozenset({
    "peft_type", "auto_mapping", "base_model_name_or_path", "revision", "task_type", "inference_mode",
    "peft_version", "r", "alpha", "lora_alpha", "target_modules", "modules_to_save", "n_frequency", "scaling",
})  # fmt: skip


def check_spec(spec: MethodSpec | Mapping) -> None:
    """Refuse options the method's config class does not have, and values it refuses (e.g. ``init=foo``), by
    building that config: no model needed, so a run checks its method before any model loads.

    Raises:
        ValueError: an unknown option with the closest field, or the config class's own complaint.
    """
    spec = spec if isinstance(spec, MethodSpec) else MethodSpec.from_mapping(spec)
    entry = get_method(spec.name)
    fields_ = entry.defaults()
    for key in spec.options:
        if key not in fields_:
            close = difflib.get_close_matches(key, list(fields_), n=1, cutoff=0.6)
            where = "method.config" if ":" in entry.name else "method.options"  # method=peft: peft:<type>
            hint = f"did you mean {where}.{close[0]}? " if close else ""
            known = ", ".join(sorted(set(fields_) - NOT_OPTIONS))
            listed = f"its options are {known}" if known else f"it takes no options (drop {where})"
            raise ValueError(f"{entry.name} has no option {key!r}: {hint}{listed}")
    if not entry.is_peft:
        return
    try:
        entry.peft_config(
            spec.r,
            spec.alpha,
            spec.options,
            target_modules=spec.target_modules,
            modules_to_save=spec.head_modules or None,
        )
    except (ValueError, TypeError) as err:
        raise ValueError(f"method={entry.name}: {err}") from err


def apply_method(model: nn.Module, spec: MethodSpec | Mapping) -> nn.Module:
    """Apply a fine-tuning method to ``model``.

    Everything is checked before the model is touched: the method name, the
    rank against every target layer, targets and heads that match nothing.

    Args:
        model: a plain ``nn.Module`` (e.g. a transformers model).
        spec: a :class:`MethodSpec` or a mapping with its fields.

    Returns:
        The model to train: a ``PeftModel`` for PEFT methods, else ``model``
        itself with ``requires_grad`` set. ``result.loldu_method`` records the spec.

    Raises:
        ValueError: unknown method, bad rank, unmatched targets or heads.
    """
    spec = spec if isinstance(spec, MethodSpec) else MethodSpec.from_mapping(spec)
    entry = get_method(spec.name)
    _check_heads(model, spec.head_modules)
    info = base_info(model, spec)
    if entry.is_peft:
        if spec.target_modules is not None:
            check_targets(model, spec.target_modules)
        options = spec.options
        if entry.model_options is not None:  # sizes that must fit the model (VB-LoRA's vector length), where unset
            options = {**options, **entry.model_options(model, spec)}
        config = entry.peft_config(
            spec.r,
            spec.alpha,
            options,
            target_modules=spec.target_modules,
            modules_to_save=spec.head_modules or None,
        )
        with layer_progress(model, spec):
            result = get_peft_model(model, config)
    else:
        _set_plain_trainable(model, spec, entry)
        result = model
    result.loldu_method = info
    return result


@contextmanager
def layer_progress(model: nn.Module, spec: MethodSpec) -> Iterator[None]:
    """Within it, a progress bar over the layers PEFT puts in place (LoLDU/SVFit/PiSSA factorise each one as it
    goes): :func:`apply_method` and :func:`~loldu.methods.load_adapter` inject under it. The bar shows only when
    injection runs longer than a few seconds (:func:`loldu.run.logs.progress`), e.g. ViT-base at full rank.

    Args:
        model: the plain model about to be adapted (its matching adaptable layers give the bar's total).
        spec: the method spec (its name labels the bar; its target modules give the total where listed).
    """
    from loldu.methods.progress import progress

    targets = spec.target_modules
    total = None
    if targets is not None and not isinstance(targets, str):
        total = sum(isinstance(m, ADAPTABLE) and any(_module_matches(n, t) for t in targets)
                    for n, m in model.named_modules())  # fmt: skip
    bar = progress(iter(()), f"{spec.name}: adapting layers", total=total, unit="layer")

    def tick(parent: nn.Module, name: str, child: nn.Module) -> None:
        if isinstance(child, BaseTunerLayer):  # a layer of the method put in place of its base layer
            bar.update()

    handle = register_module_module_registration_hook(tick)
    try:
        yield
    finally:
        handle.remove()
        bar.close()


def base_info(model: nn.Module, spec: MethodSpec) -> MethodInfo:
    """What :func:`apply_method` records about the plain ``model`` before changing it."""
    from loldu.methods.files.integrity import linear_fingerprints

    shapes = {n: list(p.shape) for n, p in model.named_parameters()}
    info = MethodInfo(spec=spec, base_params=sum(p.numel() for p in model.parameters()), base_shapes=shapes)
    if spec.name == "pissa":  # PiSSA replaces its base weights by residuals at injection
        info.base_fingerprints = linear_fingerprints(model)
    return info


def plain_trainable_names(model: nn.Module, spec: MethodSpec) -> list[str]:
    """The parameters a plain method (bitfit, full, linear_probe) trains, without changing the model."""
    trains = get_method(spec.name).trainable
    return [name for name, _ in model.named_parameters() if trains(name, spec)]


def _module_matches(name: str, pattern: str) -> bool:
    return name == pattern or name.endswith("." + pattern)


def check_targets(model: nn.Module, targets) -> None:
    """Refuse target names that match no adaptable layer (:data:`ADAPTABLE`), listing those that exist.

    Raises:
        ValueError: if a target matches nothing.
    """
    if isinstance(targets, str):
        return  # a regex: PEFT reports a regex that matches nothing
    layers = [n for n, m in model.named_modules() if isinstance(m, ADAPTABLE)]
    missing = [t for t in targets if not any(_module_matches(n, t) for n in layers)]
    if missing:
        suffixes = sorted({n.rsplit(".", 1)[-1] for n in layers})
        raise ValueError(
            f"target modules {missing} match no Linear layer (nor Conv1D, Conv1d/2d/3d or Embedding) of "
            f"{type(model).__name__}; such layers' names here end in: {suffixes}"
        )


def _check_heads(model: nn.Module, heads) -> None:
    names = [n for n, _ in model.named_modules()]
    missing = [h for h in heads if not any(_module_matches(n, h) for n in names)]
    if missing:
        top = sorted({n.split(".")[0] for n in names if n})
        raise ValueError(f"head modules {missing} are not in {type(model).__name__}; top-level modules: {top}")


def _set_plain_trainable(model: nn.Module, spec: MethodSpec, entry) -> None:
    if spec.r is not None or spec.alpha is not None or (spec.options and entry.options_cls is None):
        raise ValueError(f"{spec.name} takes no rank, alpha or options; leave them unset (null)")
    if entry.options_cls is not None:  # its own checks of the values (names: check_spec)
        entry.options_cls(**{k: v for k, v in spec.options.items() if v is not None})
    if entry.check is not None:
        entry.check(model, spec)
    for name, p in model.named_parameters():
        p.requires_grad_(entry.trainable(name, spec))


def count_parameters(model: nn.Module) -> dict[str, int | float]:
    """Adapter parameters and trainable parameters including heads, separately.

    Returns:
        ``adapter`` (trainable, outside heads), ``head`` (trainable, in heads),
        ``trainable`` (both), ``base`` (the model before the method),
        ``adapter_share`` and ``trainable_share`` (fractions of ``base``).
    """
    info: MethodInfo | None = getattr(model, "loldu_method", None)
    heads = info.spec.head_modules if info else []
    head = adapter = 0
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if in_head(name, heads):
            head += p.numel()
        else:
            adapter += p.numel()
    base = info.base_params if info else sum(p.numel() for p in model.parameters())
    return {
        "adapter": adapter,
        "head": head,
        "trainable": adapter + head,
        "base": base,
        "adapter_share": adapter / base,
        "trainable_share": (adapter + head) / base,
    }


def optimizer_param_groups(
    model: nn.Module, weight_decay: float, decay_diagonal: bool = False, head_lr: float | None = None
) -> list[dict]:
    """Trainable parameters in AdamW groups.

    LoLDU/SVFit's z and sigma get no weight decay unless ``decay_diagonal``:
    at full rank, decaying z shrinks the whole adapted matrix. With ``head_lr``, the
    parameters of the method's ``head_modules`` (a new classifier) are a group of their
    own with that lr; the other groups take the optimizer's lr.
    """
    diagonal = {id(p) for p in _diagonal_params(model)}
    info: MethodInfo | None = getattr(model, "loldu_method", None)
    heads = info.spec.head_modules if info and head_lr is not None else []
    decay, no_decay, head = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if heads and in_head(name, heads):
            head.append(p)
        else:
            (no_decay if id(p) in diagonal and not decay_diagonal else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    if head:
        groups.append({"params": head, "weight_decay": weight_decay, "lr": head_lr})
    return groups


def _diagonal_layers(model: nn.Module):
    return (m for m in model.modules() if isinstance(m, DiagonalLayer))


def _diagonal_params(model: nn.Module):
    for layer in _diagonal_layers(model):
        for attr in layer.adapter_layer_names:
            yield from getattr(layer, attr).parameters()


def spec_dict(spec: MethodSpec) -> dict:
    """A JSON-able copy of a spec."""
    return asdict(spec)


def frozen_buffer_count(model: nn.Module) -> int:
    """Number of values in the frozen factor buffers (left and right) of LoLDU/SVFit-style layers."""
    return sum(
        b.numel()
        for layer in _diagonal_layers(model)
        for role in ("left", "right")
        for b in getattr(layer, layer.prefix + role).buffers()
    )
