"""How a LoLDU/SVFit layer's per-adapter state is written to and read from a state dict.

What a saved adapter holds, per adapted layer (``<p>`` is ``loldu_`` or ``svfit_``):

* ``<p>z`` (r) and ``<p>sigma`` (1,): the trained numbers;
* ``<p>d`` (r): the kept pivots (LoLDU) or singular values (SVFit), to check a rebuild;
* ``<p>ref`` (r): the reference the update subtracts. When it equals ``d``
  (init ``lu`` with ``init_residual: z0``, the default) it is written as an
  empty tensor, meaning "same as d", instead of a second copy;
* ``<p>fingerprint`` (9): a sketch of the base weight;
* LoLDU only: ``loldu_row_order`` / ``loldu_col_order``, the pivot orders, in
  the smallest integer type that holds them (:func:`order_dtype`).

Files written before these rules (a 0-dim sigma, both ref and d, int32 orders)
still load: :func:`expand_state` turns them into the current form.
"""

from __future__ import annotations

import torch

from loldu.methods.decompose import same_base


def order_dtype(n: int) -> torch.dtype:
    """The smallest integer dtype that holds the indices of a permutation of ``range(n)``."""
    if n <= 2**8:
        return torch.uint8
    if n <= 2**15:
        return torch.int16
    return torch.int32


def compact_state(layer, state_dict: dict, prefix: str) -> None:
    """Write each adapter's reference as an empty tensor where it equals its pivots (in place)."""
    for name in layer._dict("z").keys():
        ref_key = f"{prefix}{layer.prefix}ref.{name}"
        d_key = f"{prefix}{layer.prefix}d.{name}"
        ref, d = state_dict.get(ref_key), state_dict.get(d_key)
        if ref is not None and d is not None and ref.numel() and torch.equal(ref, d):
            state_dict[ref_key] = torch.empty(0, dtype=ref.dtype, device=ref.device)


def expand_state(layer, state_dict: dict, prefix: str, name: str, where: str) -> dict:
    """Bring adapter ``name``'s saved entries into the current form (in place) and return them.

    Fills an empty (shared) reference from the saved pivots, reshapes a 0-dim
    sigma from older files to (1,), and checks that every saved-state entry is
    there and that the tensors' rank agrees with the layer's configured r.

    Returns:
        The saved-state entries (``layer.saved_state`` keys), or an empty dict
        if the state dict holds nothing for this adapter.

    Raises:
        ValueError: entries missing, or r in the config and in the tensors disagree.
    """

    def key(role: str) -> str:
        return f"{prefix}{layer.prefix}{role}.{name}"

    ref = state_dict.get(key("ref"))
    if ref is not None and ref.numel() == 0 and key("d") in state_dict:
        state_dict[key("ref")] = state_dict[key("d")].clone()
    sigma = state_dict.get(key("sigma"))
    if sigma is not None and sigma.dim() == 0:
        state_dict[key("sigma")] = sigma.reshape(1)
    saved = {role: state_dict[key(role)] for role in layer.saved_state if key(role) in state_dict}
    if not saved:
        return saved
    if len(saved) != len(layer.saved_state):
        missing = sorted(set(layer.saved_state) - set(saved))
        raise ValueError(
            f"adapter {name!r} at {where}: the file lacks {missing}; it is damaged or from an older format"
        )
    r = layer.r[name]
    for role in ("z", "d", "ref"):
        value = saved.get(role, state_dict.get(key(role)))
        if value is not None and tuple(value.shape) != (r,):
            raise ValueError(
                f"adapter {name!r} at {where}: the adapter config says r={r} but the saved {layer.prefix}{role} "
                f"has shape {tuple(value.shape)}: the config and the tensors disagree (was adapter_config.json "
                "edited?). Put back the r the adapter was saved with, or re-save it from the run."
            )
    return saved


class SavedStateMixin:
    """Saving and loading of a :class:`~loldu.methods.diagonal.DiagonalLayer`'s adapters (mixed into it).

    ``state_dict`` stores a reference equal to the pivots once (:func:`compact_state`); loading checks that each
    saved adapter belongs to this base (fingerprint), rebuilds its frozen factors (the layer's ``rebuild``) or
    refuses before anything is written.
    """

    def state_dict(self, *args, destination=None, prefix="", keep_vars=False):
        """The module's state, with a reference equal to the pivots stored once (see :mod:`.saved_state`)."""
        out = super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)
        compact_state(self, out, prefix)
        return out

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Runs before the children (the BufferDicts) load their entries: check
        # that each saved adapter belongs to this base and rebuild the frozen
        # factors from it, or refuse before anything is written.
        for name in list(self._dict("z").keys()):
            where = prefix.rstrip(".") or type(self).__name__
            saved = expand_state(self, state_dict, prefix, name, where)
            if not saved:
                continue
            if self.merged:
                raise ValueError(f"cannot load adapter {name!r} at {where} while adapters are merged; unmerge first")
            if not same_base(saved["fingerprint"], self.base_fingerprint()):
                raise ValueError(
                    f"adapter {name!r} at {where} was trained on a different base weight (fingerprint mismatch). "
                    "Load it onto the exact base model it was trained from."
                )
            self.rebuild(name, saved, where)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _check_rebuilt(self, name: str, saved_d: torch.Tensor, where: str, what: str) -> None:
        d = self._dict("d")[name].float().cpu()
        saved_d = saved_d.float().cpu()
        scale = max(float(saved_d.abs().max()), 1e-30)
        # A base loaded in half precision is the same base rounded: allow its rounding.
        weight_dtype = self.get_base_layer().weight.dtype
        tol = max(1e-3, 8 * torch.finfo(weight_dtype).eps) if weight_dtype.is_floating_point else 1e-3
        if d.shape != saved_d.shape or not torch.allclose(d, saved_d, rtol=tol, atol=tol * scale):
            raise ValueError(
                f"adapter {name!r} at {where}: the rebuilt {what} differ from the saved ones, so the saved z "
                "would mean something else here. Load it onto the base model (and dtype) it was trained on."
            )
