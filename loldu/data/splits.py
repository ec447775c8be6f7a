"""The one splitter of every data module: seeded, disjoint train/validation/test splits.

Examples are split as *units*: single examples, or groups (e.g. all examples sharing a prompt, so that no
validation prompt is also a training prompt). The units are put in a seeded order (stratified by class when
labels are given: every prefix holds the classes in about their overall proportions), then the held-out splits are
filled in turn, each until it holds its count, and the rest is train. ``limit`` caps keep a prefix of each split,
so a limited split is a seeded, class-balanced subset of the full one.
"""

from __future__ import annotations

import numbers
import zlib
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

MIN_SPLIT_SIZE = 5  # fewest rows of a labelled split: fewer make accuracy a coin toss (1.000 from one example)


def split_rng(seed: int, name: str) -> np.random.Generator:
    """One independent random stream per (seed, name), stable across runs and Python versions."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode())])


def stratified_order(n: int, labels: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """A random order of ``range(n)`` in which every prefix holds the classes in about their overall proportions.

    Each example gets the position ``(rank within its class + u) / class size`` (random ranks, u ~ U[0, 1)), and
    examples are sorted by it, so classes interleave evenly. Without labels this is ``rng.permutation(n)``.

    Args:
        n: Number of examples.
        labels: Class index of each example, or None (regression / unknown).
        rng: The random generator.

    Returns:
        The order, an int64 array of length n.
    """
    if labels is None:
        return rng.permutation(n).astype(np.int64)
    labels = np.asarray(labels)
    position = np.empty(n, dtype=np.float64)
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        ranks = rng.permutation(len(members))
        position[members] = (ranks + rng.random(len(members))) / len(members)
    return np.argsort(position, kind="stable").astype(np.int64)


def check_size(value: Any, key: str) -> int | float:
    """Checks a held-out split size: a count (int >= 0) or a fraction in (0, 1).

    Raises:
        ValueError: Anything else (booleans, negative counts, fractions outside (0, 1)); names ``key``.
    """
    message = f"{key} must be a count (int >= 0) or a fraction in (0, 1); got {value!r}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{message}.")
    if isinstance(value, numbers.Integral):
        if value < 0:
            raise ValueError(f"{message}.")
        return int(value)
    if not 0.0 < float(value) < 1.0:
        raise ValueError(f"{message} (write a count without a decimal point).")
    return float(value)


def size_count(size: int | float, n: int) -> int:
    """The number of examples a checked size means out of ``n`` (a fraction keeps at least one)."""
    return max(1, int(round(size * n))) if isinstance(size, float) else int(size)


def group_units(keys: Sequence[Hashable]) -> list[np.ndarray]:
    """Groups example positions by key, in order of first appearance (the units of a grouped split)."""
    groups: dict[Hashable, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return [np.asarray(members, dtype=np.int64) for members in groups.values()]


def split(
    n: int,
    held_out: Mapping[str, int | float],
    rng: np.random.Generator,
    labels: np.ndarray | None = None,
    groups: Sequence[np.ndarray] | None = None,
    what: str = "The data",
    keys: Mapping[str, str] | None = None,
) -> dict[str, np.ndarray]:
    """Splits ``range(n)`` into the held-out splits (filled in the given order) and ``"train"`` (the rest).

    Args:
        n: Number of examples.
        held_out: Split name -> size (see :func:`check_size`; the key names the size in messages), in fill order.
        rng: The random generator (the only source of randomness).
        labels: Class of each example to stratify by (ignored with ``groups``), or None.
        groups: Units of examples kept together (see :func:`group_units`); None: every example is its own unit.
            A split then holds its count to within one group.
        what: Names the data in messages.
        keys: Split name -> the setting that sized it, for messages (default: the split name).

    Returns:
        Split name -> int64 positions in the seeded order; ``"train"`` last.

    Raises:
        ValueError: The held-out splits leave no training data.
    """
    counts = {name: size_count(size, n) for name, size in held_out.items()}
    if groups is None:
        order = stratified_order(n, labels, rng)
        out, start = {}, 0
        for name, count in counts.items():
            out[name], start = order[start : start + count], start + count
        out["train"] = order[start:]
    else:
        filled: dict[str, list[np.ndarray]] = {name: [] for name in (*counts, "train")}
        sizes = dict.fromkeys(filled, 0)
        for unit in stratified_order(len(groups), None, rng):
            name = next((k for k, c in counts.items() if sizes[k] < c), "train")
            filled[name].append(groups[unit])
            sizes[name] += len(groups[unit])
        out = {k: np.concatenate(v) if v else np.zeros(0, dtype=np.int64) for k, v in filled.items()}
    if len(out["train"]) == 0:
        names = {k: (keys or {}).get(k, k) for k in counts}
        asked = " and ".join(f"{names[k]}={held_out[k]} ({counts[k]})" for k in counts)
        raise ValueError(
            f"{what} has {n} examples: {asked} leave none for training; lower {'/'.join(names.values())}"
            + ("" if groups is None else f" (the examples form {len(groups)} groups, split whole)")
            + "."
        )
    return out


def limit(indices: np.ndarray, cap: int | None) -> np.ndarray:
    """The first ``cap`` positions of a split (its seeded, class-balanced prefix), or all when ``cap`` is None."""
    return indices if cap is None else indices[: int(cap)]


def check_count(value: Any, key: str, minimum: int = 1, what: str = "an int") -> int:
    """Checks an integer setting (batch size, workers, caps...) and returns it as an int; the message names ``key``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{key} must be {what} >= {minimum}; got {value!r}.")
    return int(value)


