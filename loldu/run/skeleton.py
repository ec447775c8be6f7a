"""train(cfg): the one run skeleton every task family shares; the family (loldu/tasks/) supplies the rest.

defaults -> check the config and the method's options -> data (read and checked) -> seed -> model bundle (attached
to the data) -> method -> LightningModule -> loggers, callbacks, trainer -> fit (and test) -> adapter and exports
-> metrics.json and summary. The run folder is claimed around it all (:func:`loldu.run.folder.tracked_run`).
"""

from __future__ import annotations

import difflib
import inspect
import logging
import time
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from loldu.config import RANKED_METHODS, check_config, choice, mark_refusal
from loldu.config.peft_types import canonical_peft_type, check_peft_type, is_peft_family, peft_method_name
from loldu.config.refusal import USER_ERRORS
from loldu.methods import apply_method, check_mergeable, check_spec, count_parameters, get_method
from loldu.methods.files import write_run_card
from loldu.run.callbacks import PerfLogger
from loldu.run.distributed import end_processes, full_parameters, prepare_launch
from loldu.run.divergence import DivergenceCheck
from loldu.run.exports import export_run
from loldu.run.folder import RunSkipped, atomic_write_text, is_rank_zero, tracked_run, write_json
from loldu.run.guards import NonFiniteGuard
from loldu.run.logs import quiet
from loldu.run.provenance import run_record
from loldu.run.resume import resume_checkpoint
from loldu.run.tracking import log_summary, start_wandb, wandb_run_args
from loldu.tasks import get_family

log = logging.getLogger(__name__)


@tracked_run  # claims the run folder; status.json: running, then finished or failed with the error
def train(cfg: DictConfig) -> float | None:
    """Train, validate and test one run; write its folder; return the monitored metric (what sweeps optimise)."""
    quiet()
    out = Path(cfg.output_dir)
    try:  # every check before any work: a mistake here is a refusal (train.py shows one line)
        resolve_defaults(cfg)
        skip_unfit_rank(cfg)
        fit_to_machine(cfg)
        ckpt_path = resume_checkpoint(cfg, out)  # before config.yaml is rewritten: checked against the saved one
        check_run(cfg)
        datamodule = get_family(cfg.task.family).check_data(cfg)  # before any model loads; may fill task.num_labels
    except USER_ERRORS as error:
        mark_refusal(error)  # the same error, marked: train.py shows its one line
        raise
    if getattr(datamodule, "sanity", None) and is_rank_zero():  # the data checks' counts and warnings, kept
        write_json(out / "data_sanity.json", datamodule.sanity)
    L.seed_everything(cfg.seed, workers=True)
    try:
        return _run(cfg, out, datamodule, ckpt_path)
    finally:
        end_processes()  # trainer=ddp/fsdp: the next job of a multirun starts its own processes
        if cfg.logger.get("wandb"):
            import wandb

            wandb.finish()


def _run(cfg: DictConfig, out: Path, datamodule: L.LightningDataModule, ckpt_path: str | None = None) -> float | None:
    family = get_family(cfg.task.family)
    bundle = instantiate(cfg.model.builder, _convert_="all")
    family.prepare(cfg, bundle, datamodule)
    model = apply_method(family.base_model(bundle), method_spec(cfg))
    if cfg.save_merged:  # before training: a method PEFT cannot merge is refused now, not after the run
        try:
            check_mergeable(model)
        except ValueError as error:
            raise mark_refusal(error) from None
    counts = count_parameters(model)
    atomic_write_text(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))  # the checks have passed
    module = family.module(cfg, model, bundle, datamodule, out, **optim_settings(cfg))
    trainer = build_trainer(cfg, family.callbacks(cfg, bundle, datamodule, out), **family.trainer_overrides(cfg))
    start_wandb(trainer.loggers)  # W&B logs in now, within ~30 s; a failure is one line (WandbLoginError)
    prepare_launch(cfg, out)  # trainer=ddp/fsdp: the processes Lightning starts run this job, in this folder
    start = time.perf_counter()
    metrics = family.fit(cfg, trainer, module, datamodule, ckpt_path=ckpt_path)
    metrics.update(params=counts, wall_time_s=time.perf_counter() - start)
    perf = next((cb.summary() for cb in trainer.callbacks if isinstance(cb, PerfLogger)), {})
    if perf:
        metrics["perf"] = perf
    health = next((cb.summary() for cb in trainer.callbacks if isinstance(cb, DivergenceCheck)), None)
    if health:  # diverged / at chance: in metrics.json, status.json's warning, the terminal and the loggers
        metrics["health"] = health
    with full_parameters(trainer):  # FSDP: every rank gathers, rank 0 writes
        if is_rank_zero():
            export_run(cfg, family, model, bundle, out)
    metrics.update(lr=cfg.lr, head_lr=cfg.get("head_lr"), method=cfg.method.name, model=choice("model"))
    metrics.update(task=choice("task"), rank=cfg.method.r, seed=cfg.seed)
    if is_rank_zero():  # trainer=ddp/fsdp: the other processes share this folder and write nothing
        write_run_card(out, cfg, metrics)  # adapter/README.md, before adapter_dir_bytes counts it
        metrics.update(run_record(trainer, out))  # adapter size, versions, git commit, device
        write_json(out / "metrics.json", metrics)  # strict JSON: a non-finite value is null
        log_summary(metrics)
        log.info(summary(family.headline(cfg, metrics, out), metrics, out))
    return family.monitored(cfg, metrics)


