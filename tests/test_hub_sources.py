"""The hub datasets of conf/task: each pinned to the revision loldu/data/hub/catalog.py records, and each task's data
module run on a local copy written in that recorded schema (its layout, columns, feature types, class-label count
and known names, split names) through the same ``datasets.load_dataset`` call a run makes: the hub id, its
configuration and the pinned revision are checked, then the call reads the local copy."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import compose_job
from omegaconf import OmegaConf

from loldu.data.hub.catalog import HUB_DATASETS, HubDataset, check_hub_schema, hub_dataset

ROOT = Path(__file__).resolve().parents[1]
HUB_SOURCES = ("glue", "hub_image", "hub_text", "alpaca_hub")
SMALL = {"image": "model=tiny_vit", "text": "model=tiny_bert", "causal_lm": "model=tiny_llama"}


def _hub_tasks() -> dict[str, tuple[dict, HubDataset | None]]:
    tasks = {}
    for file in sorted((ROOT / "conf" / "task").glob("*.yaml")):
        raw = OmegaConf.to_container(OmegaConf.load(file))
        data = raw.get("data") or {}
        if data.get("source") in HUB_SOURCES:
            args = data.get("source_args") or {}
            path = args.get("path") or args.get("dataset") or "nyu-mll/glue"
            tasks[file.stem] = (raw, hub_dataset(path, args.get("task")))
    return tasks


HUB_TASKS = _hub_tasks()


def test_every_hub_task_is_pinned_to_its_catalogued_revision_and_agrees_with_the_record():
    assert len(HUB_TASKS) == 17  # 8 GLUE tasks, 8 image datasets, alpaca
    used = set()
    for task, (raw, entry) in HUB_TASKS.items():
        assert entry is not None, f"{task}: its hub id is not in loldu/data/hub/catalog.py"
        used.add((entry.path, entry.config))
        args = raw["data"]["source_args"]
        assert args["revision"] == entry.revision and re.fullmatch(r"[0-9a-f]{40}", entry.revision), task
        assert entry.evidence and entry.official, task  # where it was verified, and what its splits are
        if raw["data"]["source"] == "alpaca_hub":
            assert set(entry.features) == {"instruction", "input", "output"} and "train" in entry.splits
            continue
        assert raw["num_labels"] == (entry.num_classes or 1), task  # the config's classes = the dataset's
        label = args.get("label_column", "label")
        assert label == entry.label_column and entry.features[label] in ("class_label", "label", "float"), task
        if "image_column" in args:
            assert entry.features[args["image_column"]] == "image", task
        for key in ("validation_split", "test_split"):
            if args.get(key) not in (None, "auto"):
                assert args[key] in entry.splits, (task, key)
        test_split = args.get("test_split", "auto")
        if raw["data"]["source"] == "hub_image":
            assert test_split != "auto" or "test" in entry.splits, f"{task}: no test split would be carved from train"
    assert used == {(e.path, e.config) for e in HUB_DATASETS}, "a catalogue entry no task uses"


def test_the_official_splits_are_the_ones_recorded_where_the_count_was_verified():
    by = {(e.path, e.config): e for e in HUB_DATASETS}
    assert by["dpdl-benchmark/oxford_flowers102", None].splits == {"train": 1020, "validation": 1020, "test": 6149}
    assert by["tanganke/stanford_cars", None].splits == {"train": 8144, "test": 8041}
    assert by["uoft-cs/cifar100", "cifar100"].names[26] == "cra"  # the card's spelling, kept
    assert by["nyu-mll/glue", "mnli"].splits["validation_mismatched"] == 9832
    assert all(not e.path.startswith(("nelorth/", "HuggingFaceM4/")) for e in HUB_DATASETS)  # not official / a script


def _features(entry: HubDataset):
    from datasets import ClassLabel, Features, Image, Value

    kinds = {"image": Image(), "string": Value("string"), "float": Value("float32"), "int": Value("int32")}
    features = {}
    for column, kind in entry.features.items():
        if kind in ("class_label", "label"):
            count = entry.num_classes if column == entry.label_column else 2
            names = [
                entry.names.get(i, f"class_{i}") if column == entry.label_column else f"c{i}" for i in range(count)
            ]
            features[column] = ClassLabel(names=names)
        else:
            features[column] = kinds[kind]
    return Features(features)


def _rows(entry: HubDataset, features, count: int, offset: int) -> dict:
    from PIL import Image

    rows = {}
    for column in features:
        kind = entry.features[column]
        if kind == "image":
            rows[column] = [
                Image.new("RGB", (8, 8), ((offset + i) % 251, (offset + i) // 251, 90)) for i in range(count)
            ]
        elif kind == "string":
            rows[column] = [f"{column} text number {offset + i} about topic {i % 3}" for i in range(count)]
        elif kind == "float":
            rows[column] = [float(i % 5) for i in range(count)]
        elif kind == "int":
            rows[column] = list(range(offset, offset + count))
        else:
            rows[column] = [i % 2 for i in range(count)]  # two classes present in every split
    return rows


def write_local_copy(entry: HubDataset, root: Path, rows_per_split: int = 24) -> Path:
    """A local dataset repository in ``entry``'s schema and layout (a README declares the configuration where the
    hub's does), with ``rows_per_split`` rows in every recorded split."""
    from datasets import Dataset

    features = _features(entry) if entry.num_classes is not None or entry.features.get("label") == "float" else None
    for k, split in enumerate(entry.splits):
        target = root / entry.layout.format(config=entry.config, split=split)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.suffix == ".json":
            items = [{c: f"{c} {k}-{i}" for c in entry.features} for i in range(rows_per_split)]
            target.write_text(json.dumps(items))
            continue
        Dataset.from_dict(_rows(entry, features, rows_per_split, 1000 * k), features=features).to_parquet(target)
    if entry.config:
        files = "\n".join(
            f"  - split: {split}\n    path: {entry.layout.format(config=entry.config, split=split)}"
            for split in entry.splits
        )
        (root / "README.md").write_text(f"---\nconfigs:\n- config_name: {entry.config}\n  data_files:\n{files}\n---\n")
    return root


