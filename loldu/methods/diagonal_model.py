"""PEFT tuner shared by LoLDU and SVFit: finds targets, checks them, injects layers."""

from __future__ import annotations

from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer
from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from torch import nn

from .decompose import check_rank

# The paper adapts query and value everywhere; PEFT's LoRA table says what
# those are called in each transformers architecture.
DEFAULT_TARGETS = dict(TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING)


class DiagonalModel(BaseTuner):
    """Base tuner; subclasses set ``prefix`` and ``tuner_layer_cls``."""

    target_module_mapping = DEFAULT_TARGETS

    def _pre_injection_hook(self, model: nn.Module, config, adapter_name: str) -> None:
        # Refuse a rank that does not fit any target before a single layer is
        # factorised or replaced.
        if config.target_modules is None:
            model_type = getattr(getattr(model, "config", None), "model_type", None)
            config = self._prepare_adapter_config(config, {"model_type": model_type})
        for name, module in model.named_modules():
            base = module.get_base_layer() if isinstance(module, BaseTunerLayer) else module
            if not isinstance(base, nn.Linear) or not self._check_target_module_exists(config, name):
                continue
            check_rank(config.r, tuple(base.weight.shape), name=name)

    def _prepare_adapter_config(self, peft_config, model_config: dict):
        if peft_config.target_modules is None:
            targets = self.target_module_mapping.get(model_config.get("model_type"))
            if targets is None:
                raise ValueError(
                    f"no default target modules for model type {model_config.get('model_type')!r}; "
                    "set target_modules (e.g. ['query', 'value'] or ['q_proj', 'v_proj'])"
                )
            peft_config.target_modules = set(targets)
        return peft_config

    def _create_and_replace(self, config, adapter_name, target, target_name, parent, current_key, **kwargs):
        if isinstance(target, self.tuner_layer_cls):
            target.update_layer(adapter_name, config)
            return
        base = target.get_base_layer() if isinstance(target, BaseTunerLayer) else target
        if not isinstance(base, nn.Linear):
            raise TypeError(
                f"{current_key} is a {type(base).__name__}; {type(self).__name__} adapts torch.nn.Linear only. "
                "Narrow target_modules to Linear layers."
            )
        new_module = self.tuner_layer_cls(target)
        new_module.update_layer(adapter_name, config)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)