def skip_unfit_rank(cfg: DictConfig) -> None:
    """With ``skip_unfit_ranks`` (``sweep=rank_ablation``), skip a job whose rank exceeds the model's full rank
    (the paper's ranks up to 768 on a smaller model) instead of failing it.

    Raises:
        RunSkipped: the rank does not fit; the run folder says ``skipped`` and why.
    """
    r, full = cfg.method.get("r"), cfg.model.get("full_rank")
    if not cfg.get("skip_unfit_ranks") or cfg.method.name not in RANKED_METHODS or r is None or full is None:
        return
    if r > full:
        raise RunSkipped(f"rank={r} exceeds model {choice('model')}'s full rank {full} (skip_unfit_ranks=true)")


#: Precisions that need a GPU to mean what the paper's runs meant (autocast on CUDA).
GPU_PRECISIONS = ("bf16-mixed", "16-mixed", "bf16-true", "16-true", "bf16", "16", "half")


def fit_to_machine(cfg: DictConfig, cuda: bool | None = None) -> None:
    """Let a setting written for the paper's GPUs run anywhere: with the automatic accelerator and no GPU, a GPU
    precision (``bf16-mixed`` of the paper's runs, ``16-mixed``) becomes ``32-true``, said in one logged line and
    recorded in config.yaml. An accelerator named in the config (``trainer=cpu``, ``trainer.accelerator=gpu``) keeps
    its precision: CPU autocast stays possible on purpose.

    Args:
        cfg: the run's config; ``cfg.trainer.precision`` is changed in place.
        cuda: whether a GPU is present (None: ask torch).
    """
    trainer = cfg.trainer
    precision = str(trainer.get("precision", "32-true"))
    if trainer.get("accelerator", "auto") != "auto" or precision not in GPU_PRECISIONS:
        return
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    if not cuda:
        with open_dict(cfg):
            cfg.trainer.precision = "32-true"
        log.info("no GPU found: precision %s -> 32-true (trainer.accelerator=auto); the numbers are fp32's", precision)


def check_run(cfg: DictConfig) -> None:
    """Every check of a run's settings before its data or model loads: the config's keys, values and combinations
    (:func:`loldu.config.check_config`, torch-free) and the method's options against its config class
    (:func:`loldu.methods.check_spec`).

    Raises:
        ValueError: the first problem found, with the setting to change.
    """
    check_config(cfg)
    check_spec(method_spec(cfg))
    check_keywords(cfg)


#: The instantiated nodes of a run's config whose keywords :func:`check_keywords` checks.
INSTANTIATED = ("model.builder", "task.data", "optimizer", "trainer", "callbacks", "logger")


def check_keywords(cfg: DictConfig) -> None:
    """Refuse a keyword the class or builder of an instantiated node does not take (``+optimizer.foo=1``,
    ``+trainer.max_step=3``), with the closest one, before anything is built.

    Raises:
        ValueError: naming the node, the keyword and what it takes.
    """
    from hydra.utils import get_object

    nodes = []
    for path in INSTANTIATED:
        node = OmegaConf.select(cfg, path)
        if path in ("callbacks", "logger") and node is not None:
            nodes += [(f"{path}.{k}", v) for k, v in node.items() if OmegaConf.is_dict(v)]
        elif OmegaConf.is_dict(node):
            nodes.append((path, node))
    for path, node in nodes:
        if "_target_" not in node:
            continue
        target = get_object(node._target_)
        try:
            params = inspect.signature(target).parameters
        except (TypeError, ValueError):  # a builtin without a signature: its own error will do
            continue
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            continue
        taken = [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL and n != "self"]
        for key in node:
            if str(key).startswith("_") or key in taken:
                continue
            close = difflib.get_close_matches(str(key), taken, n=1, cutoff=0.6)
            hint = f"did you mean {path}.{close[0]}? " if close else ""
            raise ValueError(
                f"{path}.{key}: {node._target_} takes no keyword {key!r}: {hint}it takes {', '.join(taken)}"
            )


