"""Data sanity before training (loldu.data.sanity): data that would make a run's numbers meaningless is refused
before the model loads, doubtful data is warned about once, and the findings are kept on the data module."""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from loldu.data import ImageClassificationDataModule, InstructionDataModule, TextClassificationDataModule
from loldu.tasks import get_family

ROOT = Path(__file__).resolve().parents[1]
WORDS = "river stone cloud lamp violin orchard copper meadow harbour lantern ember quartz".split()
LOGGER = "loldu.data.sanity"


def _rows(n: int, classes: str = "ab", seed: int = 0) -> list[tuple[str, str]]:
    """``n`` distinct short texts with labels cycling through ``classes``."""
    rng = random.Random(seed)
    return [(" ".join(rng.choice(WORDS) for _ in range(5)) + f" {i}", classes[i % len(classes)]) for i in range(n)]


def _csv(path: Path, rows: list[tuple[str, object]], header: str = "text,label") -> str:
    path.write_text(header + "\n" + "".join(f'"{text}",{label}\n' for text, label in rows))
    return str(path)


def _check_data(*overrides: str):
    """What a run does before its model loads: compose the config and call the family's ``check_data``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides))
    GlobalHydra.instance().clear()
    return get_family(cfg.task.family).check_data(cfg)


def _png(path: Path, color: tuple[int, int, int]) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), color).save(path)


def _folder(root: Path, classes: dict[str, int], count: int = 40) -> Path:
    """``count`` distinct images per class (class k: red channel k * 40, green = image index)."""
    for k, name in enumerate(classes):
        for i in range(count):
            _png(root / name / f"{i}.png", (classes[name], i, k))
    return root


def _sanity_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


def test_a_clean_csv_has_no_findings(tmp_path, caplog):
    data = _csv(tmp_path / "clean.csv", _rows(300))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        dm = _check_data("model=tiny_bert", "task=text_csv", f"task.data.source_args.train={data}")
    assert dm.sanity["refusals"] == [] and dm.sanity["warnings"] == [] and _sanity_warnings(caplog) == []
    assert set(dm.sanity["duplicates"]) == {"train/validation", "train/test", "validation/test"}
    assert all(counts["duplicates"] == 0 for counts in dm.sanity["duplicates"].values())
    assert dm.sanity["duplicates"]["train/test"]["rows"] == 30
    assert json.loads(json.dumps(dm.sanity)) == dm.sanity  # what the run writes to data_sanity.json


def test_rows_repeated_across_splits_are_refused_above_half_and_warned_below(tmp_path, caplog):
    rows = _rows(300)
    tripled = _csv(tmp_path / "tripled.csv", rows[:100] * 3)  # every row three times: copies land in every split
    dm = TextClassificationDataModule("text_csv", {"train": tripled})
    with pytest.raises(ValueError, match=r"tripled\.csv.*train/(validation|test): \d+ of 30 .* also in train") as err:
        dm.check()
    pair = re.search(r"train/(\w+): (\d+) of 30", str(err.value))
    counts = dm.sanity["duplicates"][f"train/{pair.group(1)}"]
    assert int(pair.group(2)) == counts["duplicates"] and counts["share"] > 0.5  # the count in the message
    assert "drop_duplicates" in str(err.value) and "max_train_overlap" in str(err.value)

    some = _csv(tmp_path / "some.csv", rows + rows[:40])  # 40 of 340 rows repeated: a warning, the run goes on
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        dm = TextClassificationDataModule("text_csv", {"train": some})
        dm.check()
        dm.check()  # checked once: warned once
    counts = dm.sanity["duplicates"]["train/test"]
    assert 0 < counts["duplicates"] < 17 and dm.sanity["refusals"] == []
    assert f"train/test: {counts['duplicates']} of {counts['rows']} test rows" in " ".join(dm.sanity["warnings"])
    assert _sanity_warnings(caplog) == [f"Data check: {w}" for w in dm.sanity["warnings"]]
    knowingly = TextClassificationDataModule("text_csv", {"train": tripled}, max_train_overlap=1.0)
    knowingly.check()  # the refusal can be turned into a warning
    assert knowingly.sanity["refusals"] == [] and knowingly.sanity["warnings"]


def test_the_same_file_as_train_validation_and_test_is_refused(tmp_path):
    data = _csv(tmp_path / "all.csv", _rows(300))
    with pytest.raises(
        ValueError,
        match=r"source_args\.train and task\.data\.source_args\.validation give the same file .*all\.csv.*"
        r"set task\.data\.source_args\.validation=null",
    ):
        _check_data(
            "model=tiny_bert",
            "task=text_csv",
            f"task.data.source_args.train={data}",
            f"task.data.source_args.validation={data}",
            f"task.data.source_args.test={data}",
        )
    copy = shutil.copy(data, tmp_path / "test.csv")
    dm = TextClassificationDataModule("text_csv", {"train": data, "test": str(copy)})
    with pytest.raises(ValueError, match=r"identical content .*all\.csv.*test\.csv"):
        dm.check()
    assert dm.sanity["same_sources"] == ["train/test"]


def test_a_free_text_label_column_is_refused(tmp_path):
    rows = [(text, f"note {i} {text.split()[0]}") for i, (text, _) in enumerate(_rows(300))]
    data = _csv(tmp_path / "notes.csv", rows, header="text,comment")
    with pytest.raises(
        ValueError,
        match=r"notes\.csv.*label column 'comment' has 300 distinct values in 300 training rows.*"
        r"set task\.data\.source_args\.label_column",
    ):
        _check_data(
            "model=tiny_bert",
            "task=text_csv",
            f"task.data.source_args.train={data}",
            "task.data.source_args.label_column=comment",
        )


def test_float_labels_are_refused_unless_regression(tmp_path):
    data = _csv(tmp_path / "scores.csv", [(text, f"{i % 60 / 10}") for i, (text, _) in enumerate(_rows(300))])
    with pytest.raises(
        ValueError, match=r"scores\.csv.*non-integer numbers \(0\.1, 0\.2, 0\.3, \.\.\.\) that became 60 classes.*"
    ) as err:
        TextClassificationDataModule("text_csv", {"train": data}).check()
    assert "task.data.source_args.regression=true task.num_labels=1" in str(err.value)
    dm = TextClassificationDataModule("text_csv", {"train": data, "regression": True})
    dm.check()
    assert dm.is_regression and dm.sanity["refusals"] == []


def test_a_hidden_folder_is_skipped_with_a_warning(tmp_path, caplog):
    root = _folder(tmp_path / "pets", {"cat": 40, "dog": 160})
    _folder(root / ".ipynb_checkpoints", {"cat": 80}, count=3)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        dm = _check_data("model=tiny_vit", "task=imagefolder", f"task.data.source_args.root={root}")
    assert dm.label_names == ["cat", "dog"] and len(dm.parts["train"]) == 80  # not a class, no images taken
    assert [w for w in dm.sanity["warnings"] if ".ipynb_checkpoints" in w and "skipped the hidden folder" in w]
    assert any(".ipynb_checkpoints" in message for message in _sanity_warnings(caplog))


def test_a_small_stray_class_folder_is_warned_about(tmp_path):
    root = _folder(tmp_path / "pets", {"cat": 40, "dog": 160})
    _folder(root, {"_unsorted": 220}, count=1)
    dm = ImageClassificationDataModule("imagefolder", {"root": str(root)})
    dm.check()
    warnings = " ".join(dm.sanity["warnings"])
    assert dm.label_names == ["_unsorted", "cat", "dog"] and dm.sanity["refusals"] == []
    assert re.search(r"class folder '.*_unsorted' has 1 training example\(s\) against a median of 40", warnings)
    assert "the folder '_unsorted'" in warnings and "became a class" in warnings


def test_images_copied_into_every_split_folder_are_refused(tmp_path):
    for part in ("train", "val", "test"):
        _folder(tmp_path / "shapes" / part, {"circle": 40, "square": 160}, count=10)  # the same files thrice
    dm = ImageClassificationDataModule("imagefolder", {"root": str(tmp_path / "shapes")})
    with pytest.raises(ValueError, match=r"train/validation: 20 of 20 validation rows \(100%\) also in train"):
        dm.check()
    assert dm.sanity["duplicates"]["train/test"] == {"rows": 20, "duplicates": 20, "share": 1.0}


def test_instruction_prompts_repeated_across_splits_are_only_warned_about(tmp_path):
    items = [{"instruction": f"Question {i % 30}?", "output": f"Answer {i}."} for i in range(90)]
    path = tmp_path / "qa.json"
    path.write_text(json.dumps(items))
    dm = InstructionDataModule("instruction_json", {"path": str(path)}, val_size=20)
    dm.check()
    assert dm.sanity["duplicates"]["train/validation"]["duplicates"] > 10 and dm.sanity["refusals"] == []
    assert "task.data.dedupe=true task.data.group_by_instruction=true" in dm.sanity["warnings"][0]
    grouped = InstructionDataModule("instruction_json", {"path": str(path)}, val_size=20, group_by_instruction=True)
    grouped.check()
    assert grouped.sanity["warnings"] == []
