"""The fused LoLDU/SVFit linear: one matmul through the merged weight, rank-r gradients."""

from __future__ import annotations

import torch
import torch.nn.functional as F


class FusedDiagLinear(torch.autograd.Function):
    """``y = x W_eff^T + b`` through the merged weight, with cheap gradients.

    The forward builds ``W_eff = W + left diag(dz) right`` (out*r*in
    multiply-adds) and runs one matmul, as the base layer would. The backward
    sends the gradient of x through ``W_eff`` (what the base layer costs
    anyway) and gets dz's gradient one of two ways, as the caller picked by
    cost (``dz_by_weight``, see :func:`loldu.methods.diagonal.dz_grad_costs`):
    from the two rank-r projections, or from the full weight gradient ``G^T X``
    projected onto the factors (always when the weight's gradient is needed).

    Every matmul runs in ``dtype`` (the autocast dtype under autocast, else the
    base weight's), with autocast off inside, so the caller decides the
    precision the way ``nn.Linear`` under autocast would; dz and its gradient
    keep dz's own dtype. With ``recompute`` the backward rebuilds ``W_eff``
    instead of keeping it: only x (in ``dtype``) is saved beside tensors that
    live anyway (weight, factors, dz).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, left, right, dz, dtype, recompute, dz_by_weight):
        with torch.autocast(x.device.type, enabled=False):
            xc = x.to(dtype)
            w_eff = torch.addmm(weight.to(dtype), left.to(dtype) * dz.to(dtype), right.to(dtype))
            out = F.linear(xc, w_eff, None if bias is None else bias.to(dtype))
        ctx.save_for_backward(xc, weight if recompute else w_eff, left, right, dz)
        ctx.dtype, ctx.recompute, ctx.dz_by_weight = dtype, recompute, dz_by_weight
        ctx.dtypes = (x.dtype, weight.dtype, None if bias is None else bias.dtype)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, w_saved, left, right, dz = ctx.saved_tensors
        dtype = ctx.dtype
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        grad_x = grad_w = grad_b = grad_dz = None
        with torch.autocast(grad_out.device.type, enabled=False):
            grad_out = grad_out.to(dtype)
            lc, rc = left.to(dtype), right.to(dtype)
            if ctx.needs_input_grad[0]:
                w_eff = torch.addmm(w_saved.to(dtype), lc * dz.to(dtype), rc) if ctx.recompute else w_saved
                grad_x = (grad_out @ w_eff).to(x_dtype)
            g2 = grad_out.reshape(-1, grad_out.shape[-1])
            x2 = x.reshape(-1, x.shape[-1])
            gw = None
            if ctx.needs_input_grad[1]:
                gw = g2.T @ x2
                grad_w = gw.to(w_dtype)
            if b_dtype is not None and ctx.needs_input_grad[2]:
                grad_b = g2.float().sum(0).to(b_dtype)
            if ctx.needs_input_grad[5]:
                if ctx.dz_by_weight or gw is not None:
                    gw = gw if gw is not None else g2.T @ x2
                    grad_dz = ((lc.T @ gw).float() * rc.float()).sum(1)
                else:
                    grad_dz = ((g2 @ lc).float() * (x2 @ rc.T).float()).sum(0)
                grad_dz = grad_dz.to(dz.dtype)
        return grad_x, grad_w, grad_b, None, None, grad_dz, None, None, None
