"""SVFit: train the top-r singular values of each frozen weight.

Importing this package registers the method with PEFT (``peft.get_peft_model(model, SVFitConfig(...))``) and in
the method table of :func:`loldu.methods.apply_method` (``name="svfit"``).
"""

from loldu.methods.peft_registry import register_with_peft
from loldu.methods.registry import MethodEntry, register_method
from loldu.methods.svfit.config import SVFIT, SVFitConfig
from loldu.methods.svfit.layer import SVFitLayer
from loldu.methods.svfit.model import SVFitModel

register_with_peft(SVFIT, SVFitConfig, SVFitModel)
METHOD = register_method(MethodEntry("svfit", SVFitConfig, alpha_field="alpha"))

__all__ = ["METHOD", "SVFIT", "SVFitConfig", "SVFitLayer", "SVFitModel"]