def check_limit(value: Any, key: str) -> int | None:
    """Checks a cap on a split's size: None or an int >= 1 (``key`` names it in the message)."""
    return None if value is None else check_count(value, key, what="None or an int")


def check_classes(labels: np.ndarray, names: Sequence[str], where: str, fix: str = "") -> None:
    """Refuses classification training labels with fewer than two distinct classes.

    Args:
        labels: Class index of every training example.
        names: The class names.
        where: Names the data (a file, a folder, a source).
        fix: What else the user may have meant (e.g. how to ask for regression), appended to the message.

    Raises:
        ValueError: One class (or none) in ``labels``.
    """
    present = [names[int(i)] for i in np.unique(labels)]
    if len(present) < 2:
        found = ", ".join(repr(name) for name in present)
        raise ValueError(f"classification needs at least 2 classes; found {len(present)} ({found}) in {where}{fix}")


def split_size_message(
    small: Mapping[str, int],
    plan: Mapping[str, tuple[str, np.ndarray]],
    minimum: int,
    size_keys: Mapping[str, str],
    where: str,
) -> str:
    """The message refusing splits smaller than ``minimum`` rows, naming the keys that change them.

    Args:
        small: Split name -> its row count, for the splits under the minimum.
        plan: Split name -> (source part, indices): a split whose part is ``"train"`` was carved from train.
        minimum: The minimum rows per split (``task.data.min_split_size``).
        size_keys: Carved split -> the setting that sizes it.
        where: Names the data.

    Returns:
        The message.
    """
    sizes = ", ".join(f"{name} {count}" for name, count in small.items())
    carved = [name for name in plan if name != "train" and plan[name][0] == "train"]
    total = sum(len(indices) for part, indices in plan.values() if part == "train")
    needed = minimum * (1 + len(carved))
    fixes = []
    if total < needed:
        fixes.append(
            f"add rows to the training data (it has {total}; train and {len(carved)} carved split(s) need {needed})"
        )
    else:
        keys = [f"task.data.{size_keys.get(name, name)}" for name in carved]
        resize = [f"{key}={minimum}" for name, key in zip(carved, keys) if name in small]
        if resize:
            fixes.append(f"size the carved split(s) as counts: {' '.join(resize)}")
        if "train" in small:
            fixes.append(f"lower {' / '.join(keys)}")
    fixes += [
        f"put at least {minimum} rows in the source's {name} part" for name in small if name not in carved + ["train"]
    ]
    return (
        f"{where}: too few rows per split to train and evaluate on ({sizes}); every split needs at least {minimum} "
        f"rows (task.data.min_split_size={minimum}), or its metrics come from a handful of examples. "
        f"To fix: {'; '.join(fixes)} (or, knowingly, lower task.data.min_split_size)."
    )
