"""DINO, CLIP-I and CLIP-T scores of generated images against references, and the ``python -m loldu.eval.concept``
command."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loldu.eval.concept.encoders import (
    CLIP,
    DINO,
    ENCODER_KINDS,
    Encoders,
    as_rgb,
    load_encoders,
)
from loldu.run.logs import quiet


def concept_scores(
    generated: Sequence[Any], references: Sequence[Any], prompts: Sequence[str], encoders: Encoders
) -> dict[str, Any]:
    """DINO, CLIP-I and CLIP-T of generated images, as plain mean cosine similarities in [-1, 1].

    Args:
        generated: Generated images (PIL images or file paths).
        references: The subject's reference images.
        prompts: The prompt of each generated image (same length as ``generated``).
        encoders: From :func:`load_encoders`.

    Returns:
        ``{"dino", "clip_i", "clip_t"}`` (floats), ``"n_generated"``, ``"n_references"`` and ``"encoders"``
        (the encoders' kind).

    Raises:
        ValueError: No generated or reference images, or ``len(prompts) != len(generated)``.
    """
    generated, references, prompts = list(generated), list(references), list(prompts)
    if not generated:
        raise ValueError("concept_scores: no generated images.")
    if not references:
        raise ValueError("concept_scores: no reference images.")
    if len(prompts) != len(generated):
        raise ValueError(
            f"concept_scores: {len(prompts)} prompts for {len(generated)} generated images; give one prompt per image."
        )
    generated = [as_rgb(image) for image in generated]
    references = [as_rgb(image) for image in references]
    dino = encoders.dino(generated) @ encoders.dino(references).T
    clip_gen = encoders.clip_image(generated)
    clip_i = clip_gen @ encoders.clip_image(references).T
    unique = sorted(set(prompts))
    text = encoders.clip_text(unique)
    row = {prompt: i for i, prompt in enumerate(unique)}
    text_rows = text[[row[p] for p in prompts]]
    clip_t = (clip_gen * text_rows).sum(-1)
    return {
        "dino": float(dino.mean()),
        "clip_i": float(clip_i.mean()),
        "clip_t": float(clip_t.mean()),
        "n_generated": len(generated),
        "n_references": len(references),
        "encoders": encoders.kind,
    }


def _image_dir(path: str, flag: str) -> list[Path]:
    from loldu.data.dreambooth import IMAGE_SUFFIXES, list_images

    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{flag}: the folder {str(folder)!r} does not exist.")
    files = list_images(folder)
    if not files:
        raise ValueError(
            f"{flag}: the folder {str(folder)!r} holds no image files ({', '.join(s[1:] for s in IMAGE_SUFFIXES)})."
        )
    return files


def _read_prompts(path: str, files: list[Path]) -> list[str]:
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"--prompts: the file {str(file)!r} does not exist.")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"--prompts: {str(file)!r} is not valid JSON ({err}).") from err
    if isinstance(data, str):
        return [data] * len(files)
    if not isinstance(data, dict):
        raise ValueError(f"--prompts: {str(file)!r} must hold an object (file name -> prompt) or one string.")
    missing = [f.name for f in files if f.name not in data]
    if missing:
        raise ValueError(f"--prompts: {str(file)!r} has no prompt for the generated files {missing}.")
    return [str(data[f.name]) for f in files]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line: scores a folder of generated images against a folder of reference images.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The scores (also printed as JSON, and written to ``--out`` if given).
    """
    parser = argparse.ArgumentParser(prog="python -m loldu.eval.concept", description=__doc__.split("\n\n")[0])
    parser.add_argument("--generated", required=True, help="folder of generated images")
    parser.add_argument("--references", required=True, help="folder of the subject's reference images")
    parser.add_argument("--prompts", required=True, help="JSON: generated file name -> prompt, or one string")
    parser.add_argument("--encoders", choices=ENCODER_KINDS, default="pretrained")
    parser.add_argument("--dino", default=DINO, help="DINO checkpoint (hub id or local folder)")
    parser.add_argument("--clip", default=CLIP, help="CLIP checkpoint (hub id or local folder)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="write the scores to this JSON file")
    args = parser.parse_args(argv)
    quiet()
    generated = _image_dir(args.generated, "--generated")
    references = _image_dir(args.references, "--references")
    prompts = _read_prompts(args.prompts, generated)
    encoders = load_encoders(args.encoders, dino=args.dino, clip=args.clip, device=args.device)
    scores = concept_scores(generated, references, prompts, encoders)
    text = json.dumps(scores, indent=2)
    print(text)
    if args.out:
        out = Path(args.out).expanduser()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n", encoding="utf-8")
    return scores
