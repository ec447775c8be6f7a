"""Resuming a killed run: ``python train.py resume=<run dir>`` (the run's own settings; train.py adds its saved
overrides) or ``python train.py <same model, task, method> resume=auto``.

A resumed run continues in the same run folder from ``checkpoints/last.ckpt`` (written by
:class:`loldu.run.checkpointing.ResumableCheckpoint`), and is refused when its config differs from the saved one in
anything that changes the result. The folder itself is picked, and locked, before Hydra writes into it
(:func:`loldu.config.run_dir.run_arguments`, :func:`loldu.config.run_dir.resume_run_dir`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from loldu.config.run_dir import CHECKPOINT, is_finished
from loldu.config.saved import read_run_config
from loldu.run.finished import check_targets

log = logging.getLogger(__name__)

# Settings that do not change what a run computes: they may differ between a run and its resumption.
NOT_RESULTS = (
    "resume",
    "output_dir",
    "sweep_name",
    "save_merged",
    "plan",
    "logger",
    "method.train.default_rank",  # method.r holds the rank it chose
    "callbacks.lr_monitor",
    "callbacks.perf",
    "callbacks.progress_bar",
    "callbacks.resumable",
    "trainer.enable_progress_bar",
    "trainer.log_every_n_steps",
)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def config_differences(saved: dict, current: dict) -> list[str]:
    """The dotted keys (``lr``, ``method.r``...) whose values differ between two configs, outside
    :data:`NOT_RESULTS`, each as ``key (saved -> now)``."""
    old, new = _flatten(saved), _flatten(current)
    keys = sorted(set(old) | set(new))
    keep = [k for k in keys if not any(k == p or k.startswith(f"{p}.") for p in NOT_RESULTS)]
    return [f"{k} ({old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r})" for k in keep if old.get(k) != new.get(k)]


def resume_checkpoint(cfg: DictConfig, out: Path) -> str | None:
    """The checkpoint ``trainer.fit`` continues from (None for a new run), after checking ``resume``.

    Call before the run writes its config.yaml: the saved one is what the current config is compared with.

    Raises:
        ValueError: ``ckpt_path`` given; ``resume`` is not this run's folder, is finished, or was run with a
            config that differs in something that changes the result (the keys are named).
        FileNotFoundError: the folder is not a run folder or has no resumable checkpoint.
    """
    if "ckpt_path" in cfg:
        raise ValueError("ckpt_path is not a setting: continue a killed run with resume=<run dir> (or resume=auto)")
    resume = cfg.get("resume")
    if resume is None:
        return None
    ckpt = out / CHECKPOINT
    if resume == "auto" and not ckpt.is_file():
        log.info("resume=auto: no unfinished run of this model, task and method to resume; starting a new run")
        return None
    run_dir = out if resume == "auto" else Path(str(resume))
    if run_dir.resolve() != out.resolve():
        raise ValueError(f"resume={resume} continues in that folder, but output_dir is {out}: drop output_dir")
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"resume={resume}: {run_dir} is not a run folder (no config.yaml)")
    if is_finished(run_dir):
        raise ValueError(f"resume={resume}: that run finished; nothing to resume (start a new run)")
    if not ckpt.is_file():
        raise FileNotFoundError(
            f"resume={resume}: {run_dir} has no resumable checkpoint ({CHECKPOINT}): the run was killed before its "
            "first one, or ran with callbacks that save none; start a new run"
        )
    saved = read_run_config(run_dir)  # as data: no interpolation, allowed targets only
    current = OmegaConf.to_container(cfg, resolve=True)
    check_targets(current, "the resumed run's config")  # its overrides came from the folder too (train.py)
    differ = config_differences(saved, current)
    if differ:
        raise ValueError(
            f"resume={resume}: this run's config differs from the saved one in {', '.join(differ)}; "
            "resume with the run's own settings, or start a new run"
        )
    from loldu.run.checkpointing import verify_checkpoint  # torch: only when resuming

    resumed = verify_checkpoint(run_dir)  # its sha256; a bad one is named, with the previous one if that verifies
    keep_csv_history(run_dir)
    log.info("resuming %s from %s", run_dir, resumed)
    return resumed


def keep_csv_history(run_dir: Path) -> Path | None:
    """Move the interrupted run's ``csv/metrics.csv`` to ``csv/metrics.before_resume_<n>.csv`` (Lightning's CSV
    logger would delete it when the resumed run starts); returns the new path, None when there was no file."""
    csv = run_dir / "csv" / "metrics.csv"
    if not csv.is_file():
        return None
    n = 1
    while (kept := csv.with_name(f"metrics.before_resume_{n}.csv")).exists():
        n += 1
    csv.rename(kept)
    log.info("the metrics logged before the interruption are kept in %s", kept)
    return kept
