"""Machinery shared by LoLDU and SVFit: a frozen rank-r factor pair around a
trainable diagonal.

An adapted layer reads its weight as a matrix ``M`` (out x in; see
:mod:`loldu.methods.diagonal.kinds` for Linear, GPT-2's Conv1D, Conv1d/2d/3d and
Embedding) and computes its base operation with::

    M_eff = M + left @ diag(sigma * z - sigma0 * ref) @ right

``left`` (out x r) and ``right`` (r x in) are frozen buffers, ``z`` (r) and the
scale ``sigma`` (shape (1,)) are trained, ``ref`` is the fixed reference subtracted so the
update is zero at step 0 (``ref = z0`` by default). The base weight is never
modified except by :meth:`merge`, so disabling the adapter gives back the
pre-trained layer exactly and several adapters can share one base.

Subclasses provide the factorisation (:meth:`DiagonalLayer.factorise`) and the
checks that tie a saved adapter to its base (:meth:`DiagonalLayer.rebuild`).
"""

from __future__ import annotations

import warnings

import torch
from peft.tuners._buffer_dict import BufferDict
from peft.tuners.tuners_utils import BaseTunerLayer, check_adapters_to_merge
from torch import nn

from loldu.methods.decompose import Factors, fingerprint
from loldu.methods.diagonal.fused import FusedDiagLinear
from loldu.methods.diagonal.kinds import kind_for
from loldu.methods.diagonal.mixed import mixed_batch_forward
from loldu.methods.diagonal.parts import (
    FactorStore,
    initial_z,
)
from loldu.methods.diagonal.saved_state import SavedStateMixin

__all__ = ["DiagonalLayer", "dz_grad_costs"]


def dz_grad_costs(tokens: int, r: int, in_f: int, out_f: int) -> tuple[int, int]:
    """Multiply-adds of the two ways to get dz's gradient: (projections, weight gradient).

    ``sum_t (g_t left) * (x_t right^T)`` costs ``tokens * r * (in + out)``;
    ``diag(left^T (G^T X) right^T)`` costs ``tokens * out * in + r * out * in``.
    The second wins near full rank with many tokens.
    """
    return tokens * r * (in_f + out_f), tokens * out_f * in_f + r * out_f * in_f


