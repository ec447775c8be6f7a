"""Config-level helpers that need no torch: OmegaConf resolvers, short names, and the checks run before a run.

Importing this module registers the resolvers ``conf/`` uses (idempotent). Composing a config imports only this
module (and Hydra/OmegaConf), so ``python train.py ... --cfg job`` answers in about a second.
"""

from __future__ import annotations

import os

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


def _pick(*values):
    """The first value that is not null: ``${pick:${rank},${model.full_rank}}``."""
    return next((v for v in values if v is not None), None)


def canonical(name: str) -> str:
    """The long name of a model or task choice (``vit`` -> ``vit_base``); other names unchanged."""
    return ALIASES.get(name, name)


def _wandb_mode(mode: str | None) -> str:
    """``mode``, or ``online`` when ``WANDB_API_KEY`` is set and ``offline`` when not (never a login prompt)."""
    return mode or ("online" if os.environ.get("WANDB_API_KEY") else "offline")


for _name, _fn in (("pick", _pick), ("canonical", canonical), ("wandb_mode", _wandb_mode)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn)

import loldu.resume  # noqa: E402,F401  (registers ${resume_run_dir:...}, conf/hydra/default.yaml's run folder)


def choice(group: str) -> str:
    """The long name of the option picked for ``group`` in the running Hydra job (``group`` outside one)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return canonical(HydraConfig.get().runtime.choices[group])
    except Exception:  # not under @hydra.main or compose(return_hydra_config=True)
        return group


def check_config(cfg: DictConfig) -> None:
    """Refuse bad combinations before anything is loaded, naming the fix.

    Raises:
        ValueError: a model/task family mismatch, a rank larger than the model's
            full rank, or a head-only method without a head.
    """
    model_family, task_family = cfg.model.family, cfg.task.family
    if task_family != model_family:
        raise ValueError(
            f"model {choice('model')!r} is a {model_family} model and task {choice('task')!r} needs a "
            f"{task_family} model: pick a {task_family} model (e.g. model="
            f"{EXAMPLE_MODEL.get(task_family, '...')}) or a {model_family} task"
        )
    r = cfg.method.r
    if cfg.method.name in RANKED_METHODS and r is not None and r > cfg.model.full_rank:
        raise ValueError(
            f"rank={r} does not fit {choice('model')}: its target layers allow at most "
            f"{cfg.model.full_rank} (min(out, in)); set rank<={cfg.model.full_rank}"
        )
    if cfg.method.name == "linear_probe" and not cfg.model.head_modules:
        raise ValueError(f"linear_probe needs a head, and model {choice('model')} names no head_modules")
