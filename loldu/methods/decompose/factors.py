"""Factorisations shared by LoLDU and SVFit.

Both methods keep a rank-r part of a frozen weight ``W`` (out x in) as two
frozen factors and a length-r vector of scales between them::

    W ~= left @ diag(d) @ right        left: (out, r)   right: (r, in)

LoLDU takes the first r pivots of ``W = P L D U' Q^T`` (LU with partial
pivoting), with the permutations folded into the factors
(``left = P L_r``, ``right = U'_r Q^T``), so no permutation matrix is stored.
SVFit takes the top-r singular triplets.

The LU's pivot search is LAPACK's (blocked partial pivoting); two things LAPACK
does not give are added around it (kernels in :mod:`loldu.methods.decompose.lu`):

* a *replay* mode that rebuilds the factors from a saved pivot order, so an
  adapter trained on one machine rebuilds the same factors on another even
  where two candidate pivots tie and a different library would pick the other;
* exact, finite factors for rank-deficient weights. Partial pivoting alone
  meets a zero pivot with a non-zero rest of its row, which ``D U'`` cannot
  express; when one of the kept pivots is zero the search falls back to an
  elimination with column swaps (a step of complete pivoting), so every zero
  pivot has a zero remaining block and ``W = P L D U' Q^T`` holds exactly for
  the kept part.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from loldu.methods.decompose import lu


@dataclass
class Factors:
    """A rank-r part of a weight: ``left @ diag(d) @ right``.

    Attributes:
        left: (out, r) frozen left factor (``P L_r`` or ``U_r``).
        d: (r,) pivots or singular values.
        right: (r, in) frozen right factor (``U'_r Q^T`` or ``V_r^T``).
        row_order: (out,) row pivot order of the LU (None for SVD).
        col_order: (in,) column order of the LU (None for SVD).
    """

    left: torch.Tensor
    d: torch.Tensor
    right: torch.Tensor
    row_order: torch.Tensor | None = None
    col_order: torch.Tensor | None = None


def meta_factors(weight: torch.Tensor, r: int, pivots: bool) -> Factors:
    """Factors of the right shapes and no values, on the meta device, for a weight there: applying a method to a
    model built with ``torch.device("meta")`` then gives its exact parameter counts without any weights.

    Args:
        weight: (out, in) meta weight.
        r: kept rank.
        pivots: also the LU's row and column orders (LoLDU); SVD has none.
    """
    out_f, in_f = weight.shape[0], weight.shape[1]
    meta = {"device": "meta", "dtype": torch.float32}
    orders = (torch.empty(out_f, dtype=torch.long, device="meta"), torch.empty(in_f, dtype=torch.long, device="meta"))
    return Factors(
        left=torch.empty(out_f, r, **meta),
        d=torch.empty(r, **meta),
        right=torch.empty(r, in_f, **meta),
        row_order=orders[0] if pivots else None,
        col_order=orders[1] if pivots else None,
    )


def check_rank(r: int, weight_shape: tuple[int, ...], name: str = "layer", note: str = "") -> None:
    """Refuse a rank that does not fit a weight.

    Args:
        r: the rank asked for.
        weight_shape: the (out, in) matrix factorised.
        name: the layer, for the message.
        note: where the matrix comes from when it is not the weight as stored (e.g. a convolution's kernel).

    Raises:
        ValueError: if r is not in [1, min(out, in)].
    """
    out_f, in_f = weight_shape[0], weight_shape[1]
    limit = min(out_f, in_f)
    if not isinstance(r, int) or isinstance(r, bool) or r < 1 or r > limit:
        raise ValueError(
            f"rank r={r} does not fit {name} with weight {out_f}x{in_f}{note}: r must be an "
            f"integer in [1, {limit}] (= min(out, in)). Lower r, or restrict the target "
            "modules to layers at least that large."
        )


def _pick_dtype(dtype: torch.dtype | str) -> torch.dtype:
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"decomposition dtype must be float32 or float64, got {dtype}")
    return dtype


def lu_factors(
    weight: torch.Tensor,
    r: int,
    *,
    dtype: torch.dtype | str = torch.float32,
    row_order: torch.Tensor | None = None,
    col_order: torch.Tensor | None = None,
) -> Factors:
    """First r pivots of ``W = P L diag(D) U' Q^T``.

    ``L`` is unit lower triangular, ``U'`` unit upper triangular. Rows are
    chosen by partial pivoting (largest |entry| of the pivot column, first index
    on ties); columns stay in order unless a pivot column is zero, in which
    case the largest entry of the remaining block is swapped in. Where the
    remaining block is entirely zero, the pivot is 0 and the unit vectors are
    kept as its L column and U' row, so the direction stays trainable. "Zero"
    means at most ``max|W| * max(out, in) * eps`` (rounding noise).

    The pivot search is LAPACK's (``torch.linalg.lu_factor_ex`` on the first r
    columns, blocked, no host sync per pivot) and its factors are returned as
    they are; only when one of the first r pivots is zero does the exact
    Python-loop elimination with column swaps run instead.

    Args:
        weight: (out, in) weight; not modified.
        r: number of pivots to keep, 1 <= r <= min(out, in).
        dtype: computation dtype, float32 (default) or float64.
        row_order, col_order: replay a saved pivot order. If the search here
            finds that order, its factors are returned, so an order saved on
            the same device kind rebuilds bit-identical factors. Another order
            (from another device kind, where a near-tie went the other way, or
            from an older version) is rebuilt by an unpivoted LU of the
            permuted weight: the same factors up to rounding.

    Returns:
        Factors with ``left = P L_r`` (out, r), ``d = D_r``, ``right = U'_r Q^T``
        (r, in), and the full row/column orders (int64, on the weight's device).

    Raises:
        ValueError: for a bad rank or malformed orders.
    """
    check_rank(r, tuple(weight.shape))
    if weight.is_meta:  # shapes only (a model built on the meta device: counts, memory plans)
        return meta_factors(weight, r, pivots=True)
    dt = _pick_dtype(dtype)
    n_out, n_in = weight.shape
    a = weight.detach().to(dt)
    dev = a.device
    replay = row_order is not None or col_order is not None
    if replay:
        if row_order is None or col_order is None:
            raise ValueError("replaying an LU needs both row_order and col_order")
        want_rows = _checked_order(row_order, n_out, "row_order").to(dev)
        want_cols = _checked_order(col_order, n_in, "col_order").to(dev)
    # Pivots this small are rounding noise of an exactly rank-deficient weight
    # (e.g. 4e-16 where the exact value is 0): treat them as zero.
    tol = float(a.abs().max()) * max(n_out, n_in) * torch.finfo(dt).eps
    lo, d, up, rows, cols = search_lu(a, r, tol)
    if replay and not (torch.equal(rows, want_rows) and torch.equal(cols, want_cols)):
        rows, cols = want_rows, want_cols
        lo, d, up = lu.lu_from_order(a[rows][:, cols].clone(), r, tol)
    # P L_r and U'_r Q^T: undo the permutations (index_copy_ is several times faster than indexed assignment;
    # LAPACK's path keeps the columns in order, so U'_r is already U'_r Q^T there).
    left = torch.empty_like(lo).index_copy_(0, rows, lo)
    in_order = torch.equal(cols, torch.arange(n_in, device=dev))
    right = up if in_order else torch.empty_like(up).index_copy_(1, cols, up)
    return Factors(left, d, right, rows.clone(), cols.clone())


def search_lu(a: torch.Tensor, r: int, tol: float):
    """The pivot search: LAPACK's partial pivoting, or the exact slow path where a kept pivot is zero.

    Returns:
        ``(lo, d, up, rows, cols)``: unit lower (m, r) and unit upper (r, n)
        factors in the pivoted order, the pivots, and the row/column orders.
    """
    found = lu.lapack_search(a, r, tol)
    if found is None:
        return lu.crout_search(a, r, tol)
    lo, d, up, rows = found
    return lo, d, up, rows, torch.arange(a.shape[1], device=a.device)


def _checked_order(order: torch.Tensor, n: int, name: str) -> torch.Tensor:
    order = torch.as_tensor(order).long().flatten()
    if order.numel() != n or not torch.equal(order.sort().values.cpu(), torch.arange(n)):
        raise ValueError(f"{name} is not a permutation of range({n}); the adapter file is damaged")
    return order


def svd_factors(
    weight: torch.Tensor,
    r: int,
    *,
    dtype: torch.dtype | str = torch.float32,
    method: str = "full",
    niter: int = 4,
    seed: int = 0,
) -> Factors:
    """Top-r singular triplets: ``left = U_r``, ``d = S_r``, ``right = V_r^T``.

    Args:
        weight: (out, in) weight; not modified.
        r: number of singular values to keep.
        dtype: computation dtype.
        method: ``full`` (``torch.linalg.svd``) or ``lowrank``
            (``torch.svd_lowrank``, randomized, seeded by ``seed``).
        niter: subspace iterations for ``lowrank``.
        seed: seed of the randomized SVD, so a rebuild repeats it.

    Raises:
        ValueError: for a bad rank or an unknown method.
    """
    check_rank(r, tuple(weight.shape))
    if weight.is_meta:  # shapes only (a model built on the meta device: counts, memory plans)
        return meta_factors(weight, r, pivots=False)
    a = weight.detach().to(_pick_dtype(dtype))
    if method == "full":
        u, s, vh = torch.linalg.svd(a, full_matrices=False)
        u, s, vh = u[:, :r], s[:r], vh[:r]
    elif method == "lowrank":
        q = min(r + 8, *a.shape)
        with torch.random.fork_rng(devices=[a.device] if a.is_cuda else []):
            torch.manual_seed(seed)
            u, s, v = torch.svd_lowrank(a, q=q, niter=niter)
        u, s, vh = u[:, :r], s[:r], v[:, :r].T
    else:
        raise ValueError(f"svd method must be 'full' or 'lowrank', got {method!r}")
    # Sign convention: largest-|entry| of each left vector positive, so the
    # factors do not depend on the library's sign choice.
    idx = u.abs().argmax(dim=0)
    sign = torch.sign(u[idx, torch.arange(r, device=u.device)])
    sign[sign == 0] = 1
    return Factors((u * sign).contiguous().clone(), s.clone(), (vh * sign[:, None]).contiguous().clone())


def fingerprint(weight: torch.Tensor, k: int = 8) -> torch.Tensor:
    """A small float64 sketch of a weight to recognise its base on reload.

    ``k`` bilinear forms ``a_i^T W b_i`` with fixed pseudo-random +-1 vectors,
    plus the Frobenius norm. Two different weights almost never agree; a
    weight cast to bf16/fp16 and back agrees within about 1e-2 relative.
    A weight on the meta device has an empty (meta) sketch of the same shape.
    """
    if weight.is_meta:
        return torch.empty(k + 1, dtype=torch.float64, device="meta")
    w = weight.detach().to(torch.float64)
    g = torch.Generator().manual_seed(20241017)
    a = (torch.randint(0, 2, (k, w.shape[0]), generator=g) * 2 - 1).to(w)
    b = (torch.randint(0, 2, (k, w.shape[1]), generator=g) * 2 - 1).to(w)
    sketch = ((a @ w) * b).sum(dim=1)
    return torch.cat([sketch, w.norm().reshape(1)]).cpu()


def same_base(saved: torch.Tensor, current: torch.Tensor, rtol: float = 1e-2) -> bool:
    """Whether two fingerprints come from the same base weight (up to a dtype cast)."""
    saved, current = saved.double(), current.double()
    if saved.shape != current.shape:
        return False
    scale = saved[-1].abs().clamp_min(1e-30)
    # Sketches are sums of +-W entries: their spread is about ||W||_F.
    return bool(((saved - current).abs() <= rtol * scale).all())
