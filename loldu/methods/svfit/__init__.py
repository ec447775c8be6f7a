"""SVFit: train the top-r singular values of each frozen weight."""

from .config import SVFitConfig
from .layer import SVFitLayer
from .model import SVFitModel

__all__ = ["SVFitConfig", "SVFitLayer", "SVFitModel"]
