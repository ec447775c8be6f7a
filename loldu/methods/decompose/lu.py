"""Low-level kernels of the rank-r LU behind :func:`loldu.methods.decompose.lu_factors`.

Three routines, all on plain tensors (``a`` is the weight in the computation
dtype, ``tol`` the size under which a pivot counts as zero):

* :func:`lapack_search` finds the first r pivots by LAPACK's blocked partial
  pivoting (``torch.linalg.lu_factor_ex`` on the first r columns, then one
  triangular solve for the rest of the first r rows of U). It gives up (returns
  None) when one of those pivots is zero, which partial pivoting cannot express
  exactly.
* :func:`crout_search` is the exact slow path for that rare case: a
  left-looking elimination that swaps in a new column when a pivot column is
  zero (one step of complete pivoting).
* :func:`lu_from_order` rebuilds the factors of a given row/column order (an
  unpivoted LU of the permuted matrix), for orders that the local search does
  not find: files from another device kind or from older versions.
"""

from __future__ import annotations

import torch


def lapack_search(a: torch.Tensor, r: int, tol: float):
    """First r pivots of ``a`` by LAPACK's partial pivoting, or None if one of them is zero.

    Returns:
        ``(lo, d, up, rows)``: unit lower ``lo`` (m, r) and unit upper ``up``
        (r, n) in the pivoted row order, pivots ``d`` (r,), and the row order
        (m,) as int64 on ``a``'s device; or None when some ``|d_k| <= tol``.
    """
    m, n = a.shape
    lu, piv, _ = torch.linalg.lu_factor_ex(a[:, :r])
    d = lu.diagonal().clone()
    if not bool((d.abs() > tol).all()):  # also catches NaN
        return None
    rows = _rows_from_swaps(piv, m).to(a.device)
    lo = torch.tril(lu, -1)
    lo.diagonal().fill_(1.0)
    up = a.new_empty(r, n)
    up[:, :r] = torch.triu(lu[:r])
    if n > r:
        # The rest of U's first r rows: L11^{-1} (P A)[:r, r:].
        up[:, r:] = torch.linalg.solve_triangular(lo[:r], a[rows[:r], r:], upper=False, unitriangular=True)
    up /= d[:, None]
    up.diagonal().fill_(1.0)
    return lo, d, up, rows


def _rows_from_swaps(piv: torch.Tensor, m: int) -> torch.Tensor:
    """The row order that LAPACK's 1-based sequence of swaps ``piv`` makes of ``range(m)``."""
    rows = list(range(m))
    for i, p in enumerate(piv.tolist()):  # one host copy of r small integers
        rows[i], rows[p - 1] = rows[p - 1], rows[i]
    return torch.tensor(rows, dtype=torch.long)


def crout_search(a: torch.Tensor, r: int, tol: float):
    """Exact slow path: partial pivoting, with a column swap where a pivot column is zero.

    Left-looking (Crout) elimination, one Python step per pivot. Where the
    whole remaining block is zero the pivot is 0 and the unit vectors are kept
    as its L column and U' row.

    Returns:
        ``(lo, d, up, rows, cols)`` in the pivoted order, as for :func:`lapack_search`.
    """
    m, n = a.shape
    a = a.clone()
    dev, dt = a.device, a.dtype
    rows, cols = torch.arange(m, device=dev), torch.arange(n, device=dev)
    lo, up, d = a.new_zeros(m, r), a.new_zeros(r, n), a.new_zeros(r)
    for k in range(r):
        # Column k of the Schur complement: A minus the part eliminated so far.
        col = a[k:, k] - lo[k:, :k] @ (d[:k] * up[:k, k])
        p = int(torch.argmax(col.abs()))
        if col[p].abs() <= tol:
            p, c = _complete_pivot(a, lo * d, up, k, tol)
            if c != k:
                for t in (a, up):
                    t[:, [k, c]] = t[:, [c, k]]
                cols[[k, c]] = cols[[c, k]]
                col = a[k:, k] - lo[k:, :k] @ (d[:k] * up[:k, k])
        if p != 0:
            for t in (a, lo, rows):
                t[[k, k + p]] = t[[k + p, k]]
            col[[0, p]] = col[[p, 0]]
        row = a[k, k:] - (lo[k, :k] * d[:k]) @ up[:k, k:]
        piv = col[0]
        lo[k, k] = up[k, k] = 1.0
        if piv.abs() > tol:
            d[k] = piv
            lo[k + 1 :, k] = col[1:] / piv
            up[k, k + 1 :] = row[1:] / piv
        else:  # the remaining block is zero: keep unit vectors, d = 0
            up[k, k + 1 :] = torch.zeros((), dtype=dt, device=dev)
    return lo, d, up, rows, cols


