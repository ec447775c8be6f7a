"""Your own data in one try: the data is checked before the model loads, num_labels comes from the data, label names
reach the run folder and the saved model, bad files are refused with the fix, user folders are not augmented."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest
import torch
from helpers import compose_job
from hydra.errors import InstantiationException
from omegaconf import open_dict

from loldu.data import ImageClassificationDataModule, TextClassificationDataModule
from loldu.run import train
from loldu.tasks import get_family

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def _train(out: Path, *overrides: str) -> dict:
    train(compose_job("debug=fast", "logger=none", "callbacks=none", f"output_dir={out}", *overrides))
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture
def builder_calls(monkeypatch):
    """Replace every tiny model builder by one that records its call and refuses to build anything."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append(kwargs)
        raise AssertionError("the model builder ran before the data was checked")

    tiny = importlib.import_module("loldu.models.tiny")
    for name in ("tiny_text_classifier", "tiny_image_classifier", "tiny_causal_lm", "tiny_sd"):
        monkeypatch.setattr(tiny, name, refuse)
    return calls


def _csv(path: Path, rows: list[tuple[str, str]], header: str = "text,label") -> Path:
    path.write_text(header + "\n" + "".join(f'"{text}",{label}\n' for text, label in rows))
    return path


def _png(path: Path, color, size=(8, 8)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def _folder(root: Path, classes: dict[str, tuple[int, int, int]], count: int = 25) -> Path:
    for name, color in classes.items():
        for i in range(count):
            _png(root / name / f"{i}.png", tuple(min(255, c + 2 * i) for c in color))
    return root


TOPICS = [("the striker scored twice", "sport"), ("shares fell at the open", "markets"), ("a new vaccine", "health")]


# -- the data is read and checked before any model loads --------------------------------------------------------------


def test_wrong_column_fails_without_the_model_builder(tmp_path, builder_calls):
    data = _csv(tmp_path / "news.csv", TOPICS * 20, header="headline,topic")
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"no column\(s\) \['text', 'label'\].*task\.data\.source_args\.text_columns"):
        _train(out, "model=tiny_bert", "task=text_csv", f"task.data.source_args.train={data}")
    assert builder_calls == [] and not (out / "config.yaml").exists()  # no run folder that looks like a real run
    cfg = compose_job("model=tiny_bert", "task=text_csv", f"task.data.source_args.train={data}")
    with pytest.raises(
        InstantiationException, match="builder ran"
    ):  # the fix the message names gets past the data check
        with open_dict(cfg):
            cfg.task.data.source_args.text_columns, cfg.task.data.source_args.label_column = ["headline"], "topic"
            cfg.output_dir = str(out)
        train(cfg)
    assert len(builder_calls) == 1 and builder_calls[0]["num_labels"] == 3


@pytest.mark.parametrize(
    "overrides,match",
    [
        (("model=tiny_vit", "task=imagefolder", "task.data.source_args.root={tmp}/none"), "source_args.root"),
        (("model=tiny_llama", "task=instruction_json", "task.data.source_args.path={tmp}/none.json"), "none.json"),
        (("model=tiny_sd", "task=dreambooth", "task.data.instance_dir={tmp}/none"), "instance_dir"),
    ],
)
def test_every_family_checks_its_data_before_the_model(tmp_path, builder_calls, overrides, match):
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        _train(tmp_path / "run", *(o.format(tmp=tmp_path) for o in overrides))
    assert builder_calls == []


# -- num_labels from the data, label names saved ----------------------------------------------------------------------


