"""Hugging Face Hub sources: the loaders (:mod:`.sources`) and the catalogue of the pinned revisions and their
recorded schemas that the loaders check what they load against (:mod:`.catalog`)."""

from loldu.data.hub.catalog import HUB_DATASETS, HubDataset, check_hub_schema, hub_dataset
from loldu.data.hub.sources import GLUE_TASKS, alpaca_hub, glue, hub_image, hub_text, load_hub_dataset

__all__ = [
    "GLUE_TASKS",
    "HUB_DATASETS",
    "HubDataset",
    "alpaca_hub",
    "check_hub_schema",
    "glue",
    "hub_dataset",
    "hub_image",
    "hub_text",
    "load_hub_dataset",
]
