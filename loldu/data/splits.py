"""Seeded, deterministic train/validation/test splits.

Every split is a pair ``(part, indices)``: the source part it is drawn from and sorted indices into it. Splits a source
does not provide are carved from its ``"train"`` part (``val_fraction`` / ``test_fraction`` of that part, stratified by
class when labels are given), so carved splits never overlap. ``limit_train`` / ``limit_eval`` keep a seeded,
class-balanced prefix of each split.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

import numpy as np

from .base import SPLITS


def _rng(seed: int, name: str) -> np.random.Generator:
    # One independent stream per (seed, split name), stable across runs and Python versions.
    return np.random.default_rng([int(seed), zlib.crc32(name.encode())])


def stratified_order(n: int, labels: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """A random order of ``range(n)`` in which every prefix holds the classes in about their overall proportions.

    Each example gets the position ``(rank within its class + u) / class size`` (random ranks, u ~ U[0, 1)), and
    examples are sorted by it, so classes interleave evenly. Without labels this is a plain permutation.

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


def _carve_count(fraction: float, n: int, key: str) -> int:
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"{key} must be in (0, 1) to carve a split from the training data; got {fraction}.")
    return max(1, int(round(fraction * n)))


def plan_splits(
    sizes: Mapping[str, int],
    labels: Mapping[str, np.ndarray | None],
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> dict[str, tuple[str, np.ndarray]]:
    """Decides the train/validation/test (and extra test) splits of a source's parts.

    Args:
        sizes: Part name -> number of examples; must contain ``"train"``.
        labels: Part name -> class labels for stratification (None: no stratification).
        seed: Seed of every random choice.
        val_fraction: Fraction of the train part carved into validation when the source has no validation part.
        test_fraction: Fraction of the train part carved into test when the source has no test part.

    Returns:
        Split name -> (part name, int64 indices into that part in seeded, class-balanced order; see
        :func:`limit_splits`). Keys: train, validation, test, then the extra parts.

    Raises:
        ValueError: No train part, bad fractions, or too few examples to carve the missing splits.
    """
    if "train" not in sizes:
        raise ValueError(f"A source must provide a 'train' part; it gave {sorted(sizes)}.")
    n = int(sizes["train"])
    order = stratified_order(n, labels.get("train"), _rng(seed, "train"))
    plan: dict[str, tuple[str, np.ndarray]] = {}
    start = 0
    carve = (("test", test_fraction, "test_fraction"), ("validation", val_fraction, "val_fraction"))
    for split, fraction, key in carve:
        if split in sizes:
            continue
        count = _carve_count(fraction, n, key)
        plan[split] = ("train", order[start : start + count])
        start += count
    if start >= n:
        raise ValueError(
            f"The train part has {n} examples: too few to carve validation/test splits "
            f"(val_fraction={val_fraction}, test_fraction={test_fraction}) and keep training data."
        )
    plan["train"] = ("train", order[start:])
    for part, size in sizes.items():
        if part != "train":
            plan[part] = (part, stratified_order(int(size), labels.get(part), _rng(seed, part)))
    return {name: plan[name] for name in (*SPLITS, *(p for p in plan if p not in SPLITS))}


def limit_splits(
    plan: Mapping[str, tuple[str, np.ndarray]],
    limit_train: int | None = None,
    limit_eval: int | None = None,
) -> dict[str, tuple[str, np.ndarray]]:
    """Caps split sizes (keeping each split's seeded, class-balanced prefix) and sorts the indices.

    Args:
        plan: Output of :func:`plan_splits` (indices still in seeded order).
        limit_train: Maximum number of training examples, or None.
        limit_eval: Maximum number of examples of every other split, or None.

    Returns:
        Split name -> (part name, sorted indices).

    Raises:
        ValueError: A limit below 1.
    """
    out = {}
    for name, (part, indices) in plan.items():
        limit = limit_train if name == "train" else limit_eval
        if limit is not None:
            if int(limit) < 1:
                raise ValueError(f"{'limit_train' if name == 'train' else 'limit_eval'} must be >= 1; got {limit}.")
            indices = indices[: int(limit)]
        out[name] = (part, np.sort(indices))
    return out


def make_splits(
    sizes: Mapping[str, int],
    labels: Mapping[str, np.ndarray | None],
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    limit_train: int | None = None,
    limit_eval: int | None = None,
) -> dict[str, tuple[str, np.ndarray]]:
    """:func:`plan_splits` followed by :func:`limit_splits`.

    Args:
        sizes: Part name -> number of examples.
        labels: Part name -> class labels or None.
        seed: Seed of every random choice.
        val_fraction: Fraction of train carved into validation when missing.
        test_fraction: Fraction of train carved into test when missing.
        limit_train: Cap on training examples.
        limit_eval: Cap on examples of each evaluation split.

    Returns:
        Split name -> (part name, sorted indices).
    """
    plan = plan_splits(sizes, labels, seed, val_fraction, test_fraction)
    return limit_splits(plan, limit_train, limit_eval)
