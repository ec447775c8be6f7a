"""The factorisations LoLDU and SVFit start from: ``W = P L D U`` cut to rank r (:func:`lu_factors`, with its
LAPACK replay and Crout kernels in :mod:`.lu`) and the truncated SVD (:func:`svd_factors`), plus the fingerprints
that tie saved factors to their base weight."""

from loldu.methods.decompose.factors import (
    Factors,
    check_rank,
    fingerprint,
    lu_factors,
    same_base,
    search_lu,
    svd_factors,
)

__all__ = ["Factors", "check_rank", "fingerprint", "lu_factors", "same_base", "search_lu", "svd_factors"]
