"""LoLDU: parameter-efficient fine-tuning by training the diagonal of an LDU factorisation."""

from .methods import *  # noqa: F403  (registers LoLDU/SVFit with PEFT on import)
from .methods import __all__  # noqa: F401

__version__ = "0.1.0"
