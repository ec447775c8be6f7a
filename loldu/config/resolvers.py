"""The OmegaConf resolvers ``conf/`` uses, registered by :func:`register` (idempotent).

Hydra imports the ``hydra_plugins.loldu_resolvers`` module of this project whenever it starts (its plugin scan),
which calls :func:`register`: ``python train.py``, ``hydra.compose`` in a notebook and the launchers' jobs compose
the config without importing anything of this package first. Torch-free.
"""

from __future__ import annotations

import os

from omegaconf import OmegaConf

from loldu.config.names import canonical
from loldu.config.run_dir import hydra_record_dir, resume_run_dir, run_stamp


def wandb_mode(mode: str | None) -> str:
    """The environment's ``WANDB_MODE`` when set (it wins), else ``mode``, else ``online`` when
    ``WANDB_API_KEY`` is set and ``offline`` when not (never a login prompt)."""
    return os.environ.get("WANDB_MODE") or mode or ("online" if os.environ.get("WANDB_API_KEY") else "offline")


#: name -> (function, cached): ``run_stamp`` is cached so that a config's run and sweep folders share one stamp.
RESOLVERS = {
    "canonical": (canonical, False),  # conf/train.yaml: model_task files found by long names
    "wandb_mode": (wandb_mode, False),  # conf/logger/wandb.yaml
    "run_stamp": (run_stamp, True),  # conf/hydra/default.yaml: run and sweep folders
    "resume_run_dir": (resume_run_dir, False),  # conf/hydra/default.yaml: resume=<run dir> or auto
    "hydra_record_dir": (hydra_record_dir, False),  # conf/hydra/default.yaml: no new .hydra/ in a resumed run
}


def register() -> None:
    """Register every resolver of :data:`RESOLVERS` that is not registered yet."""
    for name, (fn, cached) in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn, use_cache=cached)
