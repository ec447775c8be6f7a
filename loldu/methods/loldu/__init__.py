"""LoLDU: train the diagonal of an LDU factorisation of each frozen weight.

Importing this package registers the method with PEFT (``peft.get_peft_model(model, LoLDUConfig(...))``) and in
the method table of :func:`loldu.methods.apply_method` (``name="loldu"``).
"""

from ..peft_registry import register_with_peft
from ..registry import MethodEntry, register_method
from .config import LOLDU, LoLDUConfig
from .layer import LoLDULayer
from .model import LoLDUModel

register_with_peft(LOLDU, LoLDUConfig, LoLDUModel)
METHOD = register_method(MethodEntry("loldu", LoLDUConfig, alpha_field="alpha"))

__all__ = ["LOLDU", "METHOD", "LoLDUConfig", "LoLDULayer", "LoLDUModel"]
