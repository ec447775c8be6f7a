"""An adapter on disk: save and load with integrity checks (:mod:`.adapter`, :mod:`.integrity`), lossless export as
LoRA for PEFT and diffusers (:mod:`.export`), and the model card and portable names (:mod:`.model_card`)."""

from loldu.methods.files.adapter import load_adapter, merge_method, read_spec, save_adapter
from loldu.methods.files.export import diagonal_to_lora, save_as_diffusers_lora, save_as_peft_lora
from loldu.methods.files.model_card import model_card, write_run_card

__all__ = [
    "diagonal_to_lora",
    "load_adapter",
    "merge_method",
    "model_card",
    "read_spec",
    "save_adapter",
    "save_as_diffusers_lora",
    "save_as_peft_lora",
    "write_run_card",
]
