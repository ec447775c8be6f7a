"""The MELoRA tuner layer: ``n`` mini LoRAs on the diagonal of one ``nn.Linear`` (or transformers ``Conv1D``).

An adapted layer computes ``base(x) + scaling * blockdiag(B_1 A_1, ..., B_n A_n) x``. Per adapter the layer holds
two parameters, laid out so that ``n = 1`` gives LoRA's shapes exactly:

* ``melora_A``: ``(r, in / n)``, the ``A_i`` stacked by rows: ``A_i = A[i*k:(i+1)*k]`` with ``k = r / n``;
* ``melora_B``: ``(out, k)``, the ``B_i`` stacked by rows: ``B_i = B[i*(out/n):(i+1)*(out/n)]``.

Mini LoRA ``i`` reads input slice ``x[..., i*(in/n):(i+1)*(in/n)]`` and writes output slice ``i``. The base weight is
changed only by :meth:`MELoRALayer.merge`.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from peft.tuners.tuners_utils import BaseTunerLayer, check_adapters_to_merge
from torch import nn
from transformers.pytorch_utils import Conv1D

__all__ = ["MELoRALayer", "check_target", "layer_features"]


def layer_features(layer: nn.Module, where: str) -> tuple[int, int, bool]:
    """``(in_features, out_features, fan_in_fan_out)`` of a layer MELoRA adapts.

    Raises:
        ValueError: ``layer`` is neither ``nn.Linear`` nor transformers' ``Conv1D``.
    """
    if isinstance(layer, nn.Linear):
        return layer.in_features, layer.out_features, False
    if isinstance(layer, Conv1D):  # GPT-2 style: weight stored (in, out)
        return layer.weight.shape[0], layer.weight.shape[1], True
    raise ValueError(
        f"MELoRA cannot adapt {where}: it is a {type(layer).__name__}, and MELoRA adapts torch.nn.Linear (and "
        "transformers' Conv1D) layers only. Narrow target_modules (or set exclude_modules) to Linear layers."
    )


def check_target(layer: nn.Module, where: str, r: int, n_mini: int) -> tuple[int, int, bool]:
    """Refuse a layer MELoRA cannot adapt with ``r`` and ``n_mini``; return its features as :func:`layer_features`.

    Raises:
        ValueError: not a Linear (or Conv1D) layer, its in or out features are not divisible by ``n_mini``, or
            ``r`` exceeds ``min(in, out)``.
    """
    in_f, out_f, fan_in_fan_out = layer_features(layer, where)
    if in_f % n_mini or out_f % n_mini:
        common = math.gcd(in_f, out_f)
        divisors = [d for d in range(1, common + 1) if common % d == 0 and d > 1][:8]
        hint = f"e.g. n_mini in {divisors}" if divisors else "only n_mini=1 (plain LoRA) fits"
        raise ValueError(
            f"MELoRA cannot adapt {where}: in_features={in_f} and out_features={out_f} must both be divisible by "
            f"n_mini={n_mini} (each mini LoRA maps one 1/n_mini slice of the input to one of the output). "
            f"Choose an n_mini that divides {common} ({hint}), or leave {where} out of target_modules."
        )
    if r > min(in_f, out_f):
        raise ValueError(
            f"MELoRA's r={r} exceeds min(in, out)={min(in_f, out_f)} of {where} ({in_f} -> {out_f}): the "
            f"block-diagonal update has rank at most that. Choose r <= {min(in_f, out_f)} (a multiple of n_mini)."
        )
    return in_f, out_f, fan_in_fan_out


class MELoRALayer(nn.Module, BaseTunerLayer):
    """``nn.Linear`` / ``Conv1D`` wrapper with MELoRA adapters (see the module doc for the layout)."""

    prefix = "melora_"
    adapter_layer_names = ("melora_A", "melora_B")
    other_param_names = ("r", "n_mini", "scaling", "melora_dropout")

    def __init__(self, base_layer: nn.Module, where: str = "the layer", **kwargs) -> None:
        nn.Module.__init__(self)
        self.base_layer = base_layer
        self.melora_A = nn.ParameterDict({})
        self.melora_B = nn.ParameterDict({})
        self.melora_dropout = nn.ModuleDict({})
        self.r: dict[str, int] = {}
        self.n_mini: dict[str, int] = {}
        self.scaling: dict[str, float] = {}
        self._disable_adapters = False
        self.merged_adapters = []
        self.kwargs = kwargs
        self.where = where
        self.in_features, self.out_features, self.fan_in_fan_out = layer_features(self.get_base_layer(), where)

    def update_layer(self, adapter_name: str, config) -> None:
        """Create adapter ``adapter_name``: A Kaiming-uniform (LoRA's init, fan-in ``in / n_mini``), B zero.

        Raises:
            ValueError: the features are not divisible by ``n_mini``, ``r`` does not fit, or the layer is merged.
        """
        if adapter_name in self.merged_adapters or self.merged:
            raise ValueError(f"cannot add adapter {adapter_name!r} to {self.where} while adapters are merged; unmerge")
        r, n = config.r, config.n_mini
        check_target(self.get_base_layer(), self.where, r, n)
        k = r // n
        a = torch.empty(r, self.in_features // n)
        nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # every A_i has fan-in in/n, as an nn.Linear(in/n, k) would
        self.melora_A[adapter_name] = nn.Parameter(a)
        self.melora_B[adapter_name] = nn.Parameter(torch.zeros(self.out_features, k))
        self.melora_dropout[adapter_name] = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.r[adapter_name] = r
        self.n_mini[adapter_name] = n
        self.scaling[adapter_name] = config.scaling
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    # -- the update -----------------------------------------------------------------------------------------------
    def blocks(self, adapter_name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The mini LoRAs as batches: ``A`` ``(n, k, in/n)`` and ``B`` ``(n, out/n, k)`` (views, no copies)."""
        a, b = self.melora_A[adapter_name], self.melora_B[adapter_name]
        n = self.n_mini[adapter_name]
        k = a.shape[0] // n
        return a.view(n, k, a.shape[1]), b.view(n, b.shape[0] // n, k)

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        """``scaling * blockdiag(B_i A_i)``, shaped like the base weight (transposed for ``Conv1D``)."""
        a, b = self.blocks(adapter_name)
        dtype = a.dtype
        # half-precision matmuls on CPU are slow and imprecise: compute in float32 there, as PEFT's LoRA does
        if a.device.type == "cpu" and dtype in (torch.float16, torch.bfloat16):
            a, b = a.float(), b.float()
        delta = torch.block_diag(*torch.bmm(b, a).unbind(0)) * self.scaling[adapter_name]
        delta = delta.to(dtype)
        return delta.T if self.fan_in_fan_out else delta

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """Add the active (or named) adapters' updates into the base weight.

        Raises:
            ValueError: with ``safe_merge``, if the merged weight is not finite.
        """
        base = self.get_base_layer()
        for name in check_adapters_to_merge(self, adapter_names):
            if name not in self.melora_A:
                continue
            delta = self.get_delta_weight(name).detach().to(base.weight.dtype)
            with torch.no_grad():
                if safe_merge:
                    merged = base.weight.data + delta
                    if not torch.isfinite(merged).all():
                        raise ValueError(f"merging adapter {name!r} into {self.where} gives non-finite weights")
                    base.weight.data = merged
                else:
                    base.weight.data += delta
            self.merged_adapters.append(name)

    def unmerge(self) -> None:
        """Subtract every merged adapter's update from the base weight (exact up to one rounding per element)."""
        if not self.merged:
            warnings.warn("Already unmerged. Nothing to do.", stacklevel=2)
            return
        weight = self.get_base_layer().weight
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            if name in self.melora_A:
                with torch.no_grad():
                    weight.data -= self.get_delta_weight(name).detach().to(weight.dtype)

    # -- forward --------------------------------------------------------------------------------------------------
    def delta_output(self, adapter_name: str, x: torch.Tensor) -> torch.Tensor:
        """Adapter ``adapter_name``'s contribution ``scaling * blockdiag(B_i A_i) x``, without building the matrix."""
        a = self.melora_A[adapter_name]
        x = self.melora_dropout[adapter_name](self._cast_input_dtype(x, a.dtype))
        scaling = self.scaling[adapter_name]
        if self.n_mini[adapter_name] == 1:  # LoRA: the very same two products PEFT's LoRA computes
            return F.linear(F.linear(x, a), self.melora_B[adapter_name]) * scaling
        a_blocks, b_blocks = self.blocks(adapter_name)
        slices = x.unflatten(-1, (a_blocks.shape[0], a_blocks.shape[2]))  # (..., n, in/n)
        h = torch.einsum("...ni,nki->...nk", slices, a_blocks)  # each slice through its own A_i
        return torch.einsum("...nk,nok->...no", h, b_blocks).flatten(-2) * scaling

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_layer(x, *args, **kwargs)
        if self.merged:
            return self.base_layer(x, *args, **kwargs)
        result = self.base_layer(x, *args, **kwargs)
        result_dtype = result.dtype
        for name in self.active_adapters:
            if name in self.melora_A:
                result = result + self.delta_output(name, x)
        return result.to(result_dtype)

    def supports_lora_conversion(self, adapter_name: str = "default") -> bool:
        return True  # additive: W' = W + delta W

    def __repr__(self) -> str:
        return "melora." + super().__repr__()
