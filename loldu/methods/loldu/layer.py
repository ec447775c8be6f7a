"""The LoLDU tuner layer: LU factors with the pivot order saved for exact rebuilds."""

from __future__ import annotations

import torch

from loldu.methods.decompose import Factors, lu_factors
from loldu.methods.diagonal import DiagonalLayer
from loldu.methods.diagonal.saved_state import order_dtype


class LoLDULayer(DiagonalLayer):
    """A Linear, Conv1D, Conv1d/2d/3d or Embedding layer with LoLDU adapters (:mod:`loldu.methods.diagonal.kinds`).

    Frozen buffers per adapter: ``P L_r`` (out x r) and ``U'_r`` (r x in) only.
    Saved per adapter: z, sigma, the reference (empty when it equals the
    pivots), the pivots, the row/column pivot order (smallest integer type)
    and a fingerprint of the base weight (see :mod:`loldu.methods.diagonal.saved_state`).
    """

    prefix = "loldu_"
    adapter_layer_names = ("loldu_z", "loldu_sigma")
    other_param_names = (
        "loldu_left",
        "loldu_right",
        "loldu_ref",
        "loldu_d",
        "loldu_fingerprint",
        "loldu_row_order",
        "loldu_col_order",
        "r",
        "sigma0",
        "forward_path",
        "recompute",
        "decompose_dtype",
    )
    saved_state = ("ref", "d", "fingerprint", "row_order", "col_order")

    def __init__(self, base_layer, **kwargs):
        super().__init__(base_layer, **kwargs)
        self.decompose_dtype: dict[str, str] = {}

    def factorise(self, adapter_name, weight, config) -> tuple[Factors, dict]:
        self.decompose_dtype[adapter_name] = config.decompose_dtype
        factors = lu_factors(weight, config.r, dtype=config.decompose_dtype)
        # The smallest integer type that holds the indices keeps the file small.
        extra = {
            "row_order": factors.row_order.to(order_dtype(weight.shape[0])),
            "col_order": factors.col_order.to(order_dtype(weight.shape[1])),
        }
        return factors, extra

    def rebuild(self, adapter_name, saved, where) -> None:
        rows, cols = saved["row_order"], saved["col_order"]
        cur_rows, cur_cols = self.loldu_row_order[adapter_name], self.loldu_col_order[adapter_name]
        if (
            rows.shape == cur_rows.shape
            and cols.shape == cur_cols.shape
            and torch.equal(rows.cpu().long(), cur_rows.cpu().long())
            and torch.equal(cols.cpu().long(), cur_cols.cpu().long())
        ):
            factors = None  # same pivots: the factors in place are the saved ones
        else:
            weight = self.base_matrix()
            try:
                factors = lu_factors(
                    weight,
                    self.r[adapter_name],
                    dtype=self.decompose_dtype[adapter_name],
                    row_order=rows.long(),
                    col_order=cols.long(),
                )
            except ValueError as err:
                raise ValueError(f"adapter {adapter_name!r} at {where}: {err}") from err
            self._set_factors(adapter_name, factors, weight)
            self.loldu_d[adapter_name] = factors.d.float().to(weight.device)
        self._check_rebuilt(adapter_name, saved["d"], where, "LU pivots")
