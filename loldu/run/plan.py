"""``python train.py ... plan=true``: what a run would train, from its model built on the meta device.

The config is composed, defaulted and checked as for the run; the model is built with no weights (a paper model
from its shipped architecture, :mod:`loldu.models.architectures`; nothing is downloaded) and the method applied to
it, so the parameter counts are exactly those the run records. Printed: adapter, head and trainable parameters;
optimizer steps (when the data is local and can be counted); peak memory per GPU in the config's precision, split
into exact terms (weights, frozen factors, trained parameters, gradients, AdamW state) and an estimated one
(activations); the LU/SVD setup work; which sources are local and which need the network. No run folder is left.
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from loldu.methods import apply_method, count_parameters
from loldu.methods.diagonal import DiagonalLayer
from loldu.run.skeleton import check_run, method_spec, resolve_defaults
from loldu.tasks import get_family

log = logging.getLogger(__name__)

GIB = 1024**3
#: Bytes per element of activations under each precision (mixed precision keeps them in 16 bits).
ACTIVATION_BYTES = {"32-true": 4, "32": 4, "bf16-mixed": 2, "16-mixed": 2, "bf16-true": 2, "16-true": 2}
#: Files Hydra writes into a run folder before the task function runs: what a plan may remove again.
HYDRA_FILES = {".hydra", "train.log"}


def build_on_meta(cfg: DictConfig) -> Any:
    """The model bundle of ``cfg.model.builder`` with every parameter on the meta device: a model whose config
    has ``pretrained`` is built from its shipped architecture on the meta device (no weights, no download); the
    others (offline packages, tiny models) from their local files, then moved there."""
    builder = cfg.model.builder
    if "pretrained" not in builder:
        bundle = instantiate(builder, _convert_="all")
    else:
        with open_dict(builder):
            builder.pretrained = False
        with torch.device("meta"):
            bundle = instantiate(builder, _convert_="all")
    for part in vars(bundle).values():
        if isinstance(part, torch.nn.Module):
            part.to("meta")
    return bundle


def hub_data(cfg: DictConfig) -> str | None:
    """The hub dataset the task reads (None for local data: a package, a file or folder, a built-in source)."""
    data = cfg.task.data
    source = str(data.get("source") or "")
    args = data.get("source_args") or {}
    path = args.get("path") or args.get("dataset")
    if not source.startswith(("hub", "alpaca_hub", "glue")) or (path and Path(str(path)).expanduser().exists()):
        return None
    return str(path or source)


def train_rows(cfg: DictConfig) -> int | None:
    """Training examples of a local data source, read and checked as the run would."""
    datamodule = get_family(cfg.task.family).check_data(cfg)
    indices = getattr(datamodule, "split_indices", None)
    return len(indices["train"][1]) if indices and "train" in indices else None


def optimizer_steps(cfg: DictConfig, rows: int | None) -> int | None:
    """Optimizer steps of the run: ``task.max_steps`` where the task trains by steps, else epochs x batches per
    epoch / gradient accumulation (None when the number of training rows is unknown)."""
    if cfg.task.get("max_steps"):
        return int(cfg.task.max_steps)
    if rows is None:
        return None
    trainer = cfg.trainer
    limit = trainer.get("limit_train_batches")
    batches = math.ceil(rows / (cfg.batch_size * int(trainer.get("devices") or 1)))
    if isinstance(limit, int) and limit > 0:
        batches = min(batches, limit)
    return cfg.epochs * math.ceil(batches / int(trainer.get("accumulate_grad_batches") or 1))


def sequence_length(cfg: DictConfig, config: Any) -> int | None:
    """Tokens per example the activations scale with: the task's max length or cutoff, or ViT's patches + 1."""
    if cfg.task.get("max_length"):
        return int(cfg.task.max_length)
    if cfg.task.data.get("cutoff_len"):
        return int(cfg.task.data.cutoff_len)
    if getattr(config, "image_size", None) and getattr(config, "patch_size", None):
        return (config.image_size // config.patch_size) ** 2 + 1
    return None


def memory_terms(model: Any, cfg: DictConfig, precision: str) -> dict[str, float]:
    """Peak memory per GPU in GiB by term. Weights, buffers (frozen factors), trained parameters, their gradients
    and AdamW's two moments are exact sizes; ``activations`` is an estimate (``34 + 5 a s / h`` bytes x s b h per
    layer in 16 bits, Korthikanti et al. 2022, scaled for fp32), absent where the model is not a transformer."""
    frozen = sum(p.numel() * p.element_size() for p in model.parameters() if not p.requires_grad)
    trained = sum(p.numel() * 4 for p in model.parameters() if p.requires_grad)  # fp32 bytes
    terms = {
        "weights (frozen)": frozen / GIB,
        "frozen factors and buffers": sum(b.numel() * b.element_size() for b in model.buffers()) / GIB,
        "trained parameters (fp32)": trained / GIB,
        "gradients (fp32)": trained / GIB,
        "AdamW state (2 x fp32)": 2 * trained / GIB,
    }
    config = getattr(model, "config", None)  # a PeftModel passes it on from its base model
    seq = sequence_length(cfg, config)
    layers, hidden = getattr(config, "num_hidden_layers", None), getattr(config, "hidden_size", None)
    heads = getattr(config, "num_attention_heads", None)
    if seq and layers and hidden and heads:
        per_layer = seq * cfg.batch_size * hidden * (34 + 5 * heads * seq / hidden)
        terms["activations (estimate)"] = layers * per_layer * ACTIVATION_BYTES.get(precision, 4) / 2 / GIB
    return terms


def setup_work(model: Any) -> tuple[int, int]:
    """(LoLDU/SVFit layers factorised, multiply-adds of their rank-r factorisations: r x out x in each)."""
    layers = [m for m in model.modules() if isinstance(m, DiagonalLayer)]
    work = 0
    for layer in layers:
        out_f, in_f = layer.out_features, layer.in_features  # the factorised matrix (a conv kernel reshaped)
        work += sum(r * out_f * in_f for r in layer.r.values())
    return len(layers), work


def sources(cfg: DictConfig) -> dict[str, str]:
    """Where the model and the data come from: local (package, folder, built-in) or the network (hub)."""
    builder = cfg.model.builder
    name = builder.get("name_or_path")
    if builder.get("package") or "tiny" in str(builder.get("_target_", "")):
        model = f"local ({builder.get('package') or 'built from a config'})"
    elif name and Path(str(name)).expanduser().exists():
        model = f"local folder {name}"
    else:
        model = f"network: hub {name} (pretrained=false: shipped architecture, random weights)"
    hub = hub_data(cfg)
    data = f"network: hub {hub}" if hub else f"local ({cfg.task.data.get('source') or cfg.task.data.get('_target_')})"
    return {"model": model, "data": data}


def plan(cfg: DictConfig) -> dict[str, Any]:
    """Print the run's plan and return it; writes nothing and removes the folder Hydra made for the job.

    Raises:
        ValueError: what the run itself would refuse (the same checks).
    """
    try:
        resolve_defaults(cfg)
        check_run(cfg)
        result = _plan(cfg)
    finally:
        _remove_job_folder(Path(cfg.output_dir), cfg)
    log.info(render(cfg, result))
    return result


def _plan(cfg: DictConfig) -> dict[str, Any]:
    precision = str(cfg.trainer.get("precision", "32-true"))
    family = get_family(cfg.task.family)
    src = sources(cfg)
    rows = None if hub_data(cfg) else train_rows(cfg)
    bundle = build_on_meta(cfg)
    if cfg.method.name == "textual_inversion":  # its new rows, as the family adds them before training
        from loldu.tasks.diffusion import textual_inversion_options

        bundle.add_placeholder_tokens(textual_inversion_options(cfg))
    adapted = family.base_model(bundle)
    others = [m for m in vars(bundle).values() if isinstance(m, torch.nn.Module) and m is not adapted]
    model = apply_method(adapted, method_spec(cfg))
    layers, work = setup_work(model)
    memory = memory_terms(model, cfg, precision)
    if others:  # e.g. a diffusion run's VAE and text encoder, frozen beside the adapted UNet
        memory["other frozen parts"] = sum(p.numel() * p.element_size() for m in others for p in m.parameters()) / GIB
    return {
        "params": count_parameters(model),
        "train_rows": rows,
        "optimizer_steps": optimizer_steps(cfg, rows),
        "precision": precision,
        "memory_gib": memory,
        "setup": {"layers": layers, "multiply_adds": work},
        "sources": src,
    }


def render(cfg: DictConfig, result: dict[str, Any]) -> str:
    """The plan as the lines printed."""
    p = result["params"]
    steps = result["optimizer_steps"]
    accumulate = int(cfg.trainer.get("accumulate_grad_batches") or 1)
    lines = [
        f"plan: {cfg.method.name} rank={cfg.method.get('r')} lr={cfg.lr} on {result['sources']['model']}",
        f"  adapter parameters   {p['adapter']:,} ({100 * p['adapter_share']:.4f}% of {p['base']:,})",
        f"  head parameters      {p['head']:,}",
        f"  trainable parameters {p['trainable']:,}",
        f"  optimizer steps      {steps:,}"
        if steps is not None
        else "  optimizer steps      unknown until the hub data is read",
        f"  batch                {cfg.batch_size} x {accumulate} accumulated, precision {result['precision']}",
        "  peak memory per GPU (GiB; exact sizes except the estimate):",
    ]
    memory = result["memory_gib"]
    lines += [f"    {name:<28} {value:9.3f}" for name, value in memory.items()]
    lines.append(f"    {'total':<28} {sum(memory.values()):9.3f}")
    if "activations (estimate)" not in memory:
        lines.append("    activations: not estimated for this model")
    setup = result["setup"]
    lines.append(f"  setup: {setup['layers']} layers factorised, {setup['multiply_adds']:.3g} multiply-adds")
    lines.append(f"  sources: model {result['sources']['model']}; data {result['sources']['data']}")
    return "\n".join(lines)


def _remove_job_folder(out: Path, cfg: DictConfig) -> None:
    """Remove the run folder Hydra created for this job, when it holds nothing but Hydra's own files."""
    if cfg.get("resume") or not out.is_dir():
        return
    if all(entry.name in HYDRA_FILES for entry in out.iterdir()):
        shutil.rmtree(out, ignore_errors=True)
        if len(out.parents) > 2 and out.parents[1].name == "outputs":  # the default outputs/<date>/<run>
            for parent in out.parents[:2]:  # outputs/<date>/ and outputs/, when the plan left them empty
                try:
                    parent.rmdir()
                except OSError:  # not empty
                    break
