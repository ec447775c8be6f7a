"""The LU's two search paths (LAPACK, exact fallback) and its replay of saved orders."""

from __future__ import annotations

import pytest
import torch

from loldu.methods.decompose import factors as decompose
from loldu.methods.decompose import lu as lu_kernels
from loldu.methods.decompose import lu_factors


def _product(f):
    return (f.left * f.d) @ f.right


def _same_bits(f, g):
    return all(torch.equal(x, y) for x, y in zip((f.left, f.d, f.right), (g.left, g.d, g.right), strict=True))


def _rank_deficient():
    # Old-code fixture: a zero column (the old search swapped column 4 in) and a
    # dependent row (row 4 = row 0 + row 2), rank 4.
    return torch.tensor(
        [
            [2.0, 0, 3, -2, -2],
            [1, 0, -2, 0, 0],
            [0, 0, -1, -2, -1],
            [-2, 0, 0, -1, -2],
            [2, 0, 2, -4, -3],
            [-1, 0, 0, 0, 0],
        ],
        dtype=torch.float64,
    )


def _forbid(monkeypatch, name):
    def fail(*args, **kwargs):
        raise AssertionError(f"{name} should not run here")

    monkeypatch.setattr(lu_kernels, name, fail)


def test_full_rank_weight_takes_the_lapack_path(monkeypatch):
    _forbid(monkeypatch, "crout_search")
    torch.manual_seed(0)
    w = torch.randn(40, 30, dtype=torch.float64)
    f = lu_factors(w, 12, dtype=torch.float64)
    # The same pivots as LAPACK's full LU, and the kept part is exact.
    _, _, u = torch.linalg.lu(w)
    torch.testing.assert_close(f.d, torch.diagonal(u)[:12], rtol=1e-12, atol=1e-12)
    rest = (w - _product(f))[f.row_order][:, f.col_order]
    assert rest[:12].abs().max() < 1e-12 and rest[:, :12].abs().max() < 1e-12
    assert torch.equal(f.col_order, torch.arange(30))


def test_zero_pivot_takes_the_exact_fallback_path(monkeypatch):
    w = _rank_deficient()
    tol = float(w.abs().max()) * 6 * torch.finfo(w.dtype).eps
    assert lu_kernels.lapack_search(w, 5, tol) is None, "LAPACK meets the zero column: it must give up"
    calls = []
    real = lu_kernels.crout_search
    monkeypatch.setattr(lu_kernels, "crout_search", lambda *a: calls.append(1) or real(*a))
    f = lu_factors(w, 5, dtype=torch.float64)
    assert calls == [1]
    torch.testing.assert_close(_product(f), w, rtol=0, atol=1e-12)
    assert f.col_order.tolist() == [0, 4, 2, 3, 1], "the zero column was swapped out"


