"""The checks of a composed config run before anything loads: :func:`check_config` and the key, value and rank
checks it calls.

Torch-free at import. The allowed keys come from the config's own structure: the top-level keys of
``conf/train.yaml`` and the names of the groups in its defaults list, so a key added there (with its comment) is
accepted with no change here. Keys a command line adds with ``+`` inside a group are refused where nothing reads
them (a node without ``_target_``). The method's options are checked against its config class when the run
starts (:func:`loldu.methods.check_spec`), as that needs the method library.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from loldu.config.names import EXAMPLE_MODEL, RANKED_METHODS, SPANNING_METHODS, choice
from loldu.config.peft_types import check_peft_type
from loldu.config.schema import check_method_options, check_override_types

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
# Not settings: what a user may type instead, and where to go.
REDIRECTS = {"ckpt_path": "resume a run with resume=<run dir> (its last checkpoint is picked up)"}
_REFERENCE = re.compile(r"\$\{\s*(\w+)\s*\}")  # ${rank}, ${alpha}, ${init}: top-level keys a method reads
# Methods that train a Stable Diffusion concept only (the LoLDU paper's SD baselines): diffusion tasks only.
DIFFUSION_METHODS = ("textual_inversion", "dreambooth_full")


def hydra_config() -> DictConfig | None:
    """The running Hydra job's config (``hydra:`` node), or None outside a job."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get()
    except Exception:  # not under @hydra.main or compose(return_hydra_config=True)
        return None


def conf_dir(hydra_cfg: DictConfig | None = None) -> Path:
    """The primary config folder of the job (``conf/`` of this checkout outside one)."""
    for source in (hydra_cfg.runtime.config_sources if hydra_cfg else []) or []:
        if source.provider == "main" and source.schema == "file":
            return Path(source.path)
    return CONF_DIR


def _primary_name(hydra_cfg: DictConfig | None) -> str:
    return (hydra_cfg.job.config_name if hydra_cfg else None) or "train"


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else ""


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


# ----------------------------------------------------------------------------------------------- values


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_bool(value) -> bool:
    return isinstance(value, bool)


# Setting (dotted path) -> (kind, bound, what it must be); a null rank, alpha or lr means the method's default.
VALUE_RULES = {
    "epochs": (_is_int, lambda v: v >= 1, "an integer >= 1, e.g. epochs=3"),
    "batch_size": (_is_int, lambda v: v >= 1, "an integer >= 1, e.g. batch_size=32"),
    "lr": (_is_number, lambda v: v > 0, "a positive number, e.g. lr=3e-3"),
    "head_lr": (_is_number, lambda v: v > 0, "a positive number, e.g. head_lr=1e-2, or null (the head trains at lr)"),
    "seed": (_is_int, lambda v: True, "an integer, e.g. seed=0"),
    "weight_decay": (_is_number, lambda v: v >= 0, "a number >= 0, e.g. weight_decay=0.01"),
    "rank": (_is_int, lambda v: v >= 1, "an integer >= 1, e.g. rank=8, or null (the method's default)"),
    "alpha": (_is_number, lambda v: v > 0, "a positive number, e.g. alpha=16, or null (the method's default)"),
    "task_schedule.warmup_ratio": (_is_number, lambda v: 0 <= v <= 1, "a number in [0, 1], e.g. 0.06"),
    "task_schedule.warmup_steps": (_is_int, lambda v: v >= 0, "an integer >= 0, e.g. 100"),
    "save_merged": (_is_bool, lambda v: True, "true or false, e.g. save_merged=true"),
    "skip_unfit_ranks": (_is_bool, lambda v: True, "true or false, e.g. skip_unfit_ranks=true"),
    "plan": (_is_bool, lambda v: True, "true or false, e.g. plan=true"),
    "task.max_length": (_is_int, lambda v: v >= 1, "an integer >= 1 (tokens per example), e.g. task.max_length=128"),
    "task.max_steps": (_is_int, lambda v: v >= 1, "an integer >= 1 (optimizer steps), e.g. task.max_steps=400"),
    "task.num_labels": (_is_int, lambda v: v >= 1, "an integer >= 1 (1: regression), or null (from the data)"),
    "trainer.accumulate_grad_batches": (_is_int, lambda v: v >= 1, "an integer >= 1, e.g. 4"),
    "trainer.log_every_n_steps": (_is_int, lambda v: v >= 1, "an integer >= 1, e.g. 10"),
}
NULLABLE = ("lr", "head_lr", "rank", "alpha", "task.max_length", "task.num_labels")
SCHEDULERS = ("linear", "constant")