@pytest.mark.parametrize("task", sorted(HUB_TASKS))
def test_each_hub_task_reads_a_local_copy_of_its_pinned_schema_through_load_dataset(task, tmp_path, monkeypatch):
    import datasets

    from loldu.tasks import get_family

    raw, entry = HUB_TASKS[task]
    local = write_local_copy(entry, tmp_path / "repo")
    real_load, calls = datasets.load_dataset, []

    def hub(path, name=None, **kwargs):
        calls.append((path, name, kwargs.get("revision")))
        assert (path, kwargs.pop("revision")) == (entry.path, entry.revision), "the run asks for the pinned revision"
        return real_load(str(local), name, cache_dir=str(tmp_path / "cache"), **kwargs)  # no cache of another test

    monkeypatch.setattr(datasets, "load_dataset", hub)
    family = raw["family"]
    sizes = (
        ["++task.data.val_size=5"]
        if family == "causal_lm"
        else ["++task.data.val_fraction=5", "++task.data.test_fraction=5"]
    )
    cfg = compose_job(SMALL[family], f"task={task}", *sizes)
    datamodule = get_family(family).check_data(cfg)
    assert calls == [(entry.path, entry.config if entry.path == "nyu-mll/glue" else None, entry.revision)]
    sizes = {name: len(indices) for name, (_, indices) in datamodule.split_indices.items()}  # the planned splits
    assert sizes["train"] >= 5 and sizes["validation"] >= 5, sizes
    if family == "causal_lm":
        return
    assert sizes["test"] >= 5, sizes
    for split in entry.splits:  # a recorded split the task reads is read whole, not carved
        if split in (raw["data"]["source_args"].get("validation_split"), "test"):
            assert sizes["validation" if split != "test" else "test"] == 24, (split, sizes)
    if entry.num_classes:
        names = datamodule.parts["train"].features["label"].names
        assert len(names) == entry.num_classes == cfg.task.num_labels
        assert all(names[i] == name for i, name in entry.names.items())  # the hub's class order is kept


def test_a_loaded_revision_that_differs_from_its_record_is_refused(tmp_path, monkeypatch):
    import datasets

    entry = next(e for e in HUB_DATASETS if e.path == "tanganke/dtd")
    local = write_local_copy(entry, tmp_path / "repo")
    loaded = datasets.load_dataset(str(local), cache_dir=str(tmp_path / "cache"))
    check_hub_schema(loaded, entry.path, None, entry.revision)  # as recorded: passes
    check_hub_schema(loaded, "someone/else", None, entry.revision)  # not recorded: not checked
    check_hub_schema(datasets.DatasetDict(train=loaded["train"]), entry.path, None, "0" * 40)  # another revision
    with pytest.raises(ValueError, match=r"no split\(s\) \['test'\].*hub/catalog.py"):
        check_hub_schema(datasets.DatasetDict(train=loaded["train"]), entry.path, None, entry.revision)
    renamed = loaded.rename_column("label", "labels")
    with pytest.raises(ValueError, match=r"no column\(s\) \['label'\]"):
        check_hub_schema(renamed, entry.path, None, entry.revision)
    fewer = loaded.cast_column("label", datasets.ClassLabel(names=["a", "b"]))
    with pytest.raises(ValueError, match="has 2 classes, the record 47"):
        check_hub_schema(fewer, entry.path, None, entry.revision)
