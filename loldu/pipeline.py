"""train(cfg): wires model, method, data, LightningModule, loggers; returns the monitored metric."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from loldu.methods import apply_method, count_parameters, merge_method, save_adapter
from loldu.tasks import ClassificationModule


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
            f"{'minilm' if task_family == 'text' else 'tiny_vit'}) or a {model_family} task"
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
    spec = {k: v for k, v in OmegaConf.to_container(cfg.method, resolve=True).items() if k != "train"}
    model = apply_method(bundle.model, spec)
    counts = count_parameters(model)
    lr = cfg.lr if cfg.lr is not None else cfg.method.train.default_lr
    module = ClassificationModule(
        model=model,
        num_labels=cfg.task.num_labels,
        metrics=list(cfg.task.metrics),
        lr=lr,
        weight_decay=cfg.weight_decay,
        decay_diagonal=cfg.method.train.decay_diagonal,
        scheduler=cfg.task_schedule.scheduler,
        warmup_ratio=cfg.task_schedule.warmup_ratio,
        warmup_steps=cfg.task_schedule.warmup_steps,
    )
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    for cb in callbacks:
        if isinstance(cb, L.pytorch.callbacks.ModelCheckpoint):
            cb.dirpath = str(out / "checkpoints")
    trainer = instantiate(
        cfg.trainer,
        logger=_loggers(cfg, out) or False,
        callbacks=callbacks,
        default_root_dir=str(out),
        enable_checkpointing=any(isinstance(cb, L.pytorch.callbacks.ModelCheckpoint) for cb in callbacks),
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    val = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    has_best = trainer.checkpoint_callback is not None and trainer.checkpoint_callback.best_model_path
    test = trainer.test(module, datamodule=datamodule, ckpt_path="best" if has_best else None, verbose=False)
    wall = time.perf_counter() - start
    save_adapter(model, out / "adapter")
    if cfg.save_merged:
        merged = merge_method(model)
        if hasattr(merged, "save_pretrained"):
            merged.save_pretrained(out / "merged")
            if bundle.tokenizer is not None:
                bundle.tokenizer.save_pretrained(out / "merged")
    metrics = {
        "test": {k: float(v) for k, v in (test[0] if test else {}).items()},
        "val": val,
        "params": counts,
        "wall_time_s": wall,
        "lr": lr,
        "method": cfg.method.name,
        "model": _choice("model"),
        "task": _choice("task"),
        "rank": cfg.method.r,
        "seed": cfg.seed,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    _summary(cfg, metrics, out)
    return val.get(cfg.task.monitor)


def _summary(cfg: DictConfig, metrics: dict, out: Path) -> None:
    first = f"test/{cfg.task.metrics[0]}"
    p = metrics["params"]
    print(
        f"\n{first} = {metrics['test'].get(first, float('nan')):.4f}\n"
        f"adapter parameters = {p['adapter']:,} ({100 * p['adapter_share']:.4f}% of {p['base']:,})\n"
        f"trainable parameters incl. head = {p['trainable']:,} ({100 * p['trainable_share']:.4f}%)\n"
        f"wall time = {metrics['wall_time_s']:.0f} s\n"
        f"outputs: {out.resolve()}"
    )
