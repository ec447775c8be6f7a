"""Lightning callbacks of a run: step time and memory, diffusion sample grids, causal-LM generations.

``PerfLogger`` is configured in ``conf/callbacks/``; the task families add the other two from the task's config
(``task.samples``, ``task.generation``). None of them changes what training computes: generation is greedy in
eval mode and sampling forks the random state.
"""

from __future__ import annotations

import json
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch


def _wandb_loggers(trainer: L.Trainer, method: str) -> list:
    return [lg for lg in trainer.loggers if hasattr(lg, method)]


class PerfLogger(L.Callback):
    """Logs ``perf/step_time_s`` (wall time of each training batch) and ``perf/peak_mem_mib`` (peak CUDA memory,
    or the process's peak resident set size on CPU) at every step, and keeps a run's :meth:`summary` for
    ``metrics.json`` (its median step time leaves out the first ``skip`` steps: allocator and kernel warm-up)."""

    def __init__(self, skip: int = 3):
        self._start = 0.0
        self.skip = skip
        self.step_times: list[float] = []
        self.peak_mem_mib = 0.0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        elapsed = time.perf_counter() - self._start
        self.step_times.append(elapsed)
        pl_module.log("perf/step_time_s", elapsed, on_step=True, on_epoch=False)
        if pl_module.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(pl_module.device) / 2**20
        else:  # Linux reports KiB
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.peak_mem_mib = max(self.peak_mem_mib, peak)
        pl_module.log("perf/peak_mem_mib", peak, on_step=True, on_epoch=False)

    def summary(self) -> dict:
        """``{"step_time_s": median wall time of a training batch (after the first skip), "steps": measured,
        "peak_mem_mib": ...}``; empty before any step."""
        times = self.step_times[self.skip :] or self.step_times
        if not times:
            return {}
        return {"step_time_s": statistics.median(times), "steps": len(times), "peak_mem_mib": self.peak_mem_mib}


class GenerationLogger(L.Callback):
    """Greedy generations for fixed prompts after every validation (not the sanity check).

    Rows ``{step, prompt, generation, reference}`` are appended to ``out_dir/generations.jsonl``, logged to W&B
    as the table ``val/generations``, and kept in :attr:`last_generations`.

    Args:
        tokenizer: the model's tokenizer (pads on the left for generation).
        examples: dicts with ``prompt`` (formatted) and ``reference``.
        max_new_tokens: generation length.
        add_special_tokens: tokenize the prompts as training prompts were.
        out_dir: the run folder (None: no file).
    """

    COLUMNS = ("step", "prompt", "generation", "reference")

    def __init__(
        self,
        tokenizer: Any,
        examples: list[dict],
        max_new_tokens: int = 48,
        add_special_tokens: bool = False,
        out_dir: str | Path | None = None,
    ):
        self.tokenizer = tokenizer
        self.examples = list(examples)
        self.max_new_tokens = int(max_new_tokens)
        self.add_special_tokens = bool(add_special_tokens)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.last_generations: list[dict] = []

    @torch.no_grad()
    def generate(self, model: torch.nn.Module, prompts: list[str]) -> list[str]:
        """Greedy continuations of ``prompts`` by ``model`` (special tokens dropped)."""
        tok = self.tokenizer
        side, tok.padding_side = tok.padding_side, "left"
        try:
            enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=self.add_special_tokens)
        finally:
            tok.padding_side = side
        enc = enc.to(next(model.parameters()).device)
        was_training = model.training
        model.eval()
        try:
            out = model.generate(
                **enc,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
            )
        finally:
            model.train(was_training)
        return tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.examples or trainer.sanity_checking or not trainer.is_global_zero:  # ddp: rank 0 writes
            return
        texts = self.generate(pl_module.model, [ex["prompt"] for ex in self.examples])
        step = int(trainer.global_step)
        rows = [
            {"step": step, "prompt": ex["prompt"], "generation": text, "reference": ex.get("reference", "")}
            for ex, text in zip(self.examples, texts, strict=True)
        ]
        self.last_generations = rows
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            with open(self.out_dir / "generations.jsonl", "a", encoding="utf-8") as fh:
                fh.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        for logger in _wandb_loggers(trainer, "log_table"):
            data = [[r[c] for c in self.COLUMNS] for r in rows]
            logger.log_table(key="val/generations", columns=list(self.COLUMNS), data=data)


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
        from loldu.tasks.diffusion import image_grid, render

        step = int(trainer.global_step)
        if not self.prompts or step in self.sampled or not trainer.is_global_zero:  # ddp: rank 0 renders and writes
            return []
        model = pl_module.model
        was_training = model.training
        model.eval()
        unet = model.get_base_model() if hasattr(model, "get_base_model") else model
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
        for logger in _wandb_loggers(trainer, "log_image"):
            logger.log_image(key="samples", images=[grid], caption=[f"step {step}"], step=step)
        return images

    def save_progression(self, trainer: L.Trainer):
        """One grid with a column per sampling point (step order) and a row per (prompt, seed); returns it."""
        from loldu.tasks.diffusion import image_grid

        if not self.sampled:
            return None
        steps = sorted(self.sampled)
        rows = len(self.sampled[steps[0]])
        images = [self.sampled[s][r] for r in range(rows) for s in steps]
        grid = image_grid(images, rows, len(steps), labels=[str(s) for s in steps])
        if self.out_dir is not None:
            grid.save(self.out_dir / "samples" / "progression.png")
        for logger in _wandb_loggers(trainer, "log_image"):
            logger.log_image(key="samples/progression", images=[grid], caption=["columns: training steps"])
        return grid
