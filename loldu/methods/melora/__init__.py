"""MELoRA: mini-ensemble low-rank adapters, a block-diagonal LoRA (Ren et al., ACL 2024).

Importing this package registers the method with PEFT (``peft.get_peft_model(model, MELoRAConfig(...))``,
``PeftModel.from_pretrained``) and in the method table of :func:`loldu.methods.apply_method` (``name="melora"``).
"""

from loldu.methods.melora.config import MELORA, MELoRAConfig
from loldu.methods.melora.layer import MELoRALayer
from loldu.methods.melora.model import MELoRAModel
from loldu.methods.peft_registry import register_with_peft
from loldu.methods.registry import MethodEntry, register_method

register_with_peft(MELORA, MELoRAConfig, MELoRAModel)
METHOD = register_method(MethodEntry("melora", MELoRAConfig, alpha_field="alpha"))

__all__ = ["MELORA", "METHOD", "MELoRAConfig", "MELoRALayer", "MELoRAModel"]