def _complete_pivot(a, lo_d, up, k, tol):
    """Largest entry of the remaining Schur block: (row offset from k, column); ``lo_d`` is ``L diag(D)``."""
    block = a[k:, k:] - lo_d[k:, :k] @ up[:k, k:]
    flat = int(torch.argmax(block.abs()))
    if block.reshape(-1)[flat].abs() <= tol:
        return 0, k
    i, j = divmod(flat, block.shape[1])
    return i, k + j


def lu_from_order(a: torch.Tensor, r: int, tol: float, block: int = 256):
    """Unpivoted rank-r LU of ``a``, already in the wanted row/column order (overwritten).

    Blocked and right-looking: each diagonal block is factored by LAPACK, and
    the leading pivots it keeps in place (no swap, not zero) are accepted, with
    two triangular solves for the rest of their rows and columns and one
    update of the part still needed (the first r rows and columns). A pivot
    LAPACK would move or finds zero is taken by hand, alone: zero pivots get
    unit vectors and d = 0, as :func:`crout_search` gives them. One host sync
    per block.

    Returns:
        ``(lo, d, up)``: unit lower (m, r), pivots (r,), unit upper (r, n).
    """
    m, n = a.shape
    lo, up, d = a.new_zeros(m, r), a.new_zeros(r, n), a.new_zeros(r)
    k, width = 0, block
    while k < r:
        w = min(width, r - k)
        lu, piv, _ = torch.linalg.lu_factor_ex(a[k : k + w, k : k + w])
        diag = lu.diagonal()
        steady = piv == torch.arange(1, w + 1, device=piv.device, dtype=piv.dtype)
        good = steady & (diag.abs() > tol) & diag.isfinite()
        j = int(good.int().cumprod(0).sum())  # leading pivots LAPACK kept in place
        if j:
            l21, u12 = _accept_block(a, lo, d, up, lu[:j, :j], k, j)
        else:
            l21, u12 = _single_step(a, lo, d, up, k, tol)
            j = 1
        # Shrink the block after a miss, grow it back after a clean pass (deterministic).
        width = min(block, 2 * width) if j == w else max(8, width // 2)
        kj = k + j
        if kj < r:  # update what later pivots read: rows kj: of columns < r, and rows < r of columns >= r
            a[kj:, kj:r].addmm_(l21, u12[:, : r - kj], alpha=-1)
            if n > r:
                a[kj:r, r:].addmm_(l21[: r - kj], u12[:, r - kj :], alpha=-1)
        k = kj
    return lo, d, up


def _accept_block(a, lo, d, up, lu11, k, j):
    """Store pivots k..k+j from the diagonal block's LU ``lu11``; return (L21, U12) for the update."""
    kj = k + j
    l11 = torch.tril(lu11, -1)
    l11.diagonal().fill_(1.0)
    u11 = torch.triu(lu11)
    l21 = torch.linalg.solve_triangular(u11, a[kj:, k:kj], upper=True, left=False)
    u12 = torch.linalg.solve_triangular(l11, a[k:kj, kj:], upper=False, unitriangular=True)
    piv = u11.diagonal()
    lo[k:kj, k:kj] = l11
    lo[kj:, k:kj] = l21
    d[k:kj] = piv
    up[k:kj, k:kj] = u11 / piv[:, None]
    up[k:kj, k:kj].diagonal().fill_(1.0)
    up[k:kj, kj:] = u12 / piv[:, None]
    return l21, u12


def _single_step(a, lo, d, up, k, tol):
    """One pivot by hand, without a host sync; a zero pivot keeps unit vectors. Returns (L21, U12)."""
    col = a[k:, k]
    piv = col[0]
    nonzero = piv.abs() > tol
    zero = torch.zeros_like(piv)
    inv = torch.where(nonzero, 1.0 / torch.where(nonzero, piv, zero + 1), zero)
    d[k] = torch.where(nonzero, piv, zero)
    lo[k + 1 :, k] = col[1:] * inv
    lo[k, k] = 1.0
    up[k, k + 1 :] = a[k, k + 1 :] * inv
    up[k, k] = 1.0
    # With a zero pivot L's column is zero, so the update below changes nothing.
    return lo[k + 1 :, k : k + 1], a[k : k + 1, k + 1 :]