class DiagonalLayer(SavedStateMixin, nn.Module, BaseTunerLayer):
    """Base tuner layer for diagonal-in-the-middle adapters (see module doc).

    Subclasses set ``prefix`` and the matching ``adapter_layer_names`` /
    ``other_param_names`` and implement :meth:`factorise`.
    """

    prefix: str = ""
    # Per-adapter tensors saved with the adapter besides z and sigma.
    saved_state: tuple[str, ...] = ("ref", "d", "fingerprint")

    def __init__(self, base_layer: nn.Module, **kwargs) -> None:
        base = base_layer.get_base_layer() if isinstance(base_layer, BaseTunerLayer) else base_layer
        kind = kind_for(base)  # refuses an unsupported layer type (ValueError, PEFT's wording)
        nn.Module.__init__(self)
        self.base_layer = base_layer
        p = self.prefix
        setattr(self, p + "z", nn.ParameterDict({}))
        setattr(self, p + "sigma", nn.ParameterDict({}))
        setattr(self, p + "left", FactorStore())
        setattr(self, p + "right", FactorStore())
        for name in self.saved_state:
            setattr(self, p + name, BufferDict({}, persistent=True))
        self.r: dict[str, int] = {}
        self.sigma0: dict[str, float] = {}
        self.forward_path: dict[str, str] = {}
        self.recompute: dict[str, str] = {}
        self.frozen_peft_weight_names = {}
        self._disable_adapters = False
        self.merged_adapters = []
        self.kwargs = kwargs
        # How the base layer reads as a matrix and runs with another weight (a plain object, not a submodule).
        self.kind = kind
        # The factorised matrix's shape (for Linear the layer's own; see kinds for the other types).
        self.in_features = kind.in_features
        self.out_features = kind.out_features

    def base_matrix(self) -> torch.Tensor:
        """The base weight as the matrix the adapters factorise (out x in), a view where possible."""
        return self.kind.matrix(self.get_base_layer().weight)

    def base_fingerprint(self) -> torch.Tensor:
        """:func:`~loldu.methods.decompose.fingerprint` of the base weight as stored, flattened to its first dim
        (as :func:`loldu.methods.files.integrity.weight_fingerprint` takes it; Conv1D's is not transposed)."""
        weight = self.get_base_layer().weight
        return fingerprint(weight.reshape(weight.shape[0], -1))

    # -- access to the per-adapter containers, by role --------------------
    def _dict(self, role: str):
        return getattr(self, self.prefix + role)

    def factorise(self, adapter_name: str, weight: torch.Tensor, config) -> tuple[Factors, dict]:
        """Return the rank-r factors and the extra tensors to save (method-specific)."""
        raise NotImplementedError

    def rebuild(self, adapter_name: str, saved: dict[str, torch.Tensor], where: str) -> None:
        """Rebuild frozen factors from a saved adapter's state, or refuse (method-specific)."""
        raise NotImplementedError

    # -- creating an adapter ------------------------------------------------
    def update_layer(self, adapter_name: str, config) -> None:
        """Factorise the base weight and create adapter ``adapter_name``.

        Raises:
            ValueError: for a rank that does not fit (options are checked by the config).
        """
        r = config.r
        weight = self.base_matrix()
        if adapter_name in self.merged_adapters:
            raise ValueError(f"adapter {adapter_name!r} is merged; unmerge it before replacing it")
        if self.merged:
            raise ValueError("cannot add an adapter to a layer with merged adapters; unmerge first")
        factors, extra = self.factorise(adapter_name, weight, config)
        z0 = initial_z(config.init, factors.d.float())
        ref = z0 if config.init_residual == "z0" else factors.d.float()
        self._set_factors(adapter_name, factors, weight)
        dev = weight.device
        self._dict("z")[adapter_name] = nn.Parameter(z0.clone().to(dev))
        self.sigma0[adapter_name] = (config.alpha if config.alpha is not None else r) / r
        # Shape (1,), not a scalar: FSDP refuses 0-dim parameters.
        self._dict("sigma")[adapter_name] = nn.Parameter(
            torch.full((1,), self.sigma0[adapter_name], dtype=torch.float32, device=dev)
        )
        self._dict("ref")[adapter_name] = ref.to(dev)
        self._dict("d")[adapter_name] = factors.d.float().to(dev)
        self._dict("fingerprint")[adapter_name] = self.base_fingerprint()
        for key, value in extra.items():
            self._dict(key)[adapter_name] = value
        self.r[adapter_name] = r
        self.forward_path[adapter_name] = config.forward_path
        self.recompute[adapter_name] = config.recompute
        if not config.train_sigma:
            self.frozen_peft_weight_names[adapter_name] = (self.prefix + "sigma",)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    def _set_factors(self, adapter_name: str, factors: Factors, weight: torch.Tensor) -> None:
        dtype = weight.dtype if weight.is_floating_point() else torch.float32
        left = self.kind.fix_left(factors.left.to(weight.device, dtype))
        self._dict("left")[adapter_name] = left.contiguous()
        self._dict("right")[adapter_name] = factors.right.to(weight.device, dtype).contiguous()

    # -- the update -----------------------------------------------------------
    def delta_diag(self, adapter_name: str) -> torch.Tensor:
        """``sigma * z - sigma0 * ref``: the diagonal of the update.

        In z's dtype (float32 by default), or float64 where the factors are float64 (a float64 model keeps its
        precision end to end).
        """
        z = self._dict("z")[adapter_name]
        dtype = torch.promote_types(z.dtype, self._dict("left")[adapter_name].dtype)
        sigma = self._dict("sigma")[adapter_name]
        ref = self._dict("ref")[adapter_name]
        return sigma.to(dtype) * z.to(dtype) - self.sigma0[adapter_name] * ref.to(dtype)

    def delta_matrix(self, adapter_name: str) -> torch.Tensor:
        """``left @ diag(dz) @ right`` (out x in, the matrix's shape), in float32 or the factors' wider dtype."""
        left, right = self._dict("left")[adapter_name], self._dict("right")[adapter_name]
        dtype = torch.promote_types(left.dtype, torch.float32)
        return (left.to(dtype) * self.delta_diag(adapter_name).to(dtype)) @ right.to(dtype)

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        """The update shaped like the base weight (PEFT's convention), in float32 or the factors' wider dtype."""
        return self.kind.to_weight(self.delta_matrix(adapter_name))

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """Add the active (or named) adapters' updates into the base weight.

        The sum is taken in float32 (float64 for a float64 base) and rounded once to the base dtype; unmerging
        subtracts the same update, so merge then unmerge gives back the base weight up to that rounding (exact
        where the sums are exact; within one unit in the last place of ``|W| + |update|`` in the base dtype).

        Args:
            safe_merge: check the merged weight for inf/NaN before writing it.
            adapter_names: adapters to merge; default the active ones.

        Raises:
            ValueError: with safe_merge, if the merged weight is not finite (PEFT's message).
        """
        base = self.get_base_layer()
        for name in check_adapters_to_merge(self, adapter_names):
            if name not in self._dict("z"):
                continue
            with torch.no_grad():
                delta = self.get_delta_weight(name)
                merged = base.weight.to(delta.dtype) + delta
                if safe_merge and not torch.isfinite(merged).all():
                    raise ValueError(f"NaNs detected in the merged weights. The adapter {name} seems to be broken")
                base.weight.copy_(merged.to(base.weight.dtype))
            self.merged_adapters.append(name)

    def unmerge(self) -> None:
        """Subtract every merged adapter's update from the base weight."""
        if not self.merged:
            warnings.warn("Already unmerged. Nothing to do.", stacklevel=2)
            return
        base = self.get_base_layer()
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            with torch.no_grad():
                delta = self.get_delta_weight(name)
                base.weight.copy_((base.weight.to(delta.dtype) - delta).to(base.weight.dtype))

    # -- forward ----------------------------------------------------------------
    def choose_path(self, adapter_name: str, tokens: int) -> str:
        """The forward path for one call: the configured one, or the cheaper by shape.

        Extra multiply-adds over the frozen base layer, per training step:
        activation ``2 * tokens * r * (in + out)`` (projections forward and
        backward); fused ``out * r * in`` (building the merged weight) plus the
        cheaper way to dz's gradient (:func:`dz_grad_costs`). Without gradients
        (evaluation) the comparison is ``tokens * r * (in + out)`` against
        ``out * r * in``.

        Convolutions and embeddings have no fused path: ``fused`` runs the ``weight`` path there, and ``auto``
        compares the activation path with the weight path by their own costs
        (:meth:`loldu.methods.diagonal.kinds.Kind.costs`).
        """
        path = self.forward_path[adapter_name]
        training = torch.is_grad_enabled() and self._dict("z")[adapter_name].requires_grad
        if not self.kind.fused:
            if path == "auto":
                costs = self.kind.costs(tokens, self.r[adapter_name], training)
                return "weight" if costs["weight"] < costs["activation"] else "activation"
            return "weight" if path == "fused" else path
        if path != "auto":
            return path
        r, out_f, in_f = self.r[adapter_name], self.out_features, self.in_features
        if training:
            activation = 2 * tokens * r * (in_f + out_f)
            fused = out_f * r * in_f + min(dz_grad_costs(tokens, r, in_f, out_f))
        else:
            activation, fused = tokens * r * (in_f + out_f), out_f * r * in_f
        return "fused" if fused < activation else "activation"

    def should_recompute(self, adapter_name: str, tokens: int) -> bool:
        """Whether the fused backward rebuilds the merged weight instead of keeping it.

        ``always``/``never`` as configured; ``auto`` recomputes when gradients
        are on and the merged weight (``out * in`` values) is larger than the
        input the layer saves anyway (``tokens * in``), i.e. ``out > tokens``.
        The price is ``out * r * in`` more multiply-adds in the backward, a
        fraction ``r / (2 * tokens)`` of the layer's own two matmuls.
        """
        mode = self.recompute.get(adapter_name, "auto")
        if mode != "auto":
            return mode == "always"
        return torch.is_grad_enabled() and self.out_features > tokens

    def compute_dtype(self, x: torch.Tensor) -> torch.dtype:
        """The matmul dtype: autocast's when autocast is on for x's device, else the base weight's."""
        device = x.device.type
        if torch.is_autocast_enabled(device):
            return torch.get_autocast_dtype(device)
        weight = self.get_base_layer().weight
        return weight.dtype if weight.is_floating_point() else torch.float32

    def forward(self, x: torch.Tensor, *args, adapter_names: list[str] | None = None, **kwargs) -> torch.Tensor:
        base = self.get_base_layer()
        if adapter_names is not None:
            return mixed_batch_forward(self, x, adapter_names, *args, **kwargs)
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return base(x, *args, **kwargs)
        if self.merged:
            return base(x, *args, **kwargs)
        active = [a for a in self.active_adapters if a in self._dict("z")]
        if not active:
            return base(x, *args, **kwargs)
        tokens = self.kind.tokens(x)
        result = None
        rest = []
        for name in active:
            path = self.choose_path(name, tokens)
            if result is None and path in ("fused", "weight"):
                result = self._forward_merged(name, x, path, tokens)
            else:
                rest.append(name)
        if result is None:
            result = base(x, *args, **kwargs)
        for name in rest:
            result = result + self.activation_delta(name, x).to(result.dtype)
        return result

    def activation_delta(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Adapter ``name``'s contribution through the rank-r factors (``x right^T diag(dz) left^T`` for Linear)."""
        dtype = self.compute_dtype(x)
        left, right = self._dict("left")[name].to(dtype), self._dict("right")[name].to(dtype)
        return self.kind.activation(self.kind.cast_input(x, dtype), left, self.delta_diag(name).to(dtype), right)

    def _forward_merged(self, name: str, x: torch.Tensor, path: str, tokens: int) -> torch.Tensor:
        base = self.get_base_layer()
        left, right = self._dict("left")[name], self._dict("right")[name]
        dz = self.delta_diag(name)
        dtype = self.compute_dtype(x)
        if path == "fused":
            recompute = self.should_recompute(name, tokens)
            by_proj, by_weight = dz_grad_costs(tokens, self.r[name], self.in_features, self.out_features)
            weight = self.kind.linear_weight(base.weight)
            return FusedDiagLinear.apply(x, weight, base.bias, left, right, dz, dtype, recompute, by_weight < by_proj)
        m_eff = torch.addmm(self.base_matrix().to(dtype), left.to(dtype) * dz.to(dtype), right.to(dtype))
        bias = getattr(base, "bias", None)
        return self.kind.forward_with(self.kind.cast_input(x, dtype), m_eff, None if bias is None else bias.to(dtype))