def check_values(cfg: DictConfig) -> None:
    """Refuse top-level values of the wrong kind: counts must be integers >= 1, lr a positive number...

    Raises:
        ValueError: naming the setting, the value given and an example of a valid one.
    """
    for key, (kind, valid, expected) in VALUE_RULES.items():
        value = OmegaConf.select(cfg, key, default="???missing")
        if value == "???missing" or (value is None and key in NULLABLE):
            continue
        if not (kind(value) and valid(value)):
            raise ValueError(f"{key} must be {expected} (got {key}={_shown(value)})")
    scheduler = OmegaConf.select(cfg, "task_schedule.scheduler")
    if scheduler is not None and scheduler not in SCHEDULERS:
        raise ValueError(
            f"task_schedule.scheduler must be linear or constant (got {_shown(scheduler)}), "
            "e.g. task_schedule.scheduler=constant"
        )


# ----------------------------------------------------------------------------------------------- keys


def allowed_top_level(hydra_cfg: DictConfig | None = None) -> set[str]:
    """The top-level keys a run may have: those of ``conf/train.yaml`` and its groups (plus ``hydra``)."""
    return set(_top_level_keys(conf_dir(hydra_cfg) / f"{_primary_name(hydra_cfg)}.yaml"))


@functools.lru_cache(maxsize=8)
def _group_names(path: Path) -> frozenset[str]:
    """The config groups the primary config's defaults list names (``model``, ``task``, ``hydra``...)."""
    names = set()
    for entry in OmegaConf.load(path).get("defaults") or []:
        if isinstance(entry, str) or entry is None:
            continue
        for group in entry:  # "optional model_task", "override hydra/launcher", "model@pkg"
            name = str(group).split()[-1].split("@")[0].split("/")[0]
            if name != "_self_":
                names.add(name)
    return frozenset(names)


@functools.lru_cache(maxsize=8)
def _top_level_keys(path: Path) -> frozenset[str]:
    keys = {str(k) for k in OmegaConf.load(path) if k != "defaults"} | {"hydra"}
    return frozenset(keys | _group_names(path))


