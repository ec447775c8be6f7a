"""A run folder is data: rebuilding a run calls only the project's own builders, whatever its config.yaml names."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from loldu.run.finished import load_config, load_run

CONF = Path(__file__).resolve().parents[1] / "conf"
TEXT_TASK = {"family": "text", "data": {"_target_": "loldu.data.TextClassificationDataModule", "source": "csv"}}


def _run_folder(tmp_path: Path, model: dict, task: dict | None = None) -> Path:
    """A folder that looks like a finished run (config.yaml and adapter/) with the given model and task nodes."""
    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"model": model, "task": task or TEXT_TASK}), run / "config.yaml")
    return run


def _builders(marker: Path) -> dict[str, dict]:
    """Model nodes that, instantiated, would create ``marker``."""
    touch = f"touch {marker}"
    return {
        "os.system": {"builder": {"_target_": "os.system", "command": touch}},
        "builtins.exec": {"builder": {"_target_": "builtins.exec", "_args_": [f"open({str(marker)!r}, 'w')"]}},
        # a path that starts inside the package but leaves it through an imported module
        "through an import": {"builder": {"_target_": "loldu.models.tiny.torch.save", "obj": 1, "f": str(marker)}},
        "nested": {
            "builder": {
                "_target_": "loldu.models.tiny.tiny_text_classifier",
                "num_labels": {"_target_": "os.system", "command": touch},
            }
        },
        "private": {"builder": {"_target_": "loldu.models.builders.__builtins__.exec", "_args_": ["1"]}},
    }


@pytest.mark.parametrize("case", list(_builders(Path("m"))))
def test_a_run_folder_cannot_run_code_through_its_builder(tmp_path, case):
    marker = tmp_path / "marker"
    run = _run_folder(tmp_path, _builders(marker)[case])
    with pytest.raises(ValueError, match=r"model\.builder.*_target_ = .* is not allowed: a model node may name"):
        load_run(run)
    assert not marker.exists()


def test_a_run_folder_cannot_run_code_through_its_data_module(tmp_path):
    # loldu.eval.dreambooth instantiates the saved task.data: load_config already refuses a foreign target.
    marker = tmp_path / "marker"
    task = {"family": "diffusion", "data": {"_target_": "os.system", "command": f"touch {marker}"}}
    run = _run_folder(tmp_path, {"builder": {"_target_": "loldu.models.tiny.tiny_sd"}}, task)
    with pytest.raises(
        ValueError, match=r"task\.data\._target_ = 'os.system' is not allowed: a task node may name .*loldu\.data"
    ):
        load_config(run)
    assert not marker.exists()


def test_an_interpolated_target_is_refused(tmp_path):
    run = _run_folder(tmp_path, {"builder": {"_target_": "${oc.env:BUILDER}"}})
    with pytest.raises(ValueError, match=r"model\.builder\._target_ = '\$\{oc.env:BUILDER\}' is an interpolation"):
        load_config(run)


def test_an_interpolation_cannot_point_a_builder_at_another_node(tmp_path):
    # The attack on the old loader: model.builder itself an interpolation of a top-level node naming a foreign
    # target. Read as data, the interpolation is refused before anything resolves or instantiates.
    marker = tmp_path / "marker"
    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    evil = {"_target_": "pathlib.Path.write_text", "self": str(marker), "data": "x"}
    (run / "config.yaml").write_text(
        OmegaConf.to_yaml(OmegaConf.create({"model": {"builder": "${evil}"}, "task": TEXT_TASK, "evil": evil}))
    )
    with pytest.raises(ValueError, match=r"model\.builder = '\$\{evil\}' is an interpolation"):
        load_run(run)
    assert not marker.exists()


@pytest.mark.parametrize(
    "node",
    [
        {"callbacks": {"x": {"_target_": "loldu.run.folder.atomic_write_text", "path": "p", "text": "t"}}},
        {"optimizer": {"_target_": "torch.optim.Optimizer.load_state_dict"}},
        {"trainer": {"_target_": "lightning.Trainer", "strategy": {"_target_": "os.system", "command": "true"}}},
        {"method": {"_target_": "loldu.models.tiny.tiny_sd"}},
        {"logger": {"csv": {"_target_": "lightning.pytorch.loggers.logger.rank_zero_experiment"}}},
    ],
    ids=[
        "function as callback",
        "method of an optimizer",
        "nested in trainer",
        "target in a plain node",
        "not a logger",
    ],
)
def test_every_instantiated_node_may_name_only_its_own_kind(tmp_path, node):
    run = _run_folder(tmp_path, {"builder": {"_target_": "loldu.models.tiny.tiny_text_classifier"}})
    config = OmegaConf.to_container(OmegaConf.load(run / "config.yaml"))
    (run / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create({**config, **node})))
    with pytest.raises(ValueError, match="is not allowed"):
        load_config(run)


@pytest.mark.parametrize("text", ["model: [unclosed", "!!python/object/apply:os.system ['true']", "- a\n- b\n"])
def test_a_damaged_config_is_refused_as_such(tmp_path, text):
    run = _run_folder(tmp_path, {"builder": {"_target_": "loldu.models.tiny.tiny_text_classifier"}})
    (run / "config.yaml").write_text(text)
    with pytest.raises(ValueError, match="not valid YAML|does not hold a config"):
        load_config(run)


def test_every_target_the_configs_name_is_allowed():
    from loldu.config.saved import TARGET_PACKAGES
    from loldu.run.finished import check_targets

    named = 0
    for group in TARGET_PACKAGES:
        for path in sorted((CONF / group).glob("*.yaml")):
            node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
            node.pop("defaults", None)
            check_targets({group: node}, path)
            named += "_target_" in OmegaConf.to_yaml(OmegaConf.create(node))
    assert named >= 20  # the builders, data modules, optimizer, trainers, callbacks and loggers were all seen
