"""Registers LoLDU and SVFit as PEFT method types.

PEFT (pinned in pyproject.toml) has no public way for an outside package to add
a method: ``register_peft_method`` accepts only names already in its
``PeftType`` enum. We add the two members to that enum, then call the public
registration. Everything version-specific is in this module, and
``tests/test_peft_registry.py`` checks each assumption so that a PEFT upgrade
fails loudly there rather than silently elsewhere.
"""

from __future__ import annotations

from peft.utils.peft_types import PeftType, register_peft_method

PEFT_VERSION_TESTED = "0.21.2"


def _add_peft_type(name: str) -> PeftType:
    """Add ``name`` to PEFT's ``PeftType`` str-enum (idempotent)."""
    if name in PeftType.__members__:
        return PeftType[name]
    member = str.__new__(PeftType, name)
    member._name_ = name
    member._value_ = name
    member.__objclass__ = PeftType
    member.__init__(name)
    PeftType._member_map_[name] = member
    PeftType._value2member_map_[name] = member
    PeftType._member_names_.append(name)
    type.__setattr__(PeftType, name, member)
    return member


LOLDU = _add_peft_type("LOLDU")
SVFIT = _add_peft_type("SVFIT")


def register() -> None:
    """Make ``get_peft_model`` / ``PeftModel.from_pretrained`` know both methods (idempotent)."""
    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING

    from .loldu import LoLDUConfig, LoLDUModel
    from .svfit import SVFitConfig, SVFitModel

    for peft_type, config_cls, model_cls in ((LOLDU, LoLDUConfig, LoLDUModel), (SVFIT, SVFitConfig, SVFitModel)):
        if peft_type not in PEFT_TYPE_TO_TUNER_MAPPING:
            register_peft_method(name=peft_type.value.lower(), config_cls=config_cls, model_cls=model_cls)
