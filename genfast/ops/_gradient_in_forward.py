"""Per-sample losses whose training forward also computes the gradient, in the same pass.

A loss like the logistic mixture NLL is cheap to differentiate once its forward has run, but a
backward op that recomputes the forward from the inputs costs a second pass. When a gradient
will be wanted, ``with_grad_op(*args)`` returns the loss [B] and d loss[b] / d input for an
upstream gradient of ones; the backward then only scales row b by grad_loss[b], in place, so
the call holds one input-sized buffer, as a recomputing backward would.

The stash is spent by the first backward. A second one (``retain_graph=True``) calls the
recomputing ``backward_op(grad_loss, *args)`` instead, so every backward is right. Under
torch.compile or a dispatch mode the plain call runs: compiled graphs and tracers see the
registered op with its registered formula.
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable
from torch.utils._python_dispatch import _get_current_dispatch_mode


class _GradientInForward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, with_grad_op, backward_op, differentiable, *args):
        loss, grad = with_grad_op(*args)
        ctx.save_for_backward(*(a for a in args if isinstance(a, torch.Tensor)))
        ctx.args = tuple(None if isinstance(a, torch.Tensor) else a for a in args)
        ctx.backward_op, ctx.differentiable = backward_op, differentiable
        ctx.stash = grad  # an attribute, not saved: it is modified in place below
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_loss):
        saved = iter(ctx.saved_tensors)
        args = tuple(next(saved) if a is None else a for a in ctx.args)
        grad, ctx.stash = ctx.stash, None
        if grad is None:
            grad = ctx.backward_op(grad_loss, *args)
        else:
            grad.mul_(grad_loss.reshape(-1, *(1,) * (grad.dim() - 1)))
        return (None, None, None,
                *(grad if i == ctx.differentiable else None for i in range(len(args))))


def gradient_in_forward_call(with_grad_op, backward_op, plain_call, differentiable: int):
    """``call(*args)``: plain_call(*args), except that where autograd will want the gradient of
    args[differentiable] the loss comes from with_grad_op with its gradient stashed."""
    def call(*args):
        if (torch.is_grad_enabled() and args[differentiable].requires_grad
                and not torch.compiler.is_compiling() and _get_current_dispatch_mode() is None):
            return _GradientInForward.apply(with_grad_op, backward_op, differentiable, *args)
        return plain_call(*args)

    return call
