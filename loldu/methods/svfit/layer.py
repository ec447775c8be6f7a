"""The SVFit tuner layer: top-r singular triplets around trainable singular values."""

from __future__ import annotations

from loldu.methods.decompose import Factors, svd_factors
from loldu.methods.diagonal import DiagonalLayer


class SVFitLayer(DiagonalLayer):
    """A Linear, Conv1D, Conv1d/2d/3d or Embedding layer with SVFit adapters (:mod:`loldu.methods.diagonal.kinds`).

    An SVD has no pivot order to replay; a reload recomputes it on the same
    base (checked by fingerprint) and refuses if the kept singular values
    differ from the saved ones.
    """

    prefix = "svfit_"
    adapter_layer_names = ("svfit_z", "svfit_sigma")
    other_param_names = (
        "svfit_left",
        "svfit_right",
        "svfit_ref",
        "svfit_d",
        "svfit_fingerprint",
        "r",
        "sigma0",
        "forward_path",
        "recompute",
    )

    def factorise(self, adapter_name, weight, config) -> tuple[Factors, dict]:
        factors = svd_factors(weight, config.r, method=config.svd, niter=config.svd_niter, seed=config.svd_seed)
        return factors, {}

    def rebuild(self, adapter_name, saved, where) -> None:
        # The factors in place were computed from this (fingerprint-checked)
        # base at injection; the singular values confirm it.
        self._check_rebuilt(adapter_name, saved["d"], where, "singular values")
