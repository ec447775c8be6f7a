"""The one progress bar of long steps (decomposing layers, sampling images, evaluating): it appears only once a
step has run a few seconds and is gone when it ends, so quick steps and tests print nothing. Plain tqdm; the method
library uses it, and so do the task families and the evaluation commands above it.
"""

from __future__ import annotations

from collections.abc import Iterable

from tqdm.auto import tqdm

DELAY_S = 2.0  # a bar appears only for a step that runs longer than this


def progress(iterable: Iterable, desc: str, total: int | None = None, unit: str = "it", **kwargs) -> Iterable:
    """``iterable`` with a progress bar on stderr that appears only once the step has run a few seconds, and
    disappears when it is done (``leave=False``): quick steps and tests print nothing.

    Args:
        iterable: what to iterate over.
        desc: what the step does (the bar's label).
        total: the number of items where ``len(iterable)`` does not give it.
        unit: what one item is (``layer``, ``image``, ``batch``).
        **kwargs: further :class:`tqdm.tqdm` arguments (e.g. ``leave=True``).
    """
    options = {"delay": DELAY_S, "leave": False, "dynamic_ncols": True, **kwargs}
    return tqdm(iterable, desc=desc, total=total, unit=unit, **options)
