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
    with pytest.raises(ValueError, match=r"model\.builder.*_target_ = .* is not one of this project's builders"):
        load_run(run)
    assert not marker.exists()


def test_a_run_folder_cannot_run_code_through_its_data_module(tmp_path):
    # loldu.eval.dreambooth instantiates the saved task.data: load_config already refuses a foreign target.
    marker = tmp_path / "marker"
    task = {"family": "diffusion", "data": {"_target_": "os.system", "command": f"touch {marker}"}}
    run = _run_folder(tmp_path, {"builder": {"_target_": "loldu.models.tiny.tiny_sd"}}, task)
    with pytest.raises(ValueError, match=r"task\.data\._target_ = 'os.system'.*defined in loldu\.data"):
        load_config(run)
    assert not marker.exists()


def test_an_interpolated_target_is_refused(tmp_path):
    run = _run_folder(tmp_path, {"builder": {"_target_": "${oc.env:BUILDER}"}})
    with pytest.raises(ValueError, match="not one of this project's builders"):
        load_config(run)


def test_every_builder_and_data_module_the_configs_name_is_trusted():
    from loldu.run.finished import TRUSTED_TARGETS, check_targets

    for group, package in TRUSTED_TARGETS.items():
        for path in sorted((CONF / group).glob("*.yaml")):
            node = OmegaConf.load(path)
            check_targets(OmegaConf.create({group: OmegaConf.to_container(node)}), path)
            assert package in OmegaConf.to_yaml(node) or "defaults" in node, path  # every file names one or includes
