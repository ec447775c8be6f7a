"""Config-level helpers that need no torch: OmegaConf resolvers, short names, and the checks run before a run.

Importing this module registers the resolvers ``conf/`` uses (idempotent). Composing a config imports only this
module (and Hydra/OmegaConf), so ``python train.py ... --cfg job`` answers in about a second.
"""

from __future__ import annotations

import os
from datetime import datetime

from omegaconf import DictConfig, OmegaConf

# Short names of the paper's models and tasks: conf/<group>/<short>.yaml includes the long one, and
# ${canonical:...} maps a choice to its long name so that conf/model_task/<model>_<task>.yaml is found for both.
ALIASES = {
    "vit": "vit_base",
    "roberta": "roberta_base",
    "llama2": "llama2_7b",
    "sd": "sd15",
    "fgvc": "fgvc_aircraft",
}
# A model to suggest for each task family when a model of another family was picked.
EXAMPLE_MODEL = {"text": "minilm", "image": "tiny_vit", "causal_lm": "smollm2", "diffusion": "tiny_sd"}
# Methods whose rank is bounded by min(out, in) of the target layers.
RANKED_METHODS = ("loldu", "svfit", "lora", "pissa")
# Methods whose rank counts trained coefficients of fixed out x in matrices (VeRA's shared random rank-one
# products, FourierFT's spectral entries): more than out * in of a layer cannot be independent (full_rank^2 for
# square targets); VeRA's paper uses ranks above min(out, in), e.g. 1024 on RoBERTa-base.
SPANNING_METHODS = ("vera", "fourierft")


def _pick(*values):
    """The first value that is not null: ``${pick:${rank},${model.full_rank}}``."""
    return next((v for v in values if v is not None), None)


def canonical(name: str) -> str:
    """The long name of a model or task choice (``vit`` -> ``vit_base``); other names unchanged."""
    return ALIASES.get(name, name)


def _wandb_mode(mode: str | None) -> str:
    """The environment's ``WANDB_MODE`` when set (it wins), else ``mode``, else ``online`` when
    ``WANDB_API_KEY`` is set and ``offline`` when not (never a login prompt)."""
    return os.environ.get("WANDB_MODE") or mode or ("online" if os.environ.get("WANDB_API_KEY") else "offline")


def run_stamp() -> str:
    """``<date>/<time>-<microseconds>-<pid>`` (``2026-11-25/03-25-01-123456-4242``): the start of a run folder's
    path (conf/hydra/default.yaml) that no other run shares, even one started in the same second."""
    return f"{datetime.now():%Y-%m-%d/%H-%M-%S-%f}-{os.getpid()}"


for _name, _fn in (("pick", _pick), ("canonical", canonical), ("wandb_mode", _wandb_mode)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)
if not OmegaConf.has_resolver("run_stamp"):  # cached: a config's run and sweep folders resolve to one stamp
    OmegaConf.register_new_resolver("run_stamp", run_stamp, use_cache=True)

import loldu.resume  # noqa: E402,F401  (registers ${resume_run_dir:...}, conf/hydra/default.yaml's run folder)


def unescape(value: str) -> str:
    """A swept value as written (the sweeper's strings escape interpolations: ``$\\{x\\}``)."""
    return value.replace("$\\{", "${").replace("\\}", "}")


def choice(group: str) -> str:
    """The long name of the option picked for ``group`` in the running Hydra job (``group`` outside one)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return canonical(HydraConfig.get().runtime.choices[group])
    except Exception:  # not under @hydra.main or compose(return_hydra_config=True)
        return group


def check_config(cfg: DictConfig) -> None:
    """Refuse bad input before anything is loaded, naming the fix: unknown keys, values of the wrong kind, method
    settings the method does not read, a model/task family mismatch, ranks that cannot fit, bad method options.

    Raises:
        ValueError: the first problem found, with the setting to change.
    """
    from loldu import config_checks as checks

    hydra_cfg = checks.hydra_config()
    checks.check_top_level_keys(cfg, hydra_cfg)
    checks.check_added_keys(cfg, hydra_cfg)
    checks.check_values(cfg)
    checks.check_method_settings(cfg, hydra_cfg)
    model_family, task_family = cfg.model.family, cfg.task.family
    if task_family != model_family:
        raise ValueError(
            f"model {choice('model')!r} is a {model_family} model and task {choice('task')!r} needs a "
            f"{task_family} model: pick a {task_family} model (e.g. model="
            f"{EXAMPLE_MODEL.get(task_family, '...')}) or a {model_family} task"
        )
    check_rank_fits(cfg)
    if cfg.method.name == "linear_probe" and not cfg.model.head_modules:
        raise ValueError(f"linear_probe needs a head, and model {choice('model')} names no head_modules")
    if cfg.get("head_lr") is not None and not cfg.model.head_modules:
        raise ValueError(
            f"head_lr={cfg.head_lr} sets the lr of a new head, and model {choice('model')} has none "
            "(model.head_modules is empty): leave head_lr unset"
        )
    checks.check_method_options(cfg)


def check_rank_fits(cfg: DictConfig) -> None:
    """Refuse a rank the model's target layers cannot hold (``model.full_rank`` is their min(out, in)).

    Raises:
        ValueError: naming the largest rank that fits.
    """
    r, full, name = cfg.method.r, cfg.model.full_rank, cfg.method.name
    if r is None or full is None:
        return
    if name in RANKED_METHODS and r > full:
        raise ValueError(
            f"rank={r} does not fit {choice('model')}: its target layers allow at most "
            f"{full} (min(out, in)); set rank<={full}"
        )
    if name in SPANNING_METHODS and r > full * full:
        raise ValueError(
            f"rank={r} does not fit {choice('model')}: {name} trains {r} coefficients of fixed out x in "
            f"matrices, more than the {full * full} entries of a {full}x{full} target layer (min(out, in) = {full}); "
            f"set rank<={full * full}"
        )
