"""The table of methods :func:`loldu.methods.apply_method` offers: each method adds itself here.

A leaf module (it imports nothing of ours). A method package registers a
:class:`MethodEntry` in its ``__init__`` (LoLDU, SVFit), ``baselines.py`` does it
for PEFT's methods and the plain ones. Defaults live in one place: the fields of
the method's config class; a spec leaves a value unset (None) to take it, and
``conf/method/*.yaml`` states none (``tests/test_method_configs.py`` checks this).

Adding a PEFT-shaped method ``foo``: a package ``loldu/methods/foo/`` with ``config.py`` (the config dataclass;
``FOO = peft_type("FOO")`` from :mod:`.peft_registry`), ``layer.py``, ``model.py`` and an ``__init__`` that calls
``register_with_peft(FOO, FooConfig, FooModel)`` and ``register_method(MethodEntry("foo", FooConfig, ...))``; one
line ``from loldu.methods import foo`` in ``loldu/methods/__init__.py``; and ``conf/method/foo.yaml``. Its
checkpoint state is what its layer declares (``adapter_layer_names``, ``other_param_names``), see :mod:`.state`.

A method PEFT already ships needs no package: one line in :data:`loldu.methods.peft_tuners.NAMED` and its YAML, or
nothing at all with ``method=peft method.peft_type=<type>`` (the family entry ``peft``, whose members are named
``peft:<type>``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

_REGISTRY: dict[str, MethodEntry] = {}

#: Read-only view of the registry: method name -> :class:`MethodEntry`, in registration order.
METHODS: Mapping[str, MethodEntry] = MappingProxyType(_REGISTRY)


@dataclass(frozen=True)
class TrainingHooks:
    """What a method does while it trains besides its forward pass (AdaLoRA: its rank allocation). The training
    loop (:class:`loldu.tasks.common.FineTuneModule`) calls them through :mod:`loldu.methods.hooks`.

    Attributes:
        fit_start: ``(model, total optimizer steps of the run)``, once training starts (AdaLoRA's ``total_step``).
        after_step: ``(model, step)``, after each optimizer step while the gradients are still there; ``step``
            counts optimizer steps from 0.
        penalty: ``model -> scalar tensor``, a term added to the training loss (AdaLoRA's orthogonality).
        state: ``model -> dict`` of what the method keeps outside the model's parameters and buffers while it
            trains (AdaLoRA's importance averages and rank pattern), for a resumable checkpoint; tensors, lists,
            numbers and strings only (checkpoints are read with ``weights_only=True``).
        load_state: ``(model, state)``, puts back what ``state`` returned, when a run resumes.
    """

    fit_start: Callable[[Any, int], None] | None = None
    after_step: Callable[[Any, int], None] | None = None
    penalty: Callable[[Any], Any] | None = None
    state: Callable[[Any], dict] | None = None
    load_state: Callable[[Any, dict], None] | None = None


@dataclass(frozen=True)
class MethodEntry:
    """How to apply one method, and what it keeps in a checkpoint.

    Attributes:
        name: The name a spec uses (``MethodSpec.name``, ``conf/method/<name>.yaml``).
        config_cls: The method's ``PeftConfig`` class; None for a plain method (no adapter layers).
        rank_field: The config field ``MethodSpec.r`` sets (e.g. ``r``, ``n_frequency``); None: the method has no rank.
        alpha_field: The config field ``MethodSpec.alpha`` sets; None: the method has no alpha.
        alpha_is_rank: An unset alpha means alpha = rank (LoRA's convention here; PEFT's own default is 8).
        base_options: Config values that make the method what it is, unless the options pick a variant (PiSSA is
            LoRA with ``init_lora_weights="pissa"``; ``"pissa_niter_4"`` picks its fast SVD).
        trainable: Plain methods: ``(parameter name, spec) -> bool``, which parameters train.
        check: Plain methods: ``(model, spec) -> None``, raises ValueError on a model the method cannot train.
        adapter_state: ``model -> {state-dict key: tensor}``, what a checkpoint must keep; None: the default for
            its kind (see :func:`loldu.methods.adapter_state_dict`).
        options_cls: Plain methods that take options (textual inversion's placeholder word): the dataclass of
            ``MethodSpec.options``, whose field defaults are the method's defaults; None: no options.
        members: A family of methods (``peft``: any PEFT method by its type): ``member -> MethodEntry``, so that
            ``<name>:<member>`` names one (``peft:ia3``); the family's name alone names none.
        model_options: PEFT methods: ``(model, spec) -> {field: value}``, config values chosen from the model where
            the spec leaves them unset (a VB-LoRA vector length that divides the adapted layers' sizes); its
            ``fields`` attribute names them (a run leaves them null rather than the config class's default).
        hooks: What the method does while it trains besides its forward pass (:class:`TrainingHooks`).
    """

    name: str
    config_cls: type | None = None
    rank_field: str | None = "r"
    alpha_field: str | None = None
    alpha_is_rank: bool = False
    base_options: Mapping[str, Any] = field(default_factory=dict)
    trainable: Callable[[str, Any], bool] | None = None
    check: Callable[[Any, Any], None] | None = None
    adapter_state: Callable[[Any], dict] | None = None
    options_cls: type | None = None
    members: Callable[[str], MethodEntry] | None = None
    model_options: Callable[[Any, Any], dict] | None = None
    hooks: TrainingHooks | None = None

    @property
    def is_peft(self) -> bool:
        """Whether the method is a PEFT tuner (``apply_method`` returns a ``PeftModel``)."""
        return self.config_cls is not None

    def defaults(self) -> dict[str, Any]:
        """The config class's (a plain method's ``options_cls``'s) field defaults: the one source of this method's
        defaults."""
        source = self.config_cls or self.options_cls
        if source is None:
            return {}
        out = {}
        for f in dataclasses.fields(source):
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = f.default_factory()
        return out

    def peft_config(self, r: int | None, alpha: float | None, options: Mapping, **common):
        """The method's PEFT config; unset (None) values take the config class's defaults.

        Args:
            r: Rank (``rank_field``); None: the default.
            alpha: Scale (``alpha_field``); None: the default (or the rank when ``alpha_is_rank``).
            options: Further config fields; None values are dropped (they mean "the default").
            **common: Fields every method takes (``target_modules``, ``modules_to_save``).

        Raises:
            ValueError: An option the config class does not have, or a rank/alpha the method does not take.
        """
        kwargs = {k: v for k, v in options.items() if v is not None}
        unknown = sorted(set(kwargs) - set(self.defaults()))
        if unknown:
            raise ValueError(
                f"{self.name} has no option(s) {unknown}; {self.config_cls.__name__} fields: {sorted(self.defaults())}"
            )
        for key, value in self.base_options.items():
            kwargs.setdefault(key, value)
        for what, value, target in (("r", r, self.rank_field), ("alpha", alpha, self.alpha_field)):
            if value is not None and target is None:
                raise ValueError(f"{self.name} takes no {what}; leave it unset (null)")
            if value is not None:
                kwargs[target] = value
        if self.alpha_is_rank and alpha is None:
            kwargs[self.alpha_field] = kwargs.get(self.rank_field, self.defaults()[self.rank_field])
        return self.config_cls(**kwargs, **common)


def register_method(entry: MethodEntry) -> MethodEntry:
    """Add a method to the table (idempotent for the same entry).

    Raises:
        ValueError: Another entry already has this name.
    """
    known = _REGISTRY.get(entry.name)
    if known is not None and known != entry:
        raise ValueError(f"a method called {entry.name!r} is already registered")
    _REGISTRY[entry.name] = entry
    return entry


def get_method(name: str) -> MethodEntry:
    """The entry of method ``name``.

    ``<family>:<member>`` (``peft:ia3``) is a member of a family (:attr:`MethodEntry.members`).

    Raises:
        ValueError: Unknown name (the message lists the registered ones), or a family's name alone.
    """
    family, _, member = name.partition(":")
    if member and family in _REGISTRY and _REGISTRY[family].members is not None:
        return _REGISTRY[family].members(member)
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(_REGISTRY)}")
    if _REGISTRY[name].members is not None:
        raise ValueError(f"method {name} is a family of methods: name one as {name}:<member>")
    return _REGISTRY[name]
