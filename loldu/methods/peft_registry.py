"""Makes methods of this package known to PEFT: a leaf module that imports nothing of ours.

PEFT (pinned in pyproject.toml) has no public way for an outside package to add
a method: ``register_peft_method`` accepts only names already in its
``PeftType`` enum. :func:`peft_type` adds a member to that enum (the only code
that relies on the enum's private layout); :func:`register_with_peft` then calls
the public registration. Each method package does both for itself (its
``config.py`` names its type, its ``__init__`` registers it), so this module
knows no method. ``tests/test_peft_registry.py`` checks each assumption so that
a PEFT upgrade fails loudly there rather than silently elsewhere.
"""

from __future__ import annotations

from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from peft.utils.peft_types import PeftType, register_peft_method

PEFT_VERSION_TESTED = "0.21.2"


def peft_type(name: str) -> PeftType:
    """The ``PeftType`` member called ``name``, added to PEFT's str-enum when missing (idempotent).

    Args:
        name: Upper-case method name, e.g. ``"LOLDU"``.

    Returns:
        The member; ``PeftType(name)`` and ``PeftType.<name>`` return it afterwards.

    Raises:
        ValueError: ``name`` is not upper case (PEFT derives the lower-case method name from it).
    """
    if not name.isupper():
        raise ValueError(f"PEFT type names are upper case (e.g. 'LOLDU'), got {name!r}")
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


def register_with_peft(member: PeftType, config_cls: type, model_cls: type) -> None:
    """Make ``get_peft_model`` / ``PeftModel.from_pretrained`` know a method (idempotent).

    Args:
        member: The method's type, from :func:`peft_type`.
        config_cls: Its ``PeftConfig`` subclass.
        model_cls: Its ``BaseTuner`` subclass; its ``prefix`` must be ``"<name in lower case>_"``.
    """
    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING

    if PEFT_TYPE_TO_TUNER_MAPPING.get(member) is model_cls:
        return
    register_peft_method(name=member.value.lower(), config_cls=config_cls, model_cls=model_cls)


class QueryValueTargets:
    """Mixin of this project's PEFT tuners (LoLDU, SVFit, MELoRA): with no ``target_modules``, the query and value
    projections of the architecture, by the names PEFT's LoRA table gives them; a model type it lacks is refused
    with the setting to give."""

    target_module_mapping = dict(TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING)

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
