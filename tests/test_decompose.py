"""The LU and SVD factorisations: exactness, rank deficiency, replay, fixed values."""

from __future__ import annotations

import pytest
import torch

from loldu.methods.decompose import fingerprint, lu_factors, same_base, svd_factors


def _product(f):
    return (f.left * f.d) @ f.right


@pytest.mark.parametrize("shape", [(9, 6), (6, 9), (7, 7)])
def test_full_rank_reconstruction_is_exact(shape):
    torch.manual_seed(0)
    w = torch.randn(*shape, dtype=torch.float64)
    f = lu_factors(w, min(shape), dtype=torch.float64)
    torch.testing.assert_close(_product(f), w, rtol=0, atol=1e-12)
    # Unit triangular factors, in the permuted order: L has ones on its diagonal,
    # partial pivoting keeps |L| <= 1.
    lo = f.left[f.row_order]
    up = f.right[:, f.col_order]
    torch.testing.assert_close(torch.diagonal(lo), torch.ones(min(shape), dtype=w.dtype))
    torch.testing.assert_close(torch.diagonal(up), torch.ones(min(shape), dtype=w.dtype))
    assert torch.equal(torch.triu(lo, 1), torch.zeros_like(lo))
    assert torch.equal(torch.tril(up, -1), torch.zeros_like(up))
    assert lo.abs().max() <= 1.0


def test_pivots_match_lapack_partial_pivoting():
    torch.manual_seed(1)
    w = torch.randn(8, 8, dtype=torch.float64)
    _, _, u = torch.linalg.lu(w)
    f = lu_factors(w, 8, dtype=torch.float64)
    torch.testing.assert_close(f.d, torch.diagonal(u), rtol=1e-12, atol=1e-12)


def test_kept_part_is_exact_for_truncated_rank():
    torch.manual_seed(2)
    w = torch.randn(10, 8, dtype=torch.float64)
    r = 3
    f = lu_factors(w, r, dtype=torch.float64)
    # What is left over is the Schur complement: zero on the first r pivot rows
    # and pivot columns.
    rest = (w - _product(f))[f.row_order][:, f.col_order]
    assert rest[:r].abs().max() < 1e-12
    assert rest[:, :r].abs().max() < 1e-12
    assert rest[r:, r:].abs().max() > 1e-3
    assert f.left.shape == (10, r) and f.right.shape == (r, 8) and f.d.shape == (r,)


RANK_DEFICIENT = {
    "zero_first_column": torch.tensor([[0.0, 1, 2], [0, 3, 4], [0, 5, 6], [0, 7, 9]]),
    "duplicate_rows": torch.tensor([[1.0, 2, 3], [1, 2, 3], [2, 0, 1]]),
    "rank_two_integer": torch.tensor([[1.0, 2, 3, 4], [2, 4, 6, 8], [1, 0, 1, 0], [3, 4, 7, 8]]),
    "all_zero": torch.zeros(5, 4),
}


@pytest.mark.parametrize("name", list(RANK_DEFICIENT))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rank_deficient_weights_stay_finite_and_exact(name, dtype):
    w = RANK_DEFICIENT[name]
    r = min(w.shape)
    f = lu_factors(w, r, dtype=dtype)
    for t in (f.left, f.d, f.right):
        assert torch.isfinite(t).all()
    torch.testing.assert_close(_product(f).float(), w, rtol=0, atol=1e-6)
    assert (f.d == 0).any(), "a rank-deficient weight has a zero pivot"
    # Every kept direction is a real (non-zero) rank-one direction, so each z
    # entry can still be trained.
    assert (f.left.abs().sum(0) > 0).all() and (f.right.abs().sum(1) > 0).all()


def test_all_zero_weight_keeps_trainable_unit_directions():
    f = lu_factors(torch.zeros(3, 3), 3)
    torch.testing.assert_close(f.left, torch.eye(3))
    torch.testing.assert_close(f.right, torch.eye(3))
    assert torch.equal(f.d, torch.zeros(3))


def test_replay_is_bit_exact_and_checks_orders():
    torch.manual_seed(3)
    w = torch.randn(12, 9)
    f = lu_factors(w, 5)
    g = lu_factors(w, 5, row_order=f.row_order, col_order=f.col_order)
    assert torch.equal(f.left, g.left) and torch.equal(f.right, g.right) and torch.equal(f.d, g.d)
    with pytest.raises(ValueError, match="not a permutation"):
        lu_factors(w, 5, row_order=torch.zeros(12, dtype=torch.long), col_order=f.col_order)


