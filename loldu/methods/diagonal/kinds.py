"""The layer types LoLDU and SVFit adapt, each seen as the out x in matrix the methods factorise.

Every supported base layer computes its output from one weight, which is read as a matrix ``M`` (out x in):

==================================  =====================  ===========================================
base layer                          weight                 matrix ``M`` factorised
==================================  =====================  ===========================================
``torch.nn.Linear``                 out x in               the weight itself
``transformers...Conv1D`` (GPT-2)   in x out (transposed)  ``W.T`` (out x in)
``torch.nn.Conv1d/2d/3d``           out x in/g x k...      ``W.reshape(out, in/g * prod(k))``
``torch.nn.Embedding``              num x dim              the weight itself (rows are looked up)
==================================  =====================  ===========================================

The adapter's update ``left diag(dz) right`` is a matrix of ``M``'s shape; :meth:`Kind.to_weight` turns it back
into the base weight's shape, so merging is an addition and the adapted forward is the base operation run with
the merged weight. A grouped convolution needs nothing special: its weight, read as ``M``, is a plain matrix
whose row ``o`` holds the kernel of output channel ``o`` over its group's inputs, and any update of that shape is
again a valid grouped kernel. Stride, padding (and padding mode), dilation and groups are the base layer's own
(:meth:`torch.nn.Conv2d._conv_forward`).

Each kind also computes the update through the rank-r factors without building the merged weight (the
activation path) and prices both ways for ``forward_path: auto``. The ``fused`` path (one matmul through the
merged weight with a rank-r gradient, :class:`~loldu.methods.diagonal.fused.FusedDiagLinear`) exists for the
matmul layers (Linear, Conv1D); a convolution or an embedding asked for ``fused`` runs the ``weight`` path
(autograd through the merged weight), which is what ``fused`` reduces to there: a convolution's dz gradient
comes from the weight gradient anyway, and a lookup has no matmul to fuse.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

__all__ = ["SUPPORTED", "SUPPORTED_NAMES", "Kind", "kind_for", "matrix_shape", "unsupported_message"]

SUPPORTED_NAMES = (
    "`torch.nn.Linear`, `torch.nn.Embedding`, `torch.nn.Conv1d`, `torch.nn.Conv2d`, `torch.nn.Conv3d`, "
    "`transformers.pytorch_utils.Conv1D`"
)


def unsupported_message(target: nn.Module) -> str:
    """PEFT's wording (LoRA's ``_create_new_module``) for a target layer type no adapter layer exists for."""
    return (
        f"Target module {target} is not supported. Currently, only the following modules are supported: "
        f"{SUPPORTED_NAMES}."
    )


class Kind:
    """How one base layer is read as a matrix, and its forward with another weight (see module doc).

    Attributes:
        base: the base layer.
        out_features, in_features: the matrix's shape (rows, columns).
        fused: whether :class:`~loldu.methods.diagonal.fused.FusedDiagLinear` applies (matmul layers).
    """

    fused = False

    def __init__(self, base: nn.Module) -> None:
        self.base = base
        self.out_features, self.in_features = self.shape()

    def shape(self) -> tuple[int, int]:
        return tuple(self.base.weight.shape)

    def describe(self) -> str:
        """Where the matrix comes from, when it is not the weight as stored (for messages; "" otherwise)."""
        return ""

    def matrix(self, weight: torch.Tensor) -> torch.Tensor:
        """``M`` (out x in), a view of ``weight`` where possible."""
        return weight

    def to_weight(self, m: torch.Tensor) -> torch.Tensor:
        """A matrix of ``M``'s shape in the base weight's shape."""
        return m

    def fix_left(self, left: torch.Tensor) -> torch.Tensor:
        """The left factor as stored (the embedding zeroes its padding row here)."""
        return left

    def tokens(self, x: torch.Tensor) -> int:
        """Rows of the matrix product per call (tokens for a linear layer, output positions for a convolution)."""
        return x.numel() // max(x.shape[-1], 1)

    def cast_input(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return x.to(dtype)

    def forward_with(self, x: torch.Tensor, m: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """The base operation run with matrix ``m`` (out x in) as its weight."""
        return F.linear(x, m, bias)

    def activation(self, x: torch.Tensor, left: torch.Tensor, dz: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """``x`` through ``left diag(dz) right`` via the rank-r factors (no merged weight)."""
        return ((x @ right.T) * dz) @ left.T

    def costs(self, tokens: int, r: int, training: bool) -> dict[str, int]:
        """Extra multiply-adds of each path over the base layer, for ``forward_path: auto``.

        Generic (autograd) version: activation ``tokens * r * (in + out)`` per pass (twice when training);
        weight: building ``M_eff`` (``out * r * in``) and, when training, the full weight gradient the base layer
        (frozen) would not compute (``tokens * out * in``) plus its projection onto the factors (``out * r * in``).
        """
        out_f, in_f = self.out_features, self.in_features
        activation = tokens * r * (in_f + out_f)
        weight = out_f * r * in_f
        if training:
            activation *= 2
            weight += tokens * out_f * in_f + out_f * r * in_f
        return {"activation": activation, "weight": weight}


class LinearKind(Kind):
    """``torch.nn.Linear``: the weight is the matrix."""

    fused = True

    def linear_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """The weight as ``F.linear`` takes it (out x in), for the fused path."""
        return weight


class Conv1DKind(LinearKind):
    """``transformers.pytorch_utils.Conv1D`` (GPT-2): ``y = x W + b`` with ``W`` stored in x out."""

    def shape(self) -> tuple[int, int]:
        n_in, n_out = self.base.weight.shape
        return n_out, n_in

    def describe(self) -> str:
        return f" (Conv1D stores it transposed, {self.in_features}x{self.out_features})"

    def matrix(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.T

    def to_weight(self, m: torch.Tensor) -> torch.Tensor:
        return m.T

    def linear_weight(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.T

    def forward_with(self, x, m, bias):
        # The base layer's own op (addmm with the stored orientation), so M_eff = M gives its output bit for bit.
        flat = x.reshape(-1, x.shape[-1])
        out = flat @ m.T if bias is None else torch.addmm(bias, flat, m.T)
        return out.view(*x.shape[:-1], m.shape[0])


class ConvKind(Kind):
    """``torch.nn.Conv1d/2d/3d``: the kernel read as ``out x (in/groups * prod(kernel))``.

    The activation path runs the base convolution (its stride, padding, padding mode, dilation and groups) with
    ``right`` as ``r`` kernels repeated for each of the ``g`` groups (``g * r`` channels), scales them by dz and
    mixes them with a grouped 1x1 convolution whose kernel is ``left`` (output channel ``o`` reads the ``r``
    channels of its own group). For ``groups=1`` that is LoRA's conv pair.
    """

    def __init__(self, base: nn.Module) -> None:
        super().__init__(base)
        self.weight_shape = tuple(base.weight.shape)
        self.dims = len(self.weight_shape) - 2
        self.conv = (F.conv1d, F.conv2d, F.conv3d)[self.dims - 1]

    def shape(self) -> tuple[int, int]:
        w = self.base.weight
        return w.shape[0], math.prod(w.shape[1:])

    def describe(self) -> str:
        kernel = "x".join(str(s) for s in self.weight_shape)
        return f" ({type(self.base).__name__} kernel {kernel} read as out x in/groups*kernel)"

    def matrix(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.reshape(weight.shape[0], -1)

    def to_weight(self, m: torch.Tensor) -> torch.Tensor:
        return m.reshape(self.weight_shape)

    def tokens(self, x: torch.Tensor) -> int:
        """Output positions of the call (batch x output size), from the input's shape."""
        base = self.base
        batch = x.shape[0] if x.dim() == self.dims + 2 else 1
        positions = batch
        for i, size in enumerate(x.shape[-self.dims :]):
            if isinstance(base.padding, str):
                pad = 0 if base.padding == "valid" else None
            else:
                pad = base.padding[i]
            if pad is None:  # 'same': stride is 1, the output is as large as the input
                positions *= size
                continue
            span = base.dilation[i] * (base.kernel_size[i] - 1) + 1
            positions *= max((size + 2 * pad - span) // base.stride[i] + 1, 0)
        return positions

    def forward_with(self, x, m, bias):
        return self.base._conv_forward(x, self.to_weight(m), bias)

    def activation(self, x, left, dz, right):
        g = self.base.groups
        kernel = right.reshape(-1, *self.weight_shape[1:])  # r kernels over one group's inputs
        if g > 1:
            kernel = kernel.repeat(g, *([1] * (self.dims + 1)))
            dz = dz.repeat(g)
        h = self.base._conv_forward(x, kernel, None)
        h = h * dz.reshape(-1, *([1] * self.dims))
        mix = left.reshape(left.shape[0], left.shape[1], *([1] * self.dims))
        return self.conv(h, mix, None, 1, 0, 1, g)

    def costs(self, tokens, r, training):
        # As a matrix layer's, but the first convolution makes g * r channels of in/g * prod(k) each (then the
        # 1x1 mix costs out * r).
        costs = super().costs(tokens, r, training)
        costs["activation"] = tokens * r * (self.base.groups * self.in_features + self.out_features) * (1 + training)
        return costs


class EmbeddingKind(Kind):
    """``torch.nn.Embedding``: the weight (num x dim) is the matrix; the forward looks up rows of ``M_eff``.

    ``padding_idx`` keeps its meaning: the padding row's entry of ``left`` is zero, so the adapter never changes
    that row (in PyTorch it is never trained either). ``max_norm`` is refused (:func:`kind_for`): its lookup
    renormalises rows of the weight in place, which would rewrite the frozen base weight and break unmerging.
    ``scale_grad_by_freq`` scales dz's gradient as it scales the weight's; the adapter never asks for sparse
    gradients (the base weight is frozen). A subclass that scales its lookup by an ``embed_scale`` attribute
    (Gemma's scaled word embeddings) gets its update scaled alike.
    """

    def tokens(self, x: torch.Tensor) -> int:
        return x.numel()

    def fix_left(self, left):
        pad = self.base.padding_idx
        if pad is None:
            return left
        left = left.clone()
        left[pad] = 0
        return left

    def cast_input(self, x, dtype):
        return x  # indices

    def _lookup(self, x, weight):
        base = self.base
        return F.embedding(x, weight, base.padding_idx, None, base.norm_type, base.scale_grad_by_freq, False)

    def _scaled(self, out: torch.Tensor) -> torch.Tensor:
        # Scaled word embeddings (e.g. Gemma's) multiply the lookup by ``embed_scale`` in their forward; the
        # update is scaled alike (PEFT's LoRA reads the same attribute).
        scale = getattr(self.base, "embed_scale", None)
        if scale is None:
            return out
        return out * torch.as_tensor(scale, device=out.device).to(out.dtype)

    def forward_with(self, x, m, bias):
        return self._scaled(self._lookup(x, m))

    def activation(self, x, left, dz, right):
        if self.base.scale_grad_by_freq:  # scale the rows before the lookup so dz's gradient is scaled too
            return self._scaled(self._lookup(x, left * dz) @ right)
        return self._scaled((self._lookup(x, left) * dz) @ right)

    def costs(self, tokens, r, training):
        # A lookup costs nothing: activation is tokens * r * dim, the merged weight num * r * dim.
        out_f, in_f = self.out_features, self.in_features
        activation = tokens * r * in_f
        weight = out_f * r * in_f
        if training:
            activation *= 2
            weight += out_f * r * in_f
        return {"activation": activation, "weight": weight}


SUPPORTED: tuple[tuple[type, type[Kind]], ...] = (
    (nn.Linear, LinearKind),
    (Conv1D, Conv1DKind),
    (nn.Conv1d, ConvKind),
    (nn.Conv2d, ConvKind),
    (nn.Conv3d, ConvKind),
    (nn.Embedding, EmbeddingKind),
)
"""Base layer type -> its :class:`Kind` (first match wins)."""


def _kind_class(base: nn.Module) -> type[Kind] | None:
    for cls, kind in SUPPORTED:
        if isinstance(base, cls):
            return kind
    return None


def kind_for(base: nn.Module, name: str | None = None) -> Kind:
    """The :class:`Kind` of a base layer, or a refusal.

    Raises:
        ValueError: a layer type no adapter layer exists for (PEFT's wording), or an embedding with ``max_norm``.
    """
    kind = _kind_class(base)
    if kind is None:
        raise ValueError(unsupported_message(base))
    if kind is EmbeddingKind and base.max_norm is not None:
        where = f"{name} " if name else ""
        raise ValueError(
            f"Embedding {where}has max_norm={base.max_norm}: its lookup renormalises rows of the base weight in "
            "place, which would rewrite the frozen weight under the adapter (and break merge/unmerge). LoLDU and "
            "SVFit do not adapt embeddings with max_norm; leave this layer out of target_modules."
        )
    return kind(base)


def matrix_shape(base: nn.Module) -> tuple[int, int] | None:
    """The (out, in) matrix a supported base layer is factorised as, or None for a type that is not supported."""
    kind = _kind_class(base)
    return None if kind is None else tuple(kind(base).shape())
