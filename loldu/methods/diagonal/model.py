"""PEFT tuner shared by LoLDU and SVFit: finds targets, checks them, injects layers."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer
from torch import nn

from loldu.methods.decompose import check_rank
from loldu.methods.diagonal.combine import add_weighted_adapter
from loldu.methods.diagonal.kinds import kind_for
from loldu.methods.diagonal.mixed import adapter_names_hooks
from loldu.methods.peft_registry import QueryValueTargets


class DiagonalModel(QueryValueTargets, BaseTuner):
    """Base tuner; subclasses set ``prefix`` and ``tuner_layer_cls``. Default targets: query and value
    (:class:`~loldu.methods.peft_registry.QueryValueTargets`), which the paper adapts everywhere."""

    def _pre_injection_hook(self, model: nn.Module, config, adapter_name: str) -> None:
        # Refuse a target type no layer exists for, or a rank that does not fit a
        # target, before a single layer is factorised or replaced.
        if config.target_modules is None:
            model_type = getattr(getattr(model, "config", None), "model_type", None)
            config = self._prepare_adapter_config(config, {"model_type": model_type})
        inside: list[str] = []  # an adapter layer's own submodules (PEFT skips them too)
        for name, module in model.named_modules():
            if any(name.startswith(prefix) for prefix in inside):
                continue
            if isinstance(module, BaseTunerLayer):
                inside.append(name + ".")
            if not name or not self._check_target_module_exists(config, name):
                continue
            base = module.get_base_layer() if isinstance(module, BaseTunerLayer) else module
            kind = kind_for(base, name)
            check_rank(config.r, (kind.out_features, kind.in_features), name=name, note=kind.describe())

    def _create_and_replace(self, config, adapter_name, target, target_name, parent, current_key, **kwargs):
        if isinstance(target, self.tuner_layer_cls):
            target.update_layer(adapter_name, config)
            return
        base = target.get_base_layer() if isinstance(target, BaseTunerLayer) else target
        kind_for(base, current_key)  # PEFT's ValueError for a type no layer exists for
        new_module = self.tuner_layer_cls(target)
        new_module.update_layer(adapter_name, config)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)

    @contextmanager
    def _enable_peft_forward_hooks(self, *args, **kwargs):
        # PeftModel.forward/generate enter this with the call's kwargs; it
        # strips adapter_names from what reaches the base model.
        with adapter_names_hooks(self, self.tuner_layer_cls, **kwargs):
            yield

    def _cast_adapter_dtype(self, adapter_name: str, autocast_adapter_dtype: bool = True) -> None:
        """PEFT's dtype rule for z, sigma and ref (created in float32).

        ``autocast_adapter_dtype=True`` (PEFT's default) keeps them in float32;
        ``False`` gives them each half-precision base layer's dtype, as PEFT
        leaves other adapters in the base dtype. Frozen factors always follow
        the base layer; the pivots and fingerprint stay as they are.
        """
        super()._cast_adapter_dtype(adapter_name, autocast_adapter_dtype=autocast_adapter_dtype)
        if autocast_adapter_dtype:
            return
        for module in self.model.modules():
            if not isinstance(module, self.tuner_layer_cls) or adapter_name not in module._dict("z"):
                continue
            dtype = module.get_base_layer().weight.dtype
            if dtype not in (torch.float16, torch.bfloat16):
                continue
            for role in ("z", "sigma"):
                store = module._dict(role)
                old = store[adapter_name]
                store[adapter_name] = nn.Parameter(old.detach().to(dtype), requires_grad=old.requires_grad)
            module._dict("ref")[adapter_name] = module._dict("ref")[adapter_name].to(dtype)

    def add_weighted_adapter(
        self,
        adapters: list[str],
        weights: list[float],
        adapter_name: str,
        combination_type: str = "linear",
    ) -> None:
        """Add ``adapter_name``: the weighted sum of the updates of ``adapters`` (PEFT's LoRA API).

        Exact for adapters that share their factors (same base, r and
        decomposition); see :mod:`loldu.methods.diagonal.combine`. The new
        adapter is not activated: call ``set_adapter(adapter_name)``.

        Args:
            adapters: names of the adapters to combine.
            weights: one weight per adapter (any sign).
            adapter_name: name of the new adapter.
            combination_type: only ``"linear"``.

        Raises:
            ValueError: unknown or existing names, another combination type,
                or adapters with different targets, ranks or factors.
        """
        add_weighted_adapter(self, self.tuner_layer_cls, adapters, weights, adapter_name, combination_type)