@functools.lru_cache(maxsize=8)
def _compose_choices(config_name: str, folder: Path, chosen: tuple[str, ...]) -> DictConfig:
    """The primary config composed with only the group choices ``chosen`` (``model=vit``...): the values the
    command line's own values replace. Cached: ``train.py`` and the run's checks ask for the same one. Read-only.

    Raises:
        hydra.errors.HydraException: the choices do not compose.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # under @hydra.main or a test's initialize: its search path
        return compose(config_name=config_name, overrides=list(chosen))
    with initialize_config_dir(config_dir=str(folder), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(chosen))


def check_top_level_keys(cfg: DictConfig, hydra_cfg: DictConfig | None = None) -> None:
    """Refuse a top-level key that neither ``conf/train.yaml`` nor a config group defines (``+rnak=8``).

    Raises:
        ValueError: with the closest known key (``did you mean rank=8?``) or where to go instead.
    """
    allowed = allowed_top_level(hydra_cfg)
    for key in cfg:
        if key in allowed:
            continue
        value = "..." if OmegaConf.is_config(cfg[key]) else _shown(cfg[key])
        if key in REDIRECTS:
            raise ValueError(f"{key} is not a setting: {REDIRECTS[key]}")
        close = _suggest(str(key), allowed - {"hydra"})
        hint = f"did you mean {close}={value}? " if close else ""
        raise ValueError(
            f"unknown setting {key}={value}: {hint}The settings are {', '.join(sorted(allowed - {'hydra'}))}. "
            f"A new setting goes into conf/{_primary_name(hydra_cfg)}.yaml with a comment."
        )


def command_line(hydra_cfg: DictConfig | None) -> list:
    """The job's command-line overrides, parsed (Hydra's ``Override`` objects); [] outside a job."""
    if hydra_cfg is None:
        return []
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(list(hydra_cfg.overrides.task))


def check_added_keys(cfg: DictConfig, hydra_cfg: DictConfig | None = None, defaults: DictConfig | None = None) -> None:
    """Refuse ``+group.key=value`` where nothing reads ``key``: a node with no ``_target_`` above or in it
    (``+task.num_label=3``). Keys added to an instantiated node are its keyword arguments and pass
    (``+trainer.max_steps=10``); ``method.options`` (``method.config`` of ``method=peft``) is checked against the
    method's config class.

    Raises:
        ValueError: naming the node's keys and the closest one.
    """
    groups = set(hydra_cfg.runtime.choices) if hydra_cfg else set()
    for override in command_line(hydra_cfg):
        path = override.key_or_group
        added = override.is_add() or override.is_force_add()
        if not added or "." not in path or path in groups or path.split(".")[0] == "hydra":
            continue
        parent_path, key = path.rsplit(".", 1)
        if parent_path in ("method.options", "method.config") or _consumed_by_target(cfg, path):
            continue
        parent = OmegaConf.select(cfg, parent_path)
        siblings = [str(k) for k in parent if k != key] if OmegaConf.is_dict(parent) else []
        close = _suggest(key, siblings)
        hint = f"did you mean {parent_path}.{close}={override.value()}? " if close else ""
        if override.is_force_add() and defaults is not None:
            before = OmegaConf.select(defaults, parent_path, default=None, throw_on_resolution_failure=False)
            if OmegaConf.is_dict(before) and key in before:
                continue  # ++ of a key the node has: a plain override
        raise ValueError(
            f"{parent_path} has no setting {key!r} ({override.input_line}): {hint}"
            f"its settings are {', '.join(sorted(siblings))}"
        )


def unknown_keys(argv: list[str], config_name: str = "train") -> list[str]:
    """Lines naming each key of a command line that its config lacks, with the closest existing key
    (``task.max_lenght=5``: did you mean task.max_length=5?): what ``train.py`` adds to Hydra's "not in struct"
    message after a failed composition. Composes the config again with the command line's group choices only.
    """
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        overrides = OverridesParser.create().parse_overrides([a for a in argv[1:] if "=" in a and a[0] != "-"])
    except Exception:  # an override Hydra cannot parse: its own message says why
        return []
    groups = _group_names(CONF_DIR / f"{config_name}.yaml")
    chosen = tuple(o.input_line for o in overrides if o.key_or_group in groups)
    GlobalHydra.instance().clear()  # the failed @hydra.main's
    try:
        defaults = _compose_choices(config_name, CONF_DIR, chosen)
    except Exception:
        return []
    lines = []
    for override in overrides:
        path = override.key_or_group
        if override.is_add() or override.is_force_add() or path.split(".")[0].split("/")[0] == "hydra":
            continue
        parent_path, key = path.rsplit(".", 1) if "." in path else ("", path)
        parent = OmegaConf.select(defaults, parent_path, default=None, throw_on_resolution_failure=False)
        if parent_path == "":
            parent = defaults
        if not OmegaConf.is_dict(parent) or key in parent or (not parent_path and key in groups):
            continue
        siblings = [str(k) for k in parent if k != "hydra"]
        close = _suggest(key, siblings)
        dotted = f"{parent_path}.{close}" if parent_path else close
        hint = f"did you mean {dotted}={override.value()}? " if close else ""
        where = f"{parent_path} has no setting {key!r}" if parent_path else f"unknown setting {key!r}"
        lines.append(f"{where} ({override.input_line}): {hint}the settings are {', '.join(sorted(siblings))}")
    return lines


def _consumed_by_target(cfg: DictConfig, path: str) -> bool:
    """Whether the node at ``path`` or one above it is instantiated (has a ``_target_``)."""
    parts = path.split(".")
    for i in range(1, len(parts) + 1):
        node = OmegaConf.select(cfg, ".".join(parts[:i]))
        if OmegaConf.is_dict(node) and "_target_" in node:
            return True
    return False


# ----------------------------------------------------------------------------------------------- method


def method_settings(hydra_cfg: DictConfig | None = None) -> dict[str, list[str]]:
    """Top-level keys the method configs read (``${rank}``, ``${alpha}``, ``${init}``) -> the methods that do."""
    return _method_settings(conf_dir(hydra_cfg) / "method")


@functools.lru_cache(maxsize=8)
def _method_settings(folder: Path) -> dict[str, list[str]]:
    users: dict[str, list[str]] = {}
    for path in sorted(folder.glob("*.yaml")):
        text = OmegaConf.to_yaml(OmegaConf.load(path))
        for key in sorted(set(_REFERENCE.findall(text))):
            users.setdefault(key, []).append(path.stem)
    return users


def check_method_settings(cfg: DictConfig, hydra_cfg: DictConfig | None = None) -> None:
    """Refuse a method setting given on the command line that the chosen method does not read
    (``method=lora init=foo``: only loldu and svfit have an ``init``).

    Raises:
        ValueError: naming the methods that use the setting.
    """
    users = method_settings(hydra_cfg)
    name = hydra_cfg.runtime.choices.get("method", cfg.method.name) if hydra_cfg else cfg.method.name
    for override in command_line(hydra_cfg):
        key = override.key_or_group
        if key in users and name not in users[key] and override.value() is not None and not override.is_delete():
            raise ValueError(
                f"{key}={override.value()} is a setting of {', '.join(users[key])}; method={name} does not use it: "
                "drop it, or pick one of those methods"
            )


def composed_defaults(hydra_cfg: DictConfig) -> DictConfig:
    """The job's config composed again with only its command line's group choices (``model=vit``,
    ``experiment=...``): what each value the command line sets replaced (:func:`check_override_types`)."""
    groups = set(hydra_cfg.runtime.choices)
    chosen = tuple(o.input_line for o in command_line(hydra_cfg) if o.key_or_group in groups)
    return _compose_choices(_primary_name(hydra_cfg), conf_dir(hydra_cfg), chosen)


def check_alpha_follows_rank(cfg: DictConfig, hydra_cfg: DictConfig | None = None) -> None:
    """Refuse a rank given on the command line under an ``alpha`` a preset fixed for another rank (the preset's
    ``alpha: 768`` kept with ``rank=8`` makes sigma0 = 96): the command line sets both, or alpha=null.

    Raises:
        ValueError: naming both values and the two fixes.
    """
    given = {o.key_or_group for o in command_line(hydra_cfg) if not o.is_delete()}
    alpha, rank = cfg.get("alpha"), cfg.get("rank")
    if "rank" in given and "alpha" not in given and alpha is not None and rank is not None and alpha != rank:
        raise ValueError(
            f"rank={rank} was given, and alpha={alpha} comes from a preset written for another rank "
            f"(sigma0 = alpha / rank = {alpha / rank:g}): give alpha too, e.g. alpha={rank} (sigma0 = 1), "
            "or alpha=null (alpha = rank)"
        )


def check_epochs(cfg: DictConfig) -> None:
    """Refuse ``trainer.max_epochs`` set apart from ``epochs``: one source for the number of epochs (the trainer
    follows ``epochs``; diffusion tasks train by ``task.max_steps``).

    Raises:
        ValueError: naming both and the setting to use.
    """
    trainer_epochs = OmegaConf.select(cfg, "trainer.max_epochs", default=None, throw_on_resolution_failure=False)
    if trainer_epochs is not None and trainer_epochs != cfg.get("epochs"):
        raise ValueError(
            f"trainer.max_epochs={trainer_epochs} differs from epochs={cfg.get('epochs')}: the number of epochs "
            f"has one setting, epochs (the trainer, the schedule and the records follow it); use "
            f"epochs={trainer_epochs}"
        )


def check_monitor(cfg: DictConfig) -> None:
    """Refuse a ``task.monitor`` the task never logs: ``val/<one of task.metrics>`` or ``val/loss``.

    Raises:
        ValueError: naming the metrics the task logs.
    """
    monitor, metrics = cfg.task.get("monitor"), cfg.task.get("metrics")
    if monitor is None:
        return
    logged = ["val/loss"] + [f"val/{m}" for m in (metrics or [])]
    if (metrics and monitor not in logged) or not str(monitor).startswith("val/"):
        close = _suggest(str(monitor), logged)
        hint = f"did you mean task.monitor={close}? " if close else ""
        raise ValueError(
            f"task.monitor={monitor} is not logged by task {choice('task')}: {hint}it logs "
            f"{', '.join(logged) if metrics else 'val/<metric> names'} (task.metrics adds one)"
        )


#: Local data sources -> their path settings (under ``task.data.source_args``; ``task.data`` for DreamBooth's).
LOCAL_PATHS = {
    "text_csv": ("train", "validation", "test"),
    "imagefolder": ("root",),
    "instruction_json": ("path",),
}


def check_local_paths(cfg: DictConfig) -> None:
    """Refuse a local data path that does not exist, or one file given as two splits, before anything loads (the
    data modules check the content later, also for identical copies under other names).

    Raises:
        ValueError: naming the setting, the path and the fix.
    """
    data = cfg.task.get("data") or {}
    source = data.get("source") if OmegaConf.is_dict(data) else None
    args = data.get("source_args") if source in LOCAL_PATHS else None
    paths = {f"task.data.source_args.{k}": args.get(k) for k in LOCAL_PATHS.get(source, ()) if args is not None}
    if OmegaConf.is_dict(data) and "instance_dir" in data:
        paths["task.data.instance_dir"] = data.get("instance_dir")
        paths["task.data.class_dir"] = data.get("class_dir") if data.get("class_dir") else None
    seen: dict[str, str] = {}
    for key, value in paths.items():
        if value is None or key.endswith("class_dir"):  # class images are generated into class_dir when missing
            continue
        path = Path(str(value)).expanduser()
        if not path.exists():
            raise ValueError(
                f"{key}={value}: no such file or folder (relative paths start where you run train.py, here "
                f"{Path.cwd()}); give the path of your data"
            )
        resolved = str(path.resolve())
        if resolved in seen:
            raise ValueError(
                f"{key}={value} is the same file as {seen[resolved]}: a split evaluated on the data it trained on "
                "means nothing; give a file of its own, or leave it null (a seeded slice of train)"
            )
        seen[resolved] = key


def check_config(cfg: DictConfig) -> None:
    """Refuse bad input before anything is loaded, naming the fix: unknown keys, values of the wrong kind, method
    settings the method does not read, a model/task family mismatch, ranks that cannot fit.

    Raises:
        ValueError: the first problem found, with the setting to change.
    """
    hydra_cfg = hydra_config()
    check_top_level_keys(cfg, hydra_cfg)
    defaults = composed_defaults(hydra_cfg) if hydra_cfg is not None else None
    check_added_keys(cfg, hydra_cfg, defaults)
    check_values(cfg)
    if defaults is not None:
        check_override_types(cfg, defaults, command_line(hydra_cfg))
    check_method_options(cfg)
    check_peft_type(cfg)  # method=peft: method.peft_type names a PEFT method
    check_method_settings(cfg, hydra_cfg)
    check_alpha_follows_rank(cfg, hydra_cfg)
    check_epochs(cfg)
    check_monitor(cfg)
    model_family, task_family = cfg.model.family, cfg.task.family
    if task_family != model_family:
        raise ValueError(
            f"model {choice('model')!r} is a {model_family} model and task {choice('task')!r} needs a "
            f"{task_family} model: pick a {task_family} model (e.g. model="
            f"{EXAMPLE_MODEL.get(task_family, '...')}) or a {model_family} task"
        )
    if cfg.method.name in DIFFUSION_METHODS and task_family != "diffusion":
        raise ValueError(
            f"method={cfg.method.name} learns a Stable Diffusion concept and runs on diffusion tasks only; task "
            f"{choice('task')!r} is of the {task_family} family: pick a diffusion task and model (e.g. model=tiny_sd "
            f"task=dreambooth_animal) or another method"
        )
    check_rank_fits(cfg)
    if cfg.method.name == "linear_probe" and not cfg.model.head_modules:
        raise ValueError(f"linear_probe needs a head, and model {choice('model')} names no head_modules")
    if cfg.get("head_lr") is not None and not cfg.model.head_modules:
        raise ValueError(
            f"head_lr={cfg.head_lr} sets the lr of a new head, and model {choice('model')} has none "
            "(model.head_modules is empty): leave head_lr unset"
        )


def check_rank_fits(cfg: DictConfig) -> None:
    """Refuse a rank the model's target layers cannot hold (``model.full_rank`` is their min(out, in)).

    Raises:
        ValueError: naming the largest rank that fits.
    """
    r, full, name = cfg.method.r, cfg.model.full_rank, cfg.method.name
    if r is None or full is None or cfg.get("skip_unfit_ranks"):  # skip_unfit_ranks: the run is skipped instead
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
