"""The MELoRA tuner: checks every target, then injects :class:`MELoRALayer` (PEFT BaseTuner)."""

from __future__ import annotations

from contextlib import contextmanager

from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer
from torch import nn

from loldu.methods.melora.layer import MELoRALayer, check_target
from loldu.methods.peft_registry import QueryValueTargets


class MELoRAModel(QueryValueTargets, BaseTuner):
    """PEFT tuner for MELoRA; use through ``peft.get_peft_model(model, MELoRAConfig(...))``. Default targets: LoRA's
    query/value (:class:`~loldu.methods.peft_registry.QueryValueTargets`), as the paper adapts."""

    prefix = "melora_"
    tuner_layer_cls = MELoRALayer

    def _pre_injection_hook(self, model: nn.Module, config, adapter_name: str) -> None:
        # Refuse a target of another type, features n_mini does not divide, or a rank that does not fit, before a
        # single layer is replaced.
        if config.target_modules is None:
            model_type = getattr(getattr(model, "config", None), "model_type", None)
            config = self._prepare_adapter_config(config, {"model_type": model_type})
        for name, module in model.named_modules():
            if not self._check_target_module_exists(config, name):
                continue
            base = module.get_base_layer() if isinstance(module, BaseTunerLayer) else module
            check_target(base, name, config.r, config.n_mini)

    def _create_and_replace(self, config, adapter_name, target, target_name, parent, current_key, **kwargs):
        if isinstance(target, MELoRALayer):
            target.update_layer(adapter_name, config)
            return
        new_module = MELoRALayer(target, where=current_key)
        new_module.update_layer(adapter_name, config)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)  # a further adapter is not trained unless made active
        self._replace_module(parent, target_name, new_module, target)

    @contextmanager
    def _enable_peft_forward_hooks(self, *args, **kwargs):
        # PeftModel.forward strips adapter_names from what reaches the layers: refuse it rather than ignore it.
        if kwargs.get("adapter_names") is not None:
            raise ValueError("MELoRA has no mixed-adapter batches (adapter_names); call set_adapter per batch instead")
        yield
