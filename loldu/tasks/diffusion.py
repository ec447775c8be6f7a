"""DreamBooth-style concept learning: the UNet (adapted) learns a new concept from a few images.

The VAE and the text encoder are frozen and kept in eval mode; the loss is the DDPM noise-prediction (or
v-prediction) mean squared error, plus the prior-preservation term when class images are in the batch.
Sample images for fixed prompts and seeds are rendered at set steps into ``samples/`` and logged to W&B.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

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
) -> list:
    """One PIL image per (prompt, seed), prompt-major; the global random state is left as it was.

    Args:
        pipe: a diffusers text-to-image pipeline.
        prompts: the prompts.
        seeds: one image per seed for every prompt.
        inference_steps: sampler steps.
        guidance_scale: classifier-free guidance scale.
        resolution: image side in pixels.
        device: where the pipeline runs (seeds its generators).
    """
    device = torch.device(device)
    images = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for prompt in prompts:
            for seed in seeds:
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
        bundle: the :class:`~loldu.models.diffusion.DiffusionBundle` (VAE, text encoder, tokenizer, schedulers).
        prior_loss_weight: weight of the class-image (prior-preservation) loss.
        sample_prompts: prompts rendered at every sampling point.
        sample_seeds: one image per (prompt, seed).
        sample_every_n_steps: sampling interval in optimizer steps (0: only before and after training).
        sample_inference_steps: denoising steps of the sampler.
        guidance_scale: classifier-free guidance scale.
        sampler: ``ddim`` or ``dpm``.
        out_dir: the run folder (samples go to ``out_dir/samples``).
        **optim: see :class:`~loldu.tasks.common.FineTuneModule`.
    """

    def __init__(
        self,
        unet: nn.Module,
        bundle: Any,
        prior_loss_weight: float = 1.0,
        sample_prompts: list[str] | None = None,
        sample_seeds: list[int] | None = None,
        sample_every_n_steps: int = 0,
        sample_inference_steps: int = 25,
        guidance_scale: float = 7.5,
        sampler: str = "ddim",
        out_dir: str | Path | None = None,
        **optim: Any,
    ):
        super().__init__(**optim)
        self.model = unet
        self.bundle = bundle
        self.vae = bundle.vae.requires_grad_(False).eval()
        self.text_encoder = bundle.text_encoder.requires_grad_(False).eval()
        self.noise_scheduler = bundle.noise_scheduler
        self.prior_loss_weight = float(prior_loss_weight)
        self.sample_prompts = list(sample_prompts or [])
        self.sample_seeds = [int(s) for s in (sample_seeds or [0])]
        self.sample_every_n_steps = int(sample_every_n_steps)
        self.sample_inference_steps = int(sample_inference_steps)
        self.guidance_scale = float(guidance_scale)
        self.sampler = sampler
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.sampled: dict[int, list] = {}  # step -> images (prompt-major, then seed)
        self._last_sampled_step = -1

    # -- training ---------------------------------------------------------------------------------------------
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

    # -- samples ----------------------------------------------------------------------------------------------
    def on_train_start(self) -> None:
        self.render_samples()

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(outputs, batch, batch_idx)
        every = self.sample_every_n_steps
        if every > 0 and self.global_step % every == 0 and self.global_step > 0:
            self.render_samples()

    def on_train_end(self) -> None:
        self.render_samples()
        self.save_progression()

    @torch.no_grad()
    def render_samples(self) -> list:
        """Render every (prompt, seed) at the current step, save the grid, log it; returns the images."""
        step = int(self.global_step)
        if not self.sample_prompts or step == self._last_sampled_step:
            return []
        self._last_sampled_step = step
        was_training = self.model.training
        self.model.eval()
        unet = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        pipe = self.bundle.pipeline(unet=unet, scheduler=self.sampler)
        try:
            images = render(
                pipe,
                self.sample_prompts,
                self.sample_seeds,
                self.sample_inference_steps,
                self.guidance_scale,
                self.bundle.resolution,
                self.device,
            )
        finally:
            self.model.train(was_training)
        self.sampled[step] = images
        grid = image_grid(images, len(self.sample_prompts), len(self.sample_seeds))
        if self.out_dir is not None:
            folder = self.out_dir / "samples"
            folder.mkdir(parents=True, exist_ok=True)
            grid.save(folder / f"step_{step:06d}.png")
        for logger in self.loggers:
            if hasattr(logger, "log_image"):  # W&B
                logger.log_image(key="samples", images=[grid], caption=[f"step {step}"], step=step)
        return images

    def save_progression(self):
        """One grid of every sampling point (columns, in step order) for every (prompt, seed) (rows): the
        paper's Figure 5 layout. Saved as ``samples/progression.png`` and logged; returns the image."""
        if not self.sampled:
            return None
        steps = sorted(self.sampled)
        per_step = [self.sampled[s] for s in steps]
        rows = len(per_step[0])
        images = [per_step[c][r] for r in range(rows) for c in range(len(steps))]
        grid = image_grid(images, rows, len(steps), labels=[str(s) for s in steps])  # column = training step
        if self.out_dir is not None:
            grid.save(self.out_dir / "samples" / "progression.png")
        for logger in self.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key="samples/progression", images=[grid], caption=["columns: training steps"])
        return grid