def test_text_csv_infers_num_labels_and_saves_label_names_in_the_merged_model(tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    data = _csv(tmp_path / "news.csv", TOPICS * 20)
    out = tmp_path / "run"
    _train(out, "model=tiny_bert", "task=text_csv", f"task.data.source_args.train={data}", "save_merged=true")
    names = {"0": "health", "1": "markets", "2": "sport"}
    assert json.loads((out / "labels.json").read_text()) == names
    from loldu.run.finished import load_run

    assert load_run(out)[1].model.config.num_labels == 3  # the run folder rebuilds with the inferred count
    merged = AutoModelForSequenceClassification.from_pretrained(out / "merged")
    assert merged.config.id2label == {int(i): n for i, n in names.items()}
    assert merged.config.label2id == {n: int(i) for i, n in names.items()}
    classify = pipeline("text-classification", model=merged, tokenizer=AutoTokenizer.from_pretrained(out / "merged"))
    assert classify("a late goal won the cup")[0]["label"] in names.values()


def test_imagefolder_infers_num_labels(tmp_path):
    root = _folder(tmp_path / "shapes", {"circle": (200, 0, 0), "square": (0, 200, 0), "star": (0, 0, 200)})
    out = tmp_path / "run"
    metrics = _train(out, "model=tiny_vit", "task=imagefolder", f"task.data.source_args.root={root}")
    assert "test/acc" in metrics["test"]
    assert json.loads((out / "labels.json").read_text()) == {"0": "circle", "1": "square", "2": "star"}
    assert "num_labels: 3" in (out / "config.yaml").read_text()


def test_a_set_num_labels_that_differs_from_the_data_is_refused_naming_both(tmp_path, builder_calls):
    root = _folder(tmp_path / "shapes", {"circle": (200, 0, 0), "square": (0, 200, 0)})
    with pytest.raises(ValueError, match=r"task\.num_labels=5 but .*shapes.* has 2 labels.*set task\.num_labels=2"):
        _train(
            tmp_path / "run",
            "model=tiny_vit",
            "task=imagefolder",
            "task.num_labels=5",
            f"task.data.source_args.root={root}",
        )
    assert builder_calls == []


# -- bad data files ----------------------------------------------------------------------------------------------------


def test_a_three_row_csv_is_refused_with_the_minimum_and_the_key(tmp_path, builder_calls):
    data = _csv(tmp_path / "tiny.csv", [("good", "pos"), ("bad", "neg"), ("great", "pos")])
    with pytest.raises(
        ValueError, match=r"tiny\.csv.*too few rows.*at least 5 rows.*task\.data\.min_split_size"
    ) as err:
        _train(tmp_path / "run", "model=tiny_bert", "task=text_csv", f"task.data.source_args.train={data}")
    assert "add rows" in str(err.value) and builder_calls == []


def test_small_carved_splits_name_the_size_keys(tmp_path):
    data = _csv(tmp_path / "small.csv", [("good", "pos"), ("bad", "neg")] * 15)  # 30 rows: 3 test, 3 validation
    dm = TextClassificationDataModule("text_csv", {"train": str(data)})
    with pytest.raises(
        ValueError, match=r"test 3, .*validation 3.*task\.data\.test_fraction=5 task\.data\.val_fraction=5"
    ):
        dm.check()
    sized = TextClassificationDataModule("text_csv", {"train": str(data)}, val_fraction=5, test_fraction=5)
    sized.check()
    assert {name: len(ix) for name, (_, ix) in sized.split_indices.items()} == {"train": 20, "validation": 5, "test": 5}


def test_a_non_utf8_csv_names_the_file_and_the_encoding_option(tmp_path):
    path = tmp_path / "accents.csv"
    path.write_bytes(("text,label\n" + "un café très bon,pos\nun thé froid,neg\n" * 30).encode("latin-1"))
    with pytest.raises(ValueError, match=r"accents\.csv.*not utf-8.*task\.data\.source_args\.encoding=latin-1"):
        TextClassificationDataModule("text_csv", {"train": str(path)}).check()
    dm = TextClassificationDataModule("text_csv", {"train": str(path), "encoding": "latin-1"})
    dm.check()
    assert "un café très bon" in dm.parts["train"]["text"]
    with pytest.raises(ValueError, match="not a known text encoding"):
        TextClassificationDataModule("text_csv", {"train": str(path), "encoding": "latin-42"}).check()


def test_a_tsv_or_semicolon_file_named_csv_gets_the_delimiter_hint(tmp_path):
    rows = "".join(f"text {i};{'ab'[i % 2]}\n" for i in range(60))
    (tmp_path / "semi.csv").write_text("text;label\n" + rows)
    with pytest.raises(ValueError, match=r"looks ';'-separated: set task\.data\.source_args\.delimiter=';'"):
        TextClassificationDataModule("text_csv", {"train": str(tmp_path / "semi.csv")}).check()
    (tmp_path / "tabs.csv").write_text("text\tlabel\n" + rows.replace(";", "\t"))
    with pytest.raises(ValueError, match=r"looks tab-separated: name it \.tsv"):
        TextClassificationDataModule("text_csv", {"train": str(tmp_path / "tabs.csv")}).check()
    dm = TextClassificationDataModule("text_csv", {"train": str(tmp_path / "semi.csv"), "delimiter": ";"})
    dm.check()
    assert dm.label_names == ["a", "b"]


def test_a_one_class_csv_says_classification_needs_two_classes(tmp_path):
    data = _csv(tmp_path / "one.csv", [(f"text {i}", "spam") for i in range(30)])
    expected = (
        f"classification needs at least 2 classes; found 1 ('spam') in '{data}'; for regression set "
        "task.data.source_args.regression=true task.num_labels=1"
    )
    with pytest.raises(ValueError, match=re.escape(expected)):
        TextClassificationDataModule("text_csv", {"train": str(data)}).check()


def test_a_one_class_folder_names_the_layout(tmp_path):
    root = _folder(tmp_path / "cats", {"cat": (10, 20, 30)})
    with pytest.raises(ValueError, match=r"at least 2 classes; found 1 \('cat'\).*sub-folder"):
        ImageClassificationDataModule("imagefolder", {"root": str(root)}).check()


def test_regression_data_with_class_metrics_names_the_metric_keys(tmp_path, builder_calls):
    data = _csv(tmp_path / "scores.csv", [(f"review {i}", f"{i % 7 / 2}") for i in range(60)])
    args = ("model=tiny_bert", "task=text_csv", f"task.data.source_args.train={data}")
    with pytest.raises(
        ValueError, match=r"class metrics.*set task\.metrics=\[pearson,spearman\] task\.monitor=val/pearson"
    ):
        _train(tmp_path / "run", *args, "task.data.source_args.regression=true")
    cfg = compose_job(*args, "task.data.source_args.regression=true", "task.metrics=[pearson,spearman]")
    get_family("text").check_data(cfg)
    assert cfg.task.num_labels == 1 and builder_calls == []


# -- augmentation, model-loading errors --------------------------------------------------------------------------------


def test_user_folders_are_not_augmented_but_recipes_keep_it(tmp_path):
    from hydra.utils import instantiate

    root = _folder(tmp_path / "digits", {"six": (200, 0, 0), "nine": (0, 0, 200)})
    cfg = compose_job("model=tiny_vit", "task=imagefolder", f"task.data.source_args.root={root}")
    dm = instantiate(cfg.task.data, _convert_="all", image_size=8)
    assert dm.augment is False
    dm.setup()
    first, again = dm.datasets["train"][0]["pixel_values"], dm.datasets["train"][0]["pixel_values"]
    assert torch.equal(first, again)  # no random crop or flip
    assert ImageClassificationDataModule("imagefolder", {"root": str(root)}).augment is False
    assert compose_job("model=tiny_vit", "task=cifar10").task.data.augment is True  # the recipes of natural images
    assert compose_job("model=tiny_vit", "task=digits").task.data.augment is False  # a mirrored digit is no digit


def test_model_loading_error_names_the_real_key_and_offline_mode(monkeypatch):
    import transformers

    from loldu.models import builders

    def missing(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", missing)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(RuntimeError) as err:
        builders.hf_text_classifier(2, name_or_path="someone/missing-model")
    message = str(err.value)
    assert "model.builder.name_or_path=<folder>" in message and "HF_HUB_OFFLINE=1" in message
    key = re.search(r"(model\.builder\.\w+)=<folder>", message).group(1)
    assert compose_job("model=roberta_base", "task=sst2", f"{key}=/models/roberta").model.builder.name_or_path


def test_readme_own_data_example_composes_and_its_data_checks(tmp_path, monkeypatch):
    section = (ROOT / "README.md").read_text().split("## Your own data", 1)[1].split("\n## ", 1)[0]
    csv_block = re.search(r"cat > (\S+) <<'CSV'\n(.*?)CSV\n", section, flags=re.S)
    monkeypatch.chdir(tmp_path)
    Path(csv_block.group(1)).write_text(csv_block.group(2))
    command = next(line for line in section.splitlines() if "task=text_csv" in line and "train.py" in line)
    overrides = command.split("train.py", 1)[1].split("#")[0].split()
    cfg = compose_job(*overrides)
    assert cfg.task.num_labels is None
    get_family(cfg.task.family).check_data(cfg)
    assert cfg.task.num_labels == 3
