"""LoLDU: train the diagonal of an LDU factorisation of each frozen weight."""

from .config import LoLDUConfig
from .layer import LoLDULayer
from .model import LoLDUModel

__all__ = ["LoLDUConfig", "LoLDULayer", "LoLDUModel"]