def resolve_defaults(cfg: DictConfig) -> None:
    """Write into ``cfg`` the values its nulls stand for, so that config.yaml, metrics.json and the W&B run record
    what ran. This is the one place a null setting is resolved: the lr from ``method.train.default_lr``, the rank
    from ``method.train.default_rank`` (LoLDU/SVFit: the targets' full rank) else the method's config class
    (:func:`loldu.methods.get_method`), the method's options (``method.config`` of ``method=peft``) from its config
    class. ``method=peft method.peft_type=ia3`` is recorded as method ``peft:ia3`` (type ``IA3``)."""
    if is_peft_family(cfg.method.name):
        check_peft_type(cfg)  # a missing or unknown type: the friendly refusal, before anything reads the name
        with open_dict(cfg):
            cfg.method.name = peft_method_name(cfg.method.peft_type)
            cfg.method.peft_type = canonical_peft_type(cfg.method.peft_type)
    entry = get_method(cfg.method.name)
    defaults = entry.defaults()
    with open_dict(cfg):
        if cfg.lr is None:
            cfg.lr = cfg.method.train.default_lr
        if entry.rank_field is not None and cfg.method.get("r") is None:
            default_rank = cfg.method.train.get("default_rank")
            cfg.method.r = default_rank if default_rank is not None else defaults.get(entry.rank_field)
        fitted = set(getattr(entry.model_options, "fields", ()))  # chosen from the model (VB-LoRA's vector_length)
        for node in ("options", "config"):
            options = cfg.method.get(node) or {}
            for key in list(options):
                value = defaults.get(key)
                if options[key] is None and key not in fitted and isinstance(value, (str, int, float, bool)):
                    cfg.method[node][key] = value


def method_spec(cfg: DictConfig) -> dict:
    """The method's config as :func:`loldu.methods.apply_method` takes it (without its training defaults)."""
    return {k: v for k, v in OmegaConf.to_container(cfg.method, resolve=True).items() if k != "train"}


def optim_settings(cfg: DictConfig) -> dict:
    """Keyword arguments of :class:`~loldu.tasks.common.FineTuneModule`: optimizer, lr and schedule."""
    return {
        "optimizer": instantiate(cfg.optimizer),
        "lr": cfg.lr,  # resolve_defaults has put the method's default_lr in for a null lr
        "head_lr": cfg.get("head_lr"),  # null: the head trains at lr
        "weight_decay": cfg.weight_decay,
        "decay_diagonal": cfg.method.train.decay_diagonal,
        "scheduler": cfg.task_schedule.scheduler,
        "warmup_ratio": cfg.task_schedule.warmup_ratio,
        "warmup_steps": cfg.task_schedule.warmup_steps,
    }


def build_trainer(cfg: DictConfig, extra_callbacks: list, **overrides) -> L.Trainer:
    """The Lightning Trainer of ``cfg.trainer`` with the loggers of ``cfg.logger`` (W&B gets the resolved
    config, name, group and tags of :func:`loldu.run.tracking.wandb_run_args`) and the callbacks of
    ``cfg.callbacks`` plus ``extra_callbacks``."""
    loggers = []
    for name, node in cfg.logger.items():
        if node:  # a partial, so that the run's config reaches wandb.init as data, not as configs to instantiate
            make = instantiate(node, _partial_=True, _convert_="all")
            loggers.append(make(**wandb_run_args(cfg)) if name == "wandb" else make())
    callbacks = [instantiate(c, _convert_="all") for c in cfg.callbacks.values() if c is not None]
    if not loggers:  # logger=none: Lightning refuses an lr monitor with nothing to log to
        callbacks = [cb for cb in callbacks if not isinstance(cb, L.pytorch.callbacks.LearningRateMonitor)]
    checkpointing = any(isinstance(cb, L.pytorch.callbacks.ModelCheckpoint) for cb in callbacks)
    return instantiate(
        cfg.trainer,
        logger=loggers or False,
        callbacks=callbacks + list(extra_callbacks) + [NonFiniteGuard(), DivergenceCheck()],
        default_root_dir=cfg.output_dir,
        enable_checkpointing=checkpointing,
        **overrides,
    )


def summary(headline: str, metrics: dict, out: Path) -> str:
    """The lines logged at the end of a run (console and train.log): the headline, parameter counts, wall time and
    the run folder."""
    p = metrics["params"]
    return (
        f"\n{headline}\n"
        f"adapter parameters = {p['adapter']:,} ({100 * p['adapter_share']:.4f}% of {p['base']:,})\n"
        f"trainable parameters incl. head = {p['trainable']:,} ({100 * p['trainable_share']:.4f}%)\n"
        f"wall time = {metrics['wall_time_s']:.0f} s\n"
        f"outputs: {out.resolve()}"
    )
