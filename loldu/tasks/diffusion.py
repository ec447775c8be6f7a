"""DreamBooth-style concept learning: the UNet (adapted) learns a new concept from a few images.

The VAE and the text encoder are frozen and kept in eval mode; the loss is the DDPM noise-prediction (or
v-prediction) mean squared error, plus the prior-preservation term when class images are in the batch.
The LoLDU paper's Stable Diffusion baselines are methods of this family only: ``method=dreambooth_full`` trains the
whole UNet (export: ``merged/unet``), ``method=textual_inversion`` trains new token rows of the text encoder instead
(UNet frozen; export: ``textual_inversion/learned_embeds.safetensors`` for diffusers' ``load_textual_inversion``).
Sample images for fixed prompts and seeds are rendered at set steps into ``samples/`` and logged to W&B
(:class:`SampleGrids`, with :func:`render` and :func:`image_grid`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from loldu.methods.progress import progress
from loldu.methods.textual_inversion import TextualInversionOptions, expand_placeholder
from loldu.models.diffusion import freeze
from loldu.tasks.base import TaskFamily, stage_metrics
from loldu.tasks.common import FineTuneModule, loggers_with

log = logging.getLogger(__name__)


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
        desc: the progress bar's label (:func:`loldu.run.logs.progress`).
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
    """Fine-tunes a Stable Diffusion UNet on instance (and optional class) images, or, for textual inversion (the
    bundle's ``trained`` is ``"text_encoder"``), the new token rows of its text encoder through the frozen UNet.

    Args:
        model: what trains: the adapted UNet (a PEFT model around ``UNet2DConditionModel``, or the UNet itself for
            full fine-tuning), or the text encoder with its placeholder rows (textual inversion).
        bundle: the :class:`~loldu.models.diffusion.DiffusionBundle` (VAE, text encoder or UNet, noise scheduler).
        prior_loss_weight: weight of the class-image (prior-preservation) loss.
        **optim: see :class:`~loldu.tasks.common.FineTuneModule`.
    """

    def __init__(self, model: nn.Module, bundle: Any, prior_loss_weight: float = 1.0, **optim: Any):
        super().__init__(**optim)
        self.model = model
        self.trains_text = getattr(bundle, "trained", "unet") == "text_encoder"
        self.vae = freeze(bundle.vae)
        if self.trains_text:  # gradients pass through the frozen UNet to the new token rows
            self.unet = freeze(bundle.unet)
        else:
            self.text_encoder = freeze(bundle.text_encoder)
        self.noise_scheduler = bundle.noise_scheduler
        self.prior_loss_weight = float(prior_loss_weight)

    @property
    def denoiser(self) -> nn.Module:
        """The UNet the loss runs through (the trained one, or the frozen one for textual inversion)."""
        return self.unet if self.trains_text else self.model

    @property
    def encoder(self) -> nn.Module:
        """The text encoder (the trained one for textual inversion, else the frozen one)."""
        return self.model if self.trains_text else self.text_encoder

    def on_train_epoch_start(self) -> None:
        self.vae.eval()
        (self.unet if self.trains_text else self.text_encoder).eval()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        pixels = batch["pixel_values"].to(self.vae.dtype)
        with torch.no_grad():
            latents = self.vae.encode(pixels).latent_dist.sample() * self.vae.config.scaling_factor
        with torch.set_grad_enabled(self.trains_text):
            hidden = self.encoder(batch["input_ids"])[0]
        noise = torch.randn_like(latents)
        sched = self.noise_scheduler
        steps = torch.randint(0, sched.config.num_train_timesteps, (latents.shape[0],), device=latents.device)
        noisy = sched.add_noise(latents, noise, steps)
        pred = self.denoiser(noisy, steps, encoder_hidden_states=hidden).sample
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


def textual_inversion_options(cfg: DictConfig) -> TextualInversionOptions:
    """``method.options`` of a textual inversion run, its nulls taking the defaults; a null initializer word is the
    task's class word (``task.concept_class``).

    Raises:
        ValueError: a bad option value, or no initializer word at all.
    """
    given = OmegaConf.to_container(cfg.method.get("options") or OmegaConf.create({}), resolve=True)
    options = TextualInversionOptions(**{k: v for k, v in given.items() if v is not None})
    if options.initializer_token is None:
        options.initializer_token = cfg.task.get("concept_class")
        if not options.initializer_token:
            raise ValueError(
                "textual_inversion starts the new word from an initializer word: set method.options.initializer_token "
                "(e.g. dog) or task.concept_class"
            )
    return options


def check_method(cfg: DictConfig, datamodule: Any) -> None:
    """The checks of the paper's SD baselines that need the task's settings, before any model loads; with
    ``dreambooth_full`` the merged UNet is the method's export, so ``save_merged`` is set.

    Raises:
        ValueError: textual inversion whose placeholder the instance prompt does not name, or with
            ``save_merged=true`` (the UNet does not change: the export is the learned embedding).
    """
    if cfg.method.name == "dreambooth_full" and not cfg.save_merged:
        cfg.save_merged = True  # config.yaml says so
        log.info("method=dreambooth_full: the trained UNet is written to merged/unet (save_merged=true)")
    if cfg.method.name != "textual_inversion":
        return
    options = textual_inversion_options(cfg)
    prompt = datamodule.instance_prompt
    if options.placeholder_token not in prompt:
        raise ValueError(
            f"method.options.placeholder_token={options.placeholder_token!r} does not occur in task.data."
            f"instance_prompt {prompt!r}, so textual inversion would learn nothing: name the subject with it there "
            "(and in task.samples.prompts), or set the placeholder to the word the prompts use"
        )
    if cfg.save_merged:
        raise ValueError(f"save_merged=true: {FAMILY.merge_refusal(cfg)}: drop save_merged")


def written_prompt(cfg: DictConfig, prompt: str) -> str:
    """``prompt`` as the text encoder reads it: a multi-vector placeholder of textual inversion written out as all
    its tokens (what diffusers' pipelines do); any other run's prompt unchanged."""
    if cfg.method.name != "textual_inversion":
        return prompt
    options = textual_inversion_options(cfg)
    return expand_placeholder(prompt, options.placeholder_token, options.num_vectors)


class DiffusionFamily(TaskFamily):
    """DreamBooth-style concept learning: trained by steps, no validation, sample grids, a diffusers LoRA."""

    adapted = "unet"
    merged_subdir = "unet"

    def base_model(self, bundle: Any) -> Any:
        """The UNet, or the text encoder once textual inversion has given it new tokens (``bundle.trained``)."""
        return getattr(bundle, getattr(bundle, "trained", self.adapted))

    def data_kwargs(self, bundle: Any) -> dict:
        return {"tokenizer": bundle.tokenizer, "resolution": bundle.resolution}

    def extend_bundle(self, cfg: DictConfig, bundle: Any) -> None:
        """Textual inversion: the placeholder's tokens in the tokenizer and its rows in the text encoder (which then
        is what trains, ``bundle.trained``); the rows start from the initializer word, or the saved adapter's."""
        if cfg.method.name == "textual_inversion":
            bundle.add_placeholder_tokens(textual_inversion_options(cfg))

    def merge_refusal(self, cfg: DictConfig) -> str | None:
        if cfg.method.name != "textual_inversion":
            return None
        return (
            "textual_inversion leaves the UNet as it was, so there is no merged model: its export is "
            "textual_inversion/learned_embeds.safetensors (diffusers' pipeline.load_textual_inversion reads it)"
        )

    def check_data(self, cfg: DictConfig) -> Any:
        datamodule = super().check_data(cfg)
        check_method(cfg, datamodule)
        return datamodule

    def prepare(self, cfg: DictConfig, bundle: Any, datamodule: Any) -> None:
        from loldu.data.dreambooth import generate_class_images
        from loldu.models.diffusion import check_prompt_length

        self.extend_bundle(cfg, bundle)  # the new word's tokens, before any prompt is tokenized
        datamodule.instance_prompt = written_prompt(cfg, datamodule.instance_prompt)
        datamodule.attach(**self.data_kwargs(bundle))  # folders and images were checked; now the prompt lengths
        for prompt in cfg.task.samples.prompts:  # refuses prompts longer than the text encoder takes
            check_prompt_length(bundle.tokenizer, written_prompt(cfg, prompt), "task.samples.prompts entry")
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
        return DiffusionModule(model=model, bundle=bundle, prior_loss_weight=cfg.task.prior_loss_weight, **optim)

    def callbacks(self, cfg: DictConfig, bundle: Any, datamodule: Any, out: Path) -> list:
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
        """``lora/`` (LoLDU/SVFit with ``task.export_lora``: an exact diffusers LoRA), or ``textual_inversion/``
        (the learned embedding, for ``pipeline.load_textual_inversion``); dreambooth_full's UNet is ``merged/unet``."""
        from loldu.methods.files.export import save_as_diffusers_lora
        from loldu.methods.textual_inversion import save_learned_embeds

        if cfg.task.export_lora and cfg.method.name in ("loldu", "svfit"):
            save_as_diffusers_lora(model, out / "lora")
        if cfg.method.name == "textual_inversion":
            save_learned_embeds(model, out / "textual_inversion")

    def monitored(self, cfg: DictConfig, metrics: dict) -> float | None:
        return metrics["train"].get("train/loss")

    def headline(self, cfg: DictConfig, metrics: dict, out: Path) -> str:
        return f"train/loss = {metrics['train'].get('train/loss', float('nan')):.4f}; samples in {out / 'samples'}"


FAMILY = DiffusionFamily()


class SampleGrids(L.Callback):
    """Renders every (prompt, seed) before training, every ``every_n_steps`` optimizer steps and after training.

    Each sampling point's grid (prompts as rows, seeds as columns) goes to ``samples/step_<step>.png`` and to W&B;
    after training, ``samples/progression.png`` shows every point as a column (the paper's Figure 5 layout).

    Args:
        bundle: the :class:`~loldu.models.diffusion.DiffusionBundle` (its ``pipeline`` renders).
        prompts: the prompts (none: no sampling).
        seeds: one image per seed for every prompt.
        every_n_steps: sampling interval (0: before and after training only).
        inference_steps: sampler steps.
        guidance_scale: classifier-free guidance scale.
        sampler: ``ddim`` or ``dpm``.
        out_dir: the run folder (None: grids are not saved).
    """

    def __init__(
        self,
        bundle: Any,
        prompts: list[str],
        seeds: list[int],
        every_n_steps: int = 0,
        inference_steps: int = 25,
        guidance_scale: float = 7.5,
        sampler: str = "ddim",
        out_dir: str | Path | None = None,
    ):
        self.bundle = bundle
        self.prompts = list(prompts or [])
        self.seeds = [int(s) for s in (seeds or [0])]
        self.every_n_steps = int(every_n_steps)
        self.inference_steps = int(inference_steps)
        self.guidance_scale = float(guidance_scale)
        self.sampler = sampler
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.sampled: dict[int, list] = {}  # step -> images (prompt-major, then seed)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.render(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step, every = trainer.global_step, self.every_n_steps
        if every > 0 and step > 0 and step % every == 0:
            self.render(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.render(trainer, pl_module)
        self.save_progression(trainer)

    @torch.no_grad()
    def render(self, trainer: L.Trainer, pl_module: L.LightningModule) -> list:
        """Render and save the grid of the current step once; returns its images."""
        step = int(trainer.global_step)
        if not self.prompts or step in self.sampled or not trainer.is_global_zero:  # ddp: rank 0 renders and writes
            return []
        model = pl_module.model
        was_training = model.training
        model.eval()
        unet = getattr(pl_module, "denoiser", model)  # textual inversion: the frozen UNet, the trained text encoder
        unet = unet.get_base_model() if hasattr(unet, "get_base_model") else unet
        pipe = self.bundle.pipeline(unet=unet, scheduler=self.sampler)
        try:
            images = render(
                pipe,
                self.prompts,
                self.seeds,
                self.inference_steps,
                self.guidance_scale,
                self.bundle.resolution,
                pl_module.device,
                desc=f"sample grid at step {step}",
            )
        finally:
            model.train(was_training)
        self.sampled[step] = images
        grid = image_grid(images, len(self.prompts), len(self.seeds))
        if self.out_dir is not None:
            (self.out_dir / "samples").mkdir(parents=True, exist_ok=True)
            grid.save(self.out_dir / "samples" / f"step_{step:06d}.png")
        for logger in loggers_with(trainer, "log_image"):
            logger.log_image(key="samples", images=[grid], caption=[f"step {step}"], step=step)
        return images

    def save_progression(self, trainer: L.Trainer):
        """One grid with a column per sampling point (step order) and a row per (prompt, seed); returns it."""
        if not self.sampled:
            return None
        steps = sorted(self.sampled)
        rows = len(self.sampled[steps[0]])
        images = [self.sampled[s][r] for r in range(rows) for s in steps]
        grid = image_grid(images, rows, len(steps), labels=[str(s) for s in steps])
        if self.out_dir is not None:
            grid.save(self.out_dir / "samples" / "progression.png")
        for logger in loggers_with(trainer, "log_image"):
            logger.log_image(key="samples/progression", images=[grid], caption=["columns: training steps"])
        return grid
