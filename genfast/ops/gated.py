"""The Gated PixelCNN's gated activation (van den Oord et al. 2016, "Conditional Image Generation
with PixelCNN Decoders", eq. 2): y = tanh(W_f * x) * sigmoid(W_g * x).

The convolution before the gate produces both halves at once, stacked along the channel
dimension, so the op takes that one tensor: x.chunk(2, dim) gives (a, b) and y = tanh(a) *
sigmoid(b). The fast backends fuse the split, both nonlinearities and the product into one pass
each way, and the backward recomputes tanh and sigmoid from x instead of saving them:
dL/da = dL/dy * sigmoid(b) * (1 - tanh(a)^2) and dL/db = dL/dy * tanh(a) * sigmoid(b) *
(1 - sigmoid(b)).
"""
from __future__ import annotations

import torch
from torch._prims_common import suggest_memory_format

from genfast import _backend, _ext
from genfast.ops._library import (eager_call, register_fake_and_autograd,
                                  triton_kernels_exist)


# ----------------------------------------------------------------------------- reference

def gated_activation_ref(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """tanh(a) * sigmoid(b) with a, b = x.chunk(2, dim), in plain PyTorch and x's dtype."""
    a, b = x.chunk(2, dim)
    return torch.tanh(a) * torch.sigmoid(b)


# ----------------------------------------------------------------------------- the ops

def _out_shape(x: torch.Tensor, dim: int) -> list[int]:
    shape = list(x.shape)
    shape[dim] //= 2
    return shape


def _fake_forward(x, dim):
    # The kernels write the output in x's memory format (channels-last stays channels-last).
    return torch.empty(_out_shape(x, dim), dtype=x.dtype, device=x.device,
                       memory_format=suggest_memory_format(x))


def _fake_backward(grad_out, x, dim):
    return torch.empty(x.shape, dtype=x.dtype, device=x.device,
                       memory_format=suggest_memory_format(x))


def _setup_context(ctx, inputs, output):
    x, dim = inputs
    ctx.save_for_backward(x)
    ctx.dim = dim


def _make_backward(backward_op):
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        return backward_op(grad_out, x, ctx.dim), None

    return backward


@torch.library.custom_op("genfast::gated_activation_triton", mutates_args=())
def _triton_forward(x: torch.Tensor, dim: int) -> torch.Tensor:
    """genfast::gated_activation on Triton (schema as in csrc/registration.cpp).

    Defined here rather than in C++ so that the Triton backend works without the extension.
    """
    from genfast.kernels import gated as kernels

    return kernels.gated_activation_forward(x, dim)


@torch.library.custom_op("genfast::gated_activation_triton_backward", mutates_args=())
def _triton_backward(grad_out: torch.Tensor, x: torch.Tensor, dim: int) -> torch.Tensor:
    from genfast.kernels import gated as kernels

    return kernels.gated_activation_backward(grad_out, x, dim)


def _register(forward_name: str, backward_name: str) -> None:
    register_fake_and_autograd(forward_name, backward_name, _fake_forward, _fake_backward,
                               _make_backward, _setup_context)


_FORWARD_OPS = {}
_CALLS = {}  # the same ops through eager_call, for gated_activation
if triton_kernels_exist("gated"):
    _register("genfast::gated_activation_triton", "genfast::gated_activation_triton_backward")
    _FORWARD_OPS["triton"] = torch.ops.genfast.gated_activation_triton
    _CALLS["triton"] = eager_call(torch.ops.genfast.gated_activation_triton,
                                  torch.ops.genfast.gated_activation_triton_backward,
                                  _setup_context, _make_backward)
if _ext.has_op("gated_activation"):
    _register("genfast::gated_activation", "genfast::gated_activation_backward")
    _FORWARD_OPS["cpu"] = torch.ops.genfast.gated_activation
    _CALLS["cpu"] = eager_call(torch.ops.genfast.gated_activation,
                               torch.ops.genfast.gated_activation_backward, _setup_context,
                               _make_backward)
    if _ext.has_kernel("gated_activation", "CUDA"):
        _FORWARD_OPS["cuda"], _CALLS["cuda"] = _FORWARD_OPS["cpu"], _CALLS["cpu"]
# A stale build of the extension may lack the op: then only the reference and Triton have it.
IMPLEMENTED = ("reference", *_FORWARD_OPS)


# ----------------------------------------------------------------------------- public API

def _check_args(x, dim) -> int:
    """dim wrapped into [0, x.dim()), after checking x and dim."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"genfast: x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _backend.FLOAT_DTYPES:
        raise TypeError(f"genfast: x must be float16, bfloat16, float32 or float64, got {x.dtype}")
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"genfast: dim must be an int, got {type(dim).__name__}")
    if x.dim() == 0:
        raise ValueError("genfast: gated_activation needs x with at least one dimension")
    if not -x.dim() <= dim < x.dim():
        raise ValueError(f"genfast: dim {dim} is out of range for x of shape {tuple(x.shape)}")
    dim %= x.dim()
    if x.shape[dim] % 2:
        raise ValueError(f"genfast: gated_activation splits x in two along dim {dim}, so its "
                         f"size there must be even; x has shape {tuple(x.shape)}")
    return dim


def gated_activation(x, dim=1, *, backend=None):
    """The Gated PixelCNN gate: tanh(a) * sigmoid(b) with a, b = x.chunk(2, dim).

    Args:
        x: [..., 2 * C, ...] with an even size along ``dim``: the filter half a first, then the
            gate half b (float16, bfloat16, float32 or float64; any memory format).
        dim: the dimension holding the two halves (default 1, the channels of NCHW).
        backend: 'auto', 'reference', 'cpu', 'triton' or 'cuda' (default: see genfast.backends).
    Returns:
        [..., C, ...] in x's dtype; the fast backends keep x's memory format (channels_last in,
        channels_last out) and make other strided inputs contiguous.
    """
    dim = _check_args(x, dim)
    name = _backend.select("gated_activation", backend, x.device, x.dtype, IMPLEMENTED)
    if name == "reference":
        return gated_activation_ref(x, dim)
    return _CALLS[name](x, dim)