@pytest.mark.parametrize("rank_deficient", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_creation_and_replay_give_identical_bits(rank_deficient, dtype):
    torch.manual_seed(1)
    w = _rank_deficient() if rank_deficient else torch.randn(50, 70, dtype=torch.float64)
    r = 5 if rank_deficient else 33
    f = lu_factors(w, r, dtype=dtype)
    # Saved as int32 (the adapter file's dtype) and replayed.
    g = lu_factors(w, r, dtype=dtype, row_order=f.row_order.int(), col_order=f.col_order.int())
    assert _same_bits(f, g)


def test_an_order_saved_by_the_old_code_still_replays():
    # Row/column orders and pivots written by the previous (Crout-only) lu_factors.
    torch.manual_seed(11)
    w = torch.randn(7, 6)
    rows = torch.tensor([3, 0, 2, 6, 4, 5, 1], dtype=torch.int32)
    old_d = torch.tensor([-1.6394644975662231, 1.524446964263916, -1.623321533203125, -1.125527024269104])
    f = lu_factors(w, 4, row_order=rows, col_order=torch.arange(6, dtype=torch.int32))
    torch.testing.assert_close(f.d, old_d, rtol=1e-5, atol=1e-6)
    # And the old code's column swap of a rank-deficient weight.
    w = _rank_deficient()
    g = lu_factors(w, 5, dtype=torch.float64, row_order=[0, 3, 1, 2, 4, 5], col_order=[0, 4, 2, 3, 1])
    torch.testing.assert_close(g.d, torch.tensor([2.0, -4.0, -2.75, -1.4090909090909092, 0.0], dtype=torch.float64))
    torch.testing.assert_close(_product(g), w, rtol=0, atol=1e-12)


def test_foreign_order_is_rebuilt_by_the_unpivoted_lu(monkeypatch):
    # An order the local search would not pick (rows reversed) is rebuilt by
    # lu_from_order: exact, with pivots that LAPACK would have swapped taken by hand.
    torch.manual_seed(2)
    w = torch.randn(30, 20, dtype=torch.float64)
    rows, cols = torch.arange(30).flip(0), torch.randperm(20)
    f = lu_factors(w, 20, dtype=torch.float64, row_order=rows, col_order=cols)
    assert torch.equal(f.row_order, rows) and torch.equal(f.col_order, cols)
    torch.testing.assert_close(_product(f), w, rtol=0, atol=1e-10)
    lo = f.left[rows]
    assert torch.equal(torch.triu(lo, 1), torch.zeros_like(lo))
    assert lo.abs().max() > 1, "not a partial-pivoting order, so |L| exceeds 1"


@pytest.mark.parametrize("block", [4, 7, 256])
def test_blocked_rebuild_matches_the_exact_elimination(block):
    torch.manual_seed(3)
    w = torch.randn(45, 38, dtype=torch.float64)
    w[:, 10] = w[:, 3] * 2  # a column dependent on an earlier one: a zero pivot within a block
    tol = float(w.abs().max()) * 45 * torch.finfo(w.dtype).eps
    lo, d, up, rows, cols = lu_kernels.crout_search(w, 38, tol)
    lo2, d2, up2 = lu_kernels.lu_from_order(w[rows][:, cols].clone(), 38, tol, block=block)
    torch.testing.assert_close(d2, d, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(lo2, lo, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(up2, up, rtol=1e-9, atol=1e-9)
    assert (d == 0).sum() == 1


def test_replayed_zero_pivots_keep_unit_vectors():
    # In an order that puts a zero row first, the first pivot is zero: unit
    # vectors, d = 0, and the rest still reproduces W exactly.
    w = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [4.0, 5.0, 7.0]], dtype=torch.float64)
    f = lu_factors(w, 3, dtype=torch.float64, row_order=[0, 1, 2], col_order=[0, 1, 2])
    assert f.d[0] == 0 and torch.isfinite(f.left).all() and torch.isfinite(f.right).all()
    torch.testing.assert_close(f.left[:, 0], torch.tensor([1.0, 0, 0], dtype=torch.float64))
    torch.testing.assert_close(f.right[0], torch.tensor([1.0, 0, 0], dtype=torch.float64))
    # L's zero column eliminates nothing, so the trailing block is factored as it stands.
    torch.testing.assert_close(_product(f)[1:, 1:], w[1:, 1:], rtol=0, atol=1e-12)


def test_search_is_the_same_for_both_entry_points():
    torch.manual_seed(4)
    w = torch.randn(20, 16)
    tol = float(w.abs().max()) * 20 * torch.finfo(w.dtype).eps
    lo, d, up, rows, cols = decompose.search_lu(w, 9, tol)
    f = lu_factors(w, 9)
    assert torch.equal(f.row_order, rows) and torch.equal(f.d, d)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("shape,r", [((96, 64), 64), ((300, 500), 128), ((6, 5), 5)])
def test_cuda_replay_is_bit_identical_and_matches_cpu(shape, r):
    torch.manual_seed(5)
    w = _rank_deficient() if shape == (6, 5) else torch.randn(*shape, dtype=torch.float64)
    w = w.float().cuda()
    f = lu_factors(w, r)
    g = lu_factors(w, r, row_order=f.row_order.int().cpu(), col_order=f.col_order.int().cpu())
    assert f.left.is_cuda and _same_bits(f, g)
    cpu = lu_factors(w.cpu(), r, row_order=f.row_order.cpu(), col_order=f.col_order.cpu())
    torch.testing.assert_close(cpu.d, f.d.cpu(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(cpu.left, f.left.cpu(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(cpu.right, f.right.cpu(), rtol=1e-4, atol=1e-5)
    if r == min(shape):
        torch.testing.assert_close(_product(f), w, rtol=0, atol=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_foreign_order_rebuild_matches_cpu():
    torch.manual_seed(6)
    w = torch.randn(200, 150)
    rows, cols = torch.randperm(200), torch.randperm(150)
    gpu = lu_factors(w.cuda(), 150, row_order=rows, col_order=cols)
    again = lu_factors(w.cuda(), 150, row_order=rows, col_order=cols)
    cpu = lu_factors(w, 150, row_order=rows, col_order=cols)
    assert _same_bits(gpu, again)
    torch.testing.assert_close(gpu.d.cpu(), cpu.d, rtol=1e-3, atol=1e-4)
