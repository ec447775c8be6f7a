"""LoLDU: train the diagonal of an LDU factorisation of each frozen weight.

Importing this package registers the method with PEFT (``peft.get_peft_model(model, LoLDUConfig(...))``) and in
the method table of :func:`loldu.methods.apply_method` (``name="loldu"``).
"""

from loldu.methods.loldu.config import LOLDU, LoLDUConfig
from loldu.methods.loldu.layer import LoLDULayer
from loldu.methods.loldu.model import LoLDUModel
from loldu.methods.peft_registry import register_with_peft
from loldu.methods.registry import MethodEntry, register_method

register_with_peft(LOLDU, LoLDUConfig, LoLDUModel)
METHOD = register_method(MethodEntry("loldu", LoLDUConfig, alpha_field="alpha"))

__all__ = ["LOLDU", "METHOD", "LoLDUConfig", "LoLDULayer", "LoLDUModel"]
