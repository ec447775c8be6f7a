"""Concept-learning metrics of a finished DreamBooth run: generate, then score DINO, CLIP-I and CLIP-T.

    python -m loldu.eval.dreambooth RUN_DIR [--encoders pretrained|tiny] [--images-per-prompt 4]

The run is rebuilt from its folder (``config.yaml`` + ``adapter/``); ``images-per-prompt`` images are generated for
every evaluation prompt (default: the run's sample prompts) with seeds 0..n-1 into ``RUN_DIR/eval/``; the subject's
instance images are the references. Scores are plain mean cosines (see :func:`loldu.eval.concept.concept_scores`)
and go to ``RUN_DIR/concept_metrics.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate

from loldu.eval.concept import CLIP, DINO, concept_scores, load_encoders
from loldu.models.diffusion import check_prompt_length
from loldu.run.finished import load_config, load_run
from loldu.run.logs import quiet
from loldu.tasks.diffusion import render, written_prompt


def evaluate_run(
    run_dir: str | Path,
    encoders: str = "pretrained",
    prompts: list[str] | None = None,
    images_per_prompt: int = 4,
    inference_steps: int = 50,
    guidance_scale: float = 7.5,
    strip_identifier: str | None = None,
    device: str = "cpu",
    dino: str = DINO,
    clip: str = CLIP,
) -> dict[str, Any]:
    """Generate images with the run's adapted UNet and score them against the instance images.

    Args:
        run_dir: a finished diffusion run folder.
        encoders: ``pretrained`` (DINO ViT-S/16 and CLIP ViT-B/32) or ``tiny`` (random, offline smoke test).
        prompts: evaluation prompts; None: the run's ``task.samples.prompts``.
        images_per_prompt: images per prompt (seeds 0..n-1).
        inference_steps: sampler steps.
        guidance_scale: classifier-free guidance scale.
        strip_identifier: a token (e.g. ``sks``) removed from the prompt used for CLIP-T, so the text side names
            the class only; None: the prompt as generated.
        device: where generation and encoders run.
        dino, clip: encoder ids or local folders.

    Returns:
        The scores and the settings (also written to ``RUN_DIR/concept_metrics.json``).

    Raises:
        ValueError: the run is not a diffusion run, or no prompts / images_per_prompt < 1.
    """
    run_dir = Path(run_dir)
    cfg = load_config(run_dir)
    if cfg.task.family != "diffusion":
        raise ValueError(f"{run_dir} is a {cfg.task.family} run; concept metrics need a diffusion run")
    prompts = list(prompts or cfg.task.samples.prompts)
    if not prompts or images_per_prompt < 1:
        raise ValueError("give at least one prompt and images_per_prompt >= 1")
    bundle, pipe, references = _pipeline_and_references(run_dir, cfg, prompts, device)
    seeds = list(range(images_per_prompt))
    generated = render(
        pipe, prompts, seeds, inference_steps, guidance_scale, bundle.resolution, device, desc="generating"
    )
    gen_prompts = _save_generated(run_dir / "eval", generated, prompts, images_per_prompt, strip_identifier)
    scores = concept_scores(
        generated, references, gen_prompts, load_encoders(encoders, dino=dino, clip=clip, device=device)
    )
    result = {
        **scores,
        "prompts": prompts,
        "images_per_prompt": images_per_prompt,
        "inference_steps": inference_steps,
        "guidance_scale": guidance_scale,
        "strip_identifier": strip_identifier,
        "dino_model": dino,
        "clip_model": clip,
    }
    (run_dir / "concept_metrics.json").write_text(json.dumps(result, indent=2))
    return result


def _pipeline_and_references(run_dir: Path, cfg, prompts: list[str], device: str):
    """The run's bundle, a pipeline with its adapted UNet (or textual inversion's trained text encoder and new word)
    on ``device``, and the instance images.

    Prompts the text encoder cannot take are refused before anything is generated.
    """
    _, bundle, trained = load_run(run_dir)  # the UNet, or textual inversion's text encoder (in the bundle)
    data = instantiate(cfg.task.data, _convert_="all", tokenizer=bundle.tokenizer, resolution=bundle.resolution)
    data.check()
    references = data.instance_images()
    for prompt in prompts:  # refuses prompts the text encoder cannot take, before generating
        check_prompt_length(bundle.tokenizer, written_prompt(cfg, prompt), "evaluation prompt")
    unet = trained if bundle.trained == "unet" else bundle.unet
    for part in (unet, bundle.vae, bundle.text_encoder):
        part.to(device).eval()
    pipe = bundle.pipeline(unet=unet.get_base_model() if hasattr(unet, "get_base_model") else unet)
    return bundle, pipe, references


def _save_generated(
    folder: Path, generated: list, prompts: list[str], images_per_prompt: int, strip_identifier: str | None
) -> list[str]:
    """Save the images as ``p{prompt}_s{seed}.png`` with ``prompts.json``; return each image's CLIP-T prompt."""
    folder.mkdir(exist_ok=True)
    gen_prompts, names = [], {}
    for k, image in enumerate(generated):
        i, seed = divmod(k, images_per_prompt)
        name = f"p{i:02d}_s{seed:02d}.png"
        image.save(folder / name)
        prompt = prompts[i]
        text = " ".join(w for w in prompt.split() if w != strip_identifier) if strip_identifier else prompt
        gen_prompts.append(text)
        names[name] = text
    (folder / "prompts.json").write_text(json.dumps(names, indent=2))
    return gen_prompts


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m loldu.eval.dreambooth", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", help="a finished diffusion run folder")
    parser.add_argument("--encoders", choices=["pretrained", "tiny"], default="pretrained")
    parser.add_argument("--prompt", action="append", dest="prompts", help="evaluation prompt (repeatable)")
    parser.add_argument("--images-per-prompt", type=int, default=4)
    parser.add_argument("--inference-steps", type=int, default=50)
    parser.add_argument("--guidance-scale", type=float, default=7.5)
    parser.add_argument("--strip-identifier", default=None, help="token removed from CLIP-T prompts, e.g. sks")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dino", default=DINO)
    parser.add_argument("--clip", default=CLIP)
    args = parser.parse_args(argv)
    quiet()
    result = evaluate_run(
        args.run_dir,
        encoders=args.encoders,
        prompts=args.prompts,
        images_per_prompt=args.images_per_prompt,
        inference_steps=args.inference_steps,
        guidance_scale=args.guidance_scale,
        strip_identifier=args.strip_identifier,
        device=args.device,
        dino=args.dino,
        clip=args.clip,
    )
    print(
        f"DINO {result['dino']:.4f}  CLIP-I {result['clip_i']:.4f}  CLIP-T {result['clip_t']:.4f}  "
        f"({result['n_generated']} generated x {result['n_references']} references; plain mean cosines)"
    )
    return result


if __name__ == "__main__":
    main()
