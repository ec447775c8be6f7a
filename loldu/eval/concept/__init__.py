"""Concept-learning metrics of DreamBooth runs: DINO, CLIP-I and CLIP-T, as plain mean cosine similarities.

* DINO: mean over all (generated, reference) pairs of the cosine between the DINO ViT's last-layer CLS tokens.
* CLIP-I: the same with CLIP image embeddings.
* CLIP-T: mean over generated images of the cosine between the image's and its prompt's CLIP embeddings.

Scores are raw cosines in [-1, 1] (not rescaled to [0, 1]). ``load_encoders("pretrained")`` uses
``facebook/dino-vits16`` (or a DINOv2 checkpoint) and ``openai/clip-vit-base-patch32``; ``load_encoders("tiny")``
builds small random models offline, for smoke tests only (their scores mean nothing).

Command line::

    python -m loldu.eval.concept --generated DIR --references DIR --prompts prompts.json [--encoders tiny]

where ``prompts.json`` maps each generated file name to its prompt, or is one string used for every image.
"""

from loldu.eval.concept.encoders import (
    BATCH,
    CLIP,
    CLIP_MEAN,
    CLIP_STD,
    DINO,
    ENCODER_KINDS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    TINY_IMAGE_SIZE,
    Encoders,
    load_encoders,
    simple_preprocess,
)
from loldu.eval.concept.scores import concept_scores, main

__all__ = [
    "BATCH",
    "CLIP",
    "CLIP_MEAN",
    "CLIP_STD",
    "DINO",
    "ENCODER_KINDS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TINY_IMAGE_SIZE",
    "Encoders",
    "concept_scores",
    "load_encoders",
    "main",
    "simple_preprocess",
]