def test_ties_are_broken_by_first_index_and_replay_follows_the_saved_order():
    # |1| and |-1| tie in the first column: the first row is the pivot.
    w = torch.tensor([[1.0, 2.0], [-1.0, 3.0]])
    f = lu_factors(w, 2, dtype=torch.float64)
    assert f.row_order.tolist() == [0, 1]
    # Another library could have picked row 1: replaying that order gives
    # different but equally exact factors, so the order must travel with z.
    g = lu_factors(w, 2, dtype=torch.float64, row_order=torch.tensor([1, 0]), col_order=torch.tensor([0, 1]))
    assert not torch.allclose(f.d, g.d)
    torch.testing.assert_close(_product(g).float(), w)


def test_hand_computed_factors():
    # W = [[2, 1], [4, 3]]: partial pivoting takes row 1 (|4| > |2|), so
    # L = [[1, 0], [0.5, 1]], U = [[4, 3], [0, -0.5]], D = [4, -0.5], U' = [[1, 0.75], [0, 1]].
    w = torch.tensor([[2.0, 1.0], [4.0, 3.0]])
    f = lu_factors(w, 2, dtype=torch.float64)
    assert f.row_order.tolist() == [1, 0]
    torch.testing.assert_close(f.d, torch.tensor([4.0, -0.5], dtype=torch.float64))
    torch.testing.assert_close(f.left, torch.tensor([[0.5, 1.0], [1.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(f.right, torch.tensor([[1.0, 0.75], [0.0, 1.0]], dtype=torch.float64))


def test_seeded_regression_values():
    # Stored values from this implementation (seed 0, 4x3, r=2); the hand test
    # above and the LAPACK comparison check that they are right.
    torch.manual_seed(0)
    w = torch.randn(4, 3, dtype=torch.float64)
    f = lu_factors(w, 2, dtype=torch.float64)
    assert f.row_order.tolist()[:2] == EXPECTED_LU["rows"]
    torch.testing.assert_close(f.d, torch.tensor(EXPECTED_LU["d"], dtype=torch.float64), rtol=0, atol=1e-6)
    s = svd_factors(w, 2, dtype=torch.float64)
    torch.testing.assert_close(s.d, torch.tensor(EXPECTED_SVD, dtype=torch.float64), rtol=0, atol=1e-6)
    torch.testing.assert_close(s.d, torch.linalg.svdvals(w)[:2])


EXPECTED_LU = {"rows": [0, 1], "d": [1.540996, -0.976284]}
EXPECTED_SVD = [3.224541, 1.453656]


def test_svd_factors_are_the_top_singular_triplets():
    torch.manual_seed(4)
    w = torch.randn(9, 6)
    f = svd_factors(w, 6)
    torch.testing.assert_close(_product(f), w, rtol=0, atol=1e-5)
    top = svd_factors(w, 2)
    assert (top.d[:-1] >= top.d[1:]).all()
    torch.testing.assert_close(top.left.T @ top.left, torch.eye(2), rtol=0, atol=1e-5)
    low = svd_factors(w, 2, method="lowrank", niter=6)
    torch.testing.assert_close(low.d, top.d, rtol=1e-3, atol=1e-4)
    again = svd_factors(w, 2, method="lowrank", niter=6)
    assert torch.equal(low.left, again.left), "the randomized SVD is seeded"


def test_hand_computed_svd():
    f = svd_factors(torch.tensor([[0.0, 2.0], [3.0, 0.0]]), 1)
    torch.testing.assert_close(f.d, torch.tensor([3.0]))
    torch.testing.assert_close(f.left, torch.tensor([[0.0], [1.0]]))
    torch.testing.assert_close(f.right, torch.tensor([[1.0, 0.0]]))


@pytest.mark.parametrize("fn", [lu_factors, svd_factors])
@pytest.mark.parametrize("r", [0, 5, -1])
def test_bad_rank_is_refused(fn, r):
    with pytest.raises(ValueError, match=r"min\(out, in\)"):
        fn(torch.randn(4, 6), r)


def test_fingerprint_tells_bases_apart_but_survives_a_dtype_cast():
    torch.manual_seed(5)
    w = torch.randn(32, 16)
    assert same_base(fingerprint(w), fingerprint(w))
    assert same_base(fingerprint(w), fingerprint(w.to(torch.bfloat16)))
    assert not same_base(fingerprint(w), fingerprint(torch.randn(32, 16)))
    assert not same_base(fingerprint(w), fingerprint(w + 0.1 * torch.randn(32, 16)))
