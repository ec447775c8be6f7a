"""DreamBooth-style concept learning: the UNet (adapted) learns a new concept from a few images.

The VAE and the text encoder are frozen and kept in eval mode; the loss is the DDPM noise-prediction (or
v-prediction) mean squared error, plus the prior-preservation term when class images are in the batch.
Sample images for fixed prompts and seeds are rendered at set steps into ``samples/`` and logged to W&B
(:class:`~loldu.callbacks.SampleGrids`, with :func:`render` and :func:`image_grid` from here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from loldu.logs import progress

from .base import TaskFamily, stage_metrics
from .common import FineTuneModule


def image_grid(images: list, rows: int, cols: int, labels: list[str] | None = None):
    """Paste equally sized PIL images into a ``rows x cols`` grid (row-major), with optional column labels."""
    from PIL import Image, ImageDraw

    if len(images) != rows * cols:
        raise ValueError(f"{len(images)} images do not fill a {rows}x{cols} grid")
    w, h = images[0].size
    top = 14 if labels else 0
    grid = Image.new("RGB", (cols * w, rows * h + top), "white")
    draw = ImageDraw.Draw(grid)
    for i, image in enumerate(images):
        grid.paste(image.convert("RGB"), ((i % cols) * w, (i // cols) * h + top))
    for c, label in enumerate(labels or []):
        draw.text((c * w + 2, 1), label, fill="black")
    return grid


@torch.no_grad()
def render(
    pipe: Any,
    prompts: list[str],
    seeds: list[int],
    inference_steps: int,
    guidance_scale: float,
    resolution: int,
    device: torch.device | str,
    desc: str = "sampling",
) -> list:
    """One PIL image per (prompt, seed), prompt-major, under a progress bar; the global random state is left as it
    was.

    Args:
        pipe: a diffusers text-to-image pipeline.
        prompts: the prompts.
        seeds: one image per seed for every prompt.
        inference_steps: sampler steps.
        guidance_scale: classifier-free guidance scale.
        resolution: image side in pixels.
        device: where the pipeline runs (seeds its generators).
        desc: the progress bar's label (:func:`loldu.logs.progress`).
    """
    device = torch.device(device)
    pairs = [(prompt, seed) for prompt in prompts for seed in seeds]
    images = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for prompt, seed in progress(pairs, desc, unit="image"):
            out = pipe(
                prompt,
                num_inference_steps=inference_steps,
                guidance_scale=guidance_scale,
                generator=torch.Generator(device=device).manual_seed(seed),
                height=resolution,
                width=resolution,
                output_type="pil",
            )
            images.append(out.images[0])
    return images


class DiffusionModule(FineTuneModule):
    """Fine-tunes a Stable Diffusion UNet on instance (and optional class) images.

    Args:
        unet: the adapted UNet (a PEFT model around ``UNet2DConditionModel``).
        bundle: the :class:`~loldu.models.diffusion.DiffusionBundle` (VAE, text encoder, noise scheduler).
        prior_loss_weight: weight of the class-image (prior-preservation) loss.
        **optim: see :class:`~loldu.tasks.common.FineTuneModule`.
    """

    def __init__(self, unet: nn.Module, bundle: Any, prior_loss_weight: float = 1.0, **optim: Any):
        super().__init__(**optim)
        self.model = unet
        self.vae = bundle.vae.requires_grad_(False).eval()
        self.text_encoder = bundle.text_encoder.requires_grad_(False).eval()
        self.noise_scheduler = bundle.noise_scheduler
        self.prior_loss_weight = float(prior_loss_weight)

    def on_train_epoch_start(self) -> None:
        self.vae.eval()
        self.text_encoder.eval()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        pixels = batch["pixel_values"].to(self.vae.dtype)
        with torch.no_grad():
            latents = self.vae.encode(pixels).latent_dist.sample() * self.vae.config.scaling_factor
            hidden = self.text_encoder(batch["input_ids"])[0]
        noise = torch.randn_like(latents)
        sched = self.noise_scheduler
        steps = torch.randint(0, sched.config.num_train_timesteps, (latents.shape[0],), device=latents.device)
        noisy = sched.add_noise(latents, noise, steps)
        pred = self.model(noisy, steps, encoder_hidden_states=hidden).sample
        if sched.config.prediction_type == "epsilon":
            target = noise
        elif sched.config.prediction_type == "v_prediction":
            target = sched.get_velocity(latents, noise, steps)
        else:
            raise ValueError(f"unsupported prediction_type {sched.config.prediction_type!r}")
        n = int(batch.get("num_instance", len(pred)))
        pred, target = pred.float(), target.float()
        loss = nn.functional.mse_loss(pred[:n], target[:n])
        self.log("train/instance_loss", loss, on_step=True, batch_size=n)
        if n < len(pred):
            prior = nn.functional.mse_loss(pred[n:], target[n:])
            self.log("train/prior_loss", prior, on_step=True, batch_size=len(pred) - n)
            loss = loss + self.prior_loss_weight * prior
        self.log("train/loss", loss, on_step=True, prog_bar=True, batch_size=n)
        return loss


class DiffusionFamily(TaskFamily):
    """DreamBooth-style concept learning: trained by steps, no validation, sample grids, a diffusers LoRA."""

    adapted = "unet"
    merged_subdir = "unet"

    def data_kwargs(self, bundle: Any) -> dict:
        return {"tokenizer": bundle.tokenizer, "resolution": bundle.resolution}

    def prepare(self, cfg: DictConfig, bundle: Any, datamodule: Any) -> None:
        from loldu.data.dreambooth import generate_class_images
        from loldu.models.diffusion import check_prompt_length

        datamodule.attach(**self.data_kwargs(bundle))  # folders and images were checked; now the prompt lengths
        for prompt in cfg.task.samples.prompts:  # refuses prompts longer than the text encoder takes
            check_prompt_length(bundle.tokenizer, prompt, "task.samples.prompts entry")
        missing = datamodule.class_images_missing() if datamodule.with_prior_preservation else 0
        if missing > 0:
            pipe = bundle.pipeline()
            generate_class_images(
                pipe,
                datamodule.class_dir,
                datamodule.class_prompt,
                missing,
                seed=cfg.seed,
                resolution=bundle.resolution,
            )
        datamodule.setup("fit")

    def module(self, cfg: DictConfig, model: Any, bundle: Any, datamodule: Any, out: Path, **optim: Any):
        return DiffusionModule(unet=model, bundle=bundle, prior_loss_weight=cfg.task.prior_loss_weight, **optim)

    def callbacks(self, cfg: DictConfig, bundle: Any, datamodule: Any, out: Path) -> list:
        from loldu.callbacks import SampleGrids

        s = cfg.task.samples
        sampling = (s.every_n_steps, s.inference_steps, s.guidance_scale, s.sampler)
        return [SampleGrids(bundle, list(s.prompts), list(s.seeds), *sampling, out_dir=out)]

    def trainer_overrides(self, cfg: DictConfig) -> dict:
        return {"max_steps": cfg.task.max_steps, "max_epochs": -1}

    def fit(self, cfg: DictConfig, trainer: Any, module: Any, datamodule: Any, ckpt_path: str | None = None) -> dict:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        out = Path(cfg.output_dir)
        return {
            "train": stage_metrics(trainer.callback_metrics, "train/"),
            "steps": int(trainer.global_step),
            "samples": sorted(str(p.relative_to(out)) for p in (out / "samples").glob("*.png")),
        }

    def extra_exports(self, cfg: DictConfig, model: Any, out: Path) -> None:
        from loldu.methods.export import save_as_diffusers_lora

        if cfg.task.export_lora and cfg.method.name in ("loldu", "svfit"):
            save_as_diffusers_lora(model, out / "lora")

    def monitored(self, cfg: DictConfig, metrics: dict) -> float | None:
        return metrics["train"].get("train/loss")

    def headline(self, cfg: DictConfig, metrics: dict, out: Path) -> str:
        return f"train/loss = {metrics['train'].get('train/loss', float('nan')):.4f}; samples in {out / 'samples'}"


FAMILY = DiffusionFamily()
