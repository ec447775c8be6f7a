"""The studies' paired intervals: Student-t quantiles, the interval of known differences, and the text the
summaries print (a gap whose interval includes 0 is not marked as separating the two)."""

from __future__ import annotations

import math

import pytest

from loldu.sweeps.stats import T975, mean_std_text, paired_gap_text, paired_interval


def test_t_quantiles_are_student_t():
    stats = pytest.importorskip("scipy.stats")
    for dof, quantile in T975.items():
        assert quantile == pytest.approx(stats.t.ppf(0.975, dof), abs=5e-4), dof


def test_interval_of_known_differences():
    # mean 2, sample std 1, 3 pairs: half-width t(0.975, 2) / sqrt(3)
    mean, low, high = paired_interval([1.0, 2.0, 3.0])
    half = 4.303 / math.sqrt(3)
    assert (mean, low, high) == pytest.approx((2.0, 2.0 - half, 2.0 + half))
    with pytest.raises(ValueError, match="needs 2 to 11"):
        paired_interval([1.0])


def _runs(accs: dict[int, float]) -> dict[int, dict]:
    return {seed: {"test/acc": acc} for seed, acc in accs.items()}


def test_gap_text_marks_only_an_interval_that_excludes_zero():
    ref = _runs({0: 0.70, 1: 0.72, 2: 0.71})
    separated = _runs({0: 0.75, 1: 0.77, 2: 0.765})  # +5.0, +5.0, +5.5 points
    assert paired_gap_text(separated, ref).endswith(" *") and paired_gap_text(separated, ref).startswith("+5.2 [")
    noisy = _runs({0: 0.75, 1: 0.69, 2: 0.73})  # +5, -3, +2 points
    assert paired_gap_text(noisy, ref) == "+1.3 [-8.7, +11.4]"
    assert paired_gap_text(_runs({0: 0.8, 5: 0.8}), ref) == "n/a", "one common seed is no interval"
    assert mean_std_text([0.70, 0.72, 0.71]) == "71.0 ± 1.0" and mean_std_text([0.7]) == "n/a"
