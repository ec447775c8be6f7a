"""The Hugging Face Hub datasets the task configs name, each pinned to a revision, with the schema recorded beside it.

Every entry is a parquet (or JSON) revision with no loading script, so the pinned ``datasets`` (>= 4) reads it.
The hub was not reachable from the machines this project is built on, so none of these was loaded here: each fact
says where it was verified (public code that pins the same revision, the dataset card or the hub's own pages), and a
fact that was not verified is not recorded (a row count of ``None``, a class name left out of ``names``).
``tests/test_hub_sources.py`` builds a local dataset with each recorded schema and runs the task's data module on it
through the same ``datasets.load_dataset`` call a run makes (the hub id, its configuration and this revision).

When a run loads one of these ids at its recorded revision, :func:`check_hub_schema` compares what arrived with the
record (split names, columns, the label's class count) and refuses a mismatch, so a wrong record fails loudly
instead of training on the wrong column or split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class HubDataset:
    """One hub dataset (one configuration of it) at one revision.

    Attributes:
        path: the hub id.
        revision: the full commit SHA the task configs pin.
        config: the configuration name (GLUE's task), or None.
        splits: split name -> rows; None where the count was not verified.
        features: column -> kind: ``image``, ``string``, ``class_label``, ``float``, ``int``, or ``label`` (a label
            column whose type, class label or string, was not verified; the loaders take either).
        label_column: the column the task trains on.
        num_classes: the label's class count (None: regression).
        names: class names by index, as verified (all of them, or the ones that were seen).
        layout: how the repository stores a split: a path pattern with ``{config}`` and ``{split}``.
        evidence: where the revision and the schema were verified.
        official: how the splits relate to the dataset's official ones.
    """

    path: str
    revision: str
    splits: dict[str, int | None]
    features: dict[str, str]
    label_column: str
    num_classes: int | None
    names: dict[int, str] = field(default_factory=dict)
    config: str | None = None
    layout: str = "data/{split}-00000-of-00001.parquet"
    evidence: str = ""
    official: str = ""


GLUE_REVISION = "a3f3ab759b9d7018046ce361f115ef38276d2e1e"  # main, "Convert dataset to Parquet (#16)"
GLUE_EVIDENCE = (
    "revision: the hub's tree page of nyu-mll/glue at this commit (the parquet conversion merged to main; no public "
    "code pin found); schema and counts: huggingface/datasets' datasets/glue/dataset_infos.json and the conversion's "
    "README diffs"
)
#: GLUE configuration -> (text columns, label names or None for regression, split rows).
_GLUE = {
    "cola": (("sentence",), ("unacceptable", "acceptable"), {"train": 8551, "validation": 1043, "test": 1063}),
    "sst2": (("sentence",), ("negative", "positive"), {"train": 67349, "validation": 872, "test": 1821}),
    "mrpc": (
        ("sentence1", "sentence2"),
        ("not_equivalent", "equivalent"),
        {"train": 3668, "validation": 408, "test": 1725},
    ),
    "qqp": (
        ("question1", "question2"),
        ("not_duplicate", "duplicate"),
        {"train": 363846, "validation": 40430, "test": 390965},
    ),
    "stsb": (("sentence1", "sentence2"), None, {"train": 5749, "validation": 1500, "test": 1379}),
    "mnli": (
        ("premise", "hypothesis"),
        ("entailment", "neutral", "contradiction"),
        {
            "train": 392702,
            "validation_matched": 9815,
            "validation_mismatched": 9832,
            "test_matched": 9796,
            "test_mismatched": 9847,
        },
    ),
    "qnli": (
        ("question", "sentence"),
        ("entailment", "not_entailment"),
        {"train": 104743, "validation": 5463, "test": 5463},
    ),
    "rte": (
        ("sentence1", "sentence2"),
        ("entailment", "not_entailment"),
        {"train": 2490, "validation": 277, "test": 3000},
    ),
}


def _glue(task: str) -> HubDataset:
    columns, names, splits = _GLUE[task]
    features = {c: "string" for c in columns}
    features["label"] = "float" if names is None else "class_label"
    features["idx"] = "int"
    return HubDataset(
        path="nyu-mll/glue",
        revision=GLUE_REVISION,
        config=task,
        splits=splits,
        features=features,
        label_column="label",
        num_classes=None if names is None else len(names),
        names=dict(enumerate(names or ())),
        layout="{config}/{split}-00000-of-00001.parquet",
        evidence=GLUE_EVIDENCE,
        official="GLUE's own splits; test labels are hidden (-1), so the tasks test on validation",
    )


_MTEB = "embeddings-benchmark/mteb pins the same revision"
HUB_DATASETS: tuple[HubDataset, ...] = (
    *(_glue(task) for task in _GLUE),
    HubDataset(
        path="uoft-cs/cifar10",
        revision="0b2714987fa478483af9968de7c934580d0bb9a2",
        splits={"train": 50000, "test": 10000},
        features={"img": "image", "label": "class_label"},
        label_column="label",
        num_classes=10,
        names=dict(
            enumerate(("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"))
        ),
        config="plain_text",
        layout="plain_text/{split}-00000-of-00001.parquet",
        evidence=f"{_MTEB} (mteb/tasks/Image/ImageClassification/eng/CIFAR.py), as do five other public "
        "repositories; schema and counts: the dataset card and the TFDS community catalogue's huggingface:cifar10",
        official="the official 50,000 / 10,000",
    ),
    HubDataset(
        path="uoft-cs/cifar100",
        revision="aadb3af77e9048adbea6b47c21a81e47dd092ae5",
        splits={"train": 50000, "test": 10000},
        features={"img": "image", "fine_label": "class_label", "coarse_label": "class_label"},
        label_column="fine_label",
        num_classes=100,
        names={0: "apple", 1: "aquarium_fish", 2: "baby", 26: "cra", 98: "woman", 99: "worm"},  # 26: "cra", not crab
        config="cifar100",
        layout="cifar100/{split}-00000-of-00001.parquet",
        evidence=f"{_MTEB} (CIFAR.py), as does a second repository; schema: huggingface/datasets' cifar100 script "
        "(fine label 26 is spelled 'cra' there) and the TFDS community catalogue",
        official="the official 50,000 / 10,000",
    ),
    HubDataset(
        path="tanganke/dtd",
        revision="d2afa97d9f335b1a6b3b09c637aef667f98f966e",
        splits={"train": 3760, "test": 1880},
        features={"image": "image", "label": "class_label"},
        label_column="label",
        num_classes=47,
        names={0: "banded", 1: "blotchy", 2: "braided", 10: "dotted", 30: "polka-dotted", 46: "zigzagged"},
        evidence=f"{_MTEB} (DTDClassification.py): the merge of the parquet conversion, the loading script "
        "deleted; schema and counts: the dataset card (README.md at the conversion)",
        official="train = an official train + val pair (3,760), test = its test (1,880); no validation split",
    ),
    HubDataset(
        path="timm/eurosat-rgb",
        revision="b4e28552cd5f3932b6abc37eb20d3e84901ad728",
        splits={"train": 16200, "validation": 5400, "test": 5400},
        features={"image": "image", "label": "class_label", "image_id": "string"},
        label_column="label",
        num_classes=10,
        names={0: "AnnualCrop", 9: "SeaLake"},
        evidence=f"{_MTEB} (EuroSATClassification.py); schema and counts: the dataset card",
        official="EuroSAT has no official split; this is google-research's remote_sensing_representations split "
        "(16,200 / 5,400 / 5,400), which has a validation split",
    ),
    HubDataset(
        path="tanganke/stanford_cars",
        revision="9abf6cf7d6dfa7b95152a0d6e791ea9435b47a40",
        splits={"train": 8144, "test": 8041},
        features={"image": "image", "label": "class_label"},
        label_column="label",
        num_classes=196,
        names={0: "AM General Hummer SUV 2000", 1: "Acura RL Sedan 2012"},
        evidence="one public project pins this revision in many files and checks 16,185 images with labels 0-195; "
        "schema: the hub's dataset viewer (it also lists seven corruption splits of the test set, not used here)",
        official="the official 8,144 / 8,041; no validation split",
    ),
    HubDataset(
        path="mteb/FGVCAircraft",
        revision="3ae0e4e94e37c610c26df758ec3255fa90d80e67",
        splits={"train": None, "validation": None, "test": None},
        features={"image": "image", "variant": "label"},
        label_column="variant",
        num_classes=100,
        evidence=f"{_MTEB} (FGVCAircraftClassification.py, image column 'image', label column 'variant'); the "
        "viewer shows about 3.33k rows per split. HuggingFaceM4/FGVC-Aircraft is a loading script on main, which "
        "datasets >= 4 refuses",
        official="the official train / val / test (3,334 / 3,333 / 3,333 in the dataset's release; the counts "
        "here were seen rounded)",
    ),
    HubDataset(
        path="dpdl-benchmark/oxford_flowers102",
        revision="544b55c9af69a05742ead7571cd7ae23cfcd758b",
        splits={"train": 1020, "validation": 1020, "test": 6149},
        features={"image": "image", "label": "class_label"},
        label_column="label",
        num_classes=102,
        names={0: "pink primrose", 1: "hard-leaved pocket orchid", 2: "canterbury bells", 3: "sweet pea"},
        layout="data/{split}-00000-of-00001.parquet",
        evidence="the hub's tree page at this revision (its only data commit) and the dataset card; no public "
        "code pin found. nelorth/oxford-flowers (the earlier choice) has 7,169 / 1,020 rows and labels named by "
        "folder number in text order: not the official split",
        official="the official 1,020 / 1,020 / 6,149",
    ),
    HubDataset(
        path="timm/oxford-iiit-pet",
        revision="10b688881011725fa2fa3d856a47536c9a7e6968",
        splits={"train": None, "test": None},
        features={"image": "image", "label": "class_label", "image_id": "string", "label_cat_dog": "class_label"},
        label_column="label",
        num_classes=37,
        names={0: "abyssinian", 1: "american_bulldog", 2: "american_pit_bull_terrier", 36: "yorkshire_terrier"},
        evidence="the hub's tree and commit pages (the data upload; later commits change the README only) and the "
        "dataset card at it; no public code pin found",
        official="the card says the standard train / test split (3,680 / 3,669); the counts were not seen",
    ),
    HubDataset(
        path="yahma/alpaca-cleaned",
        revision="12567cabf869d7c92e573c7c783905fc160e9639",
        splits={"train": 51760},
        features={"instruction": "string", "input": "string", "output": "string"},
        label_column="output",
        num_classes=None,
        layout="alpaca_data_cleaned.json",
        evidence="pinned by at least six public repositories; one JSON file, no script",
        official="one train split; the task holds 2,000 examples out for validation",
    ),
)


def hub_dataset(path: str, config: str | None = None) -> HubDataset | None:
    """The catalogue's entry for a hub id and configuration (None: the id's only configuration, as
    ``datasets.load_dataset`` picks it), or None for one it does not record."""
    entries = [e for e in HUB_DATASETS if e.path == path and (config is None or e.config == config)]
    return entries[0] if len(entries) == 1 else None


def check_hub_schema(loaded: Any, path: str, config: str | None, revision: str | None) -> None:
    """Compares a ``DatasetDict`` loaded from ``path`` at ``revision`` with the catalogue's record of it: every
    recorded split and column present, and the label's class count as recorded. Nothing is checked for an id, or a
    revision, the catalogue does not record (a local copy, another revision the user chose).

    Raises:
        ValueError: the data differs from the record; the message says what and where the record lives.
    """
    entry = hub_dataset(path, config)
    if entry is None or revision != entry.revision:
        return
    where = f"{path!r}" + (f" ({config})" if config else "") + f" at revision {revision}"
    fix = (
        "The record in loldu/data/hub/catalog.py is wrong or the hub rewrote this revision: check the dataset card, "
        "fix the record (or pin another revision in the task config's source_args.revision)."
    )
    missing = sorted(set(entry.splits) - set(loaded))
    if missing:
        raise ValueError(f"{where} has no split(s) {missing}; it has {sorted(loaded)}. {fix}")
    for split in entry.splits:
        columns = loaded[split].column_names
        absent = [c for c in entry.features if c not in columns]
        if absent:
            raise ValueError(f"{where} split {split!r} has no column(s) {absent}; its columns are {columns}. {fix}")
        names = getattr(loaded[split].features.get(entry.label_column), "names", None)
        if names is not None and entry.num_classes is not None and len(names) != entry.num_classes:
            raise ValueError(
                f"{where}: the label column {entry.label_column!r} has {len(names)} classes, the record "
                f"{entry.num_classes}. {fix}"
            )
