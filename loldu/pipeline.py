"""train(cfg): wires model, method, data, LightningModule, loggers; returns the monitored metric."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from loldu.methods import apply_method, count_parameters, save_adapter
from loldu.runs import save_merged
from loldu.tasks import CausalLMModule, ClassificationModule

EXAMPLE_MODEL = {"text": "minilm", "image": "tiny_vit", "causal_lm": "smollm2", "diffusion": "tiny_sd"}


def check_config(cfg: DictConfig) -> None:
    """Refuse bad combinations before anything is loaded, naming the fix.

    Raises:
        ValueError: a model/task family mismatch, a rank larger than the model's
            full rank, or a head-only method without a head.
    """
    model_family, task_family = cfg.model.family, cfg.task.family
    if task_family != model_family:
        raise ValueError(
            f"model {_choice('model')!r} is a {model_family} model and task {_choice('task')!r} needs a "
            f"{task_family} model: pick a {task_family} model (e.g. model="
            f"{EXAMPLE_MODEL.get(task_family, '...')}) or a {model_family} task"
        )
    r = cfg.method.r
    if cfg.method.name in ("loldu", "svfit", "lora", "pissa") and r is not None and r > cfg.model.full_rank:
        raise ValueError(
            f"rank={r} does not fit {_choice('model')}: its target layers allow at most "
            f"{cfg.model.full_rank} (min(out, in)); set rank<={cfg.model.full_rank}"
        )
    if cfg.method.name == "linear_probe" and not cfg.model.head_modules:
        raise ValueError(f"linear_probe needs a head, and model {_choice('model')} names no head_modules")


def _choice(group: str) -> str:
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().runtime.choices[group]
    except Exception:  # not under @hydra.main (e.g. compose in tests)
        return group


def _loggers(cfg: DictConfig, out: Path) -> list:
    loggers = []
    if cfg.logger.get("csv"):
        loggers.append(L.pytorch.loggers.CSVLogger(str(out), name="csv", version=""))
    wb = cfg.logger.get("wandb")
    if wb:
        from lightning.pytorch.loggers import WandbLogger

        mode = wb.mode or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        loggers.append(
            WandbLogger(
                project=wb.project,
                entity=wb.entity,
                group=wb.group,
                name=wb.name,
                tags=list(wb.tags or []),
                save_dir=str(out),
                mode=mode,
                config=OmegaConf.to_container(cfg, resolve=True),
            )
        )
    return loggers


def train(cfg: DictConfig) -> float | None:
    """Train, validate and test one run; write its folder; return the monitored validation metric."""
    check_config(cfg)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(cfg.seed, workers=True)
    try:
        return _train(cfg, out)
    finally:
        if cfg.logger.get("wandb"):
            import wandb

            wandb.finish()


def _train(cfg: DictConfig, out: Path) -> float | None:
    family = cfg.task.family
    if family in ("text", "image"):
        return _train_classification(cfg, out)
    if family == "causal_lm":
        return _train_causal_lm(cfg, out)
    if family == "diffusion":
        return _train_diffusion(cfg, out)
    raise ValueError(f"task family {family!r} is not one of text, image, causal_lm, diffusion")


def _method_spec(cfg: DictConfig) -> dict:
    return {k: v for k, v in OmegaConf.to_container(cfg.method, resolve=True).items() if k != "train"}


def _lr(cfg: DictConfig) -> float:
    return cfg.lr if cfg.lr is not None else cfg.method.train.default_lr


def _optim(cfg: DictConfig) -> dict:
    return {
        "lr": _lr(cfg),
        "weight_decay": cfg.weight_decay,
        "decay_diagonal": cfg.method.train.decay_diagonal,
        "scheduler": cfg.task_schedule.scheduler,
        "warmup_ratio": cfg.task_schedule.warmup_ratio,
        "warmup_steps": cfg.task_schedule.warmup_steps,
    }


def _trainer(cfg: DictConfig, out: Path, **overrides) -> L.Trainer:
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    for cb in callbacks:
        if isinstance(cb, L.pytorch.callbacks.ModelCheckpoint):
            cb.dirpath = str(out / "checkpoints")
    return instantiate(
        cfg.trainer,
        logger=_loggers(cfg, out) or False,
        callbacks=callbacks,
        default_root_dir=str(out),
        enable_checkpointing=any(isinstance(cb, L.pytorch.callbacks.ModelCheckpoint) for cb in callbacks),
        **overrides,
    )


def _has_best(trainer: L.Trainer) -> bool:
    cb = trainer.checkpoint_callback
    return bool(cb is not None and cb.best_model_path)


def _finish(cfg: DictConfig, out: Path, metrics: dict) -> None:
    metrics.update(
        {
            "lr": _lr(cfg),
            "method": cfg.method.name,
            "model": _choice("model"),
            "task": _choice("task"),
            "rank": cfg.method.r,
            "seed": cfg.seed,
        }
    )
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    _summary(cfg, metrics, out)


def _train_classification(cfg: DictConfig, out: Path) -> float | None:
    bundle = instantiate(cfg.model.builder, _convert_="all")
    data_kwargs = (
        {"tokenizer": bundle.tokenizer}
        if bundle.family == "text"
        else {
            "image_size": bundle.image_size,
            "mean": bundle.mean,
            "std": bundle.std,
        }
    )
    datamodule = instantiate(cfg.task.data, _convert_="all", **data_kwargs)
    datamodule.setup("fit")  # reads and checks the data files before any training
    if datamodule.num_labels != cfg.task.num_labels:
        raise ValueError(
            f"task.num_labels={cfg.task.num_labels} but the data has {datamodule.num_labels} labels "
            f"({datamodule.label_names}); set task.num_labels={datamodule.num_labels}"
        )
    model = apply_method(bundle.model, _method_spec(cfg))
    counts = count_parameters(model)
    module = ClassificationModule(
        model=model, num_labels=cfg.task.num_labels, metrics=list(cfg.task.metrics), **_optim(cfg)
    )
    trainer = _trainer(cfg, out)
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    val = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    test = trainer.test(module, datamodule=datamodule, ckpt_path="best" if _has_best(trainer) else None, verbose=False)
    wall = time.perf_counter() - start
    save_adapter(model, out / "adapter")
    if cfg.save_merged:
        save_merged(model, cfg.task.family, out / "merged", bundle.tokenizer)
    metrics = {
        "test": {k: float(v) for k, v in (test[0] if test else {}).items()},
        "val": val,
        "params": counts,
        "wall_time_s": wall,
    }
    _finish(cfg, out, metrics)
    return val.get(cfg.task.monitor)


def _train_causal_lm(cfg: DictConfig, out: Path) -> float | None:
    bundle = instantiate(cfg.model.builder, _convert_="all")
    datamodule = instantiate(cfg.task.data, _convert_="all", tokenizer=bundle.tokenizer)
    datamodule.setup("fit")  # reads, checks and tokenizes the data before any training
    gen = cfg.task.generation
    examples = datamodule.generation_examples(gen.num_prompts) if gen.num_prompts else []
    model = apply_method(bundle.model, _method_spec(cfg))
    counts = count_parameters(model)
    module = CausalLMModule(
        model=model,
        tokenizer=bundle.tokenizer,
        generation_examples=examples,
        max_new_tokens=gen.max_new_tokens,
        add_special_tokens=datamodule.add_special_tokens,
        out_dir=out,
        **_optim(cfg),
    )
    trainer = _trainer(cfg, out)
    start = time.perf_counter()
    before, generations_before = {}, []
    if cfg.task.validate_before:
        before = {k: float(v) for k, v in trainer.validate(module, datamodule=datamodule, verbose=False)[0].items()}
        generations_before = module.last_generations
    trainer.fit(module, datamodule=datamodule)
    val = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    generations_after = module.last_generations
    test = []
    if datamodule.has_test:
        ckpt = "best" if _has_best(trainer) else None
        test = trainer.test(module, datamodule=datamodule, ckpt_path=ckpt, verbose=False)
    wall = time.perf_counter() - start
    save_adapter(model, out / "adapter")
    if cfg.save_merged:
        save_merged(model, cfg.task.family, out / "merged", bundle.tokenizer)
    metrics = {
        "test": {k: float(v) for k, v in (test[0] if test else {}).items()},
        "val": val,
        "val_before": before,
        "generations_before": generations_before,
        "generations_after": generations_after,
        "data": {
            "sizes": datamodule.split_sizes(),
            "dropped_over_cutoff": dict(datamodule.dropped),
            "duplicates_removed": datamodule.duplicates_removed,
        },
        "params": counts,
        "wall_time_s": wall,
    }
    _finish(cfg, out, metrics)
    return val.get(cfg.task.monitor)


def _train_diffusion(cfg: DictConfig, out: Path) -> float | None:
    from loldu.data.dreambooth import generate_class_images
    from loldu.methods.export import save_as_diffusers_lora
    from loldu.models.diffusion import check_prompt_length
    from loldu.tasks.diffusion import DiffusionModule

    bundle = instantiate(cfg.model.builder, _convert_="all")
    datamodule = instantiate(cfg.task.data, _convert_="all", tokenizer=bundle.tokenizer, resolution=bundle.resolution)
    datamodule.check()  # folders, images and prompt lengths, before any model work
    samples = cfg.task.samples
    for prompt in samples.prompts:  # refuses prompts longer than the text encoder takes
        check_prompt_length(bundle.tokenizer, prompt, "task.samples.prompts entry")
    missing = datamodule.class_images_missing() if datamodule.with_prior_preservation else 0
    if missing > 0:
        generate_class_images(
            bundle.pipeline(),
            datamodule.class_dir,
            datamodule.class_prompt,
            missing,
            seed=cfg.seed,
            resolution=bundle.resolution,
        )
    datamodule.setup("fit")
    unet = apply_method(bundle.unet, _method_spec(cfg))
    counts = count_parameters(unet)
    module = DiffusionModule(
        unet=unet,
        bundle=bundle,
        prior_loss_weight=cfg.task.prior_loss_weight,
        sample_prompts=list(samples.prompts),
        sample_seeds=list(samples.seeds),
        sample_every_n_steps=samples.every_n_steps,
        sample_inference_steps=samples.inference_steps,
        guidance_scale=samples.guidance_scale,
        sampler=samples.sampler,
        out_dir=out,
        **_optim(cfg),
    )
    trainer = _trainer(cfg, out, max_steps=cfg.task.max_steps, max_epochs=-1)
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    wall = time.perf_counter() - start
    train = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")}
    save_adapter(unet, out / "adapter")
    if cfg.task.export_lora and cfg.method.name in ("loldu", "svfit"):
        save_as_diffusers_lora(unet, out / "lora")
    if cfg.save_merged:
        save_merged(unet, cfg.task.family, out / "merged")
    metrics = {
        "train": train,
        "steps": int(trainer.global_step),
        "samples": sorted(str(p.relative_to(out)) for p in (out / "samples").glob("*.png")),
        "params": counts,
        "wall_time_s": wall,
    }
    _finish(cfg, out, metrics)
    return train.get("train/loss")


def _summary(cfg: DictConfig, metrics: dict, out: Path) -> None:
    p = metrics["params"]
    if cfg.task.family in ("text", "image"):
        first = f"test/{cfg.task.metrics[0]}"
        headline = f"{first} = {metrics['test'].get(first, float('nan')):.4f}"
    elif cfg.task.family == "causal_lm":
        before = metrics["val_before"].get("val/loss")
        headline = f"val/loss = {metrics['val'].get('val/loss', float('nan')):.4f}" + (
            f" (before training {before:.4f})" if before is not None else ""
        )
    else:
        headline = f"train/loss = {metrics['train'].get('train/loss', float('nan')):.4f}; samples in {out / 'samples'}"
    print(
        f"\n{headline}\n"
        f"adapter parameters = {p['adapter']:,} ({100 * p['adapter_share']:.4f}% of {p['base']:,})\n"
        f"trainable parameters incl. head = {p['trainable']:,} ({100 * p['trainable_share']:.4f}%)\n"
        f"wall time = {metrics['wall_time_s']:.0f} s\n"
        f"outputs: {out.resolve()}"
    )
