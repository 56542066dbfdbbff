"""lstm_rows with its input-to-state convolution fused in: PixelRNN's whole LSTM layer in one op.

    gates_in = conv_rows(x, in_weight, in_pad_left)       (a 1 x k_in convolution along each row)
    h, c = lstm_rows(gates_in, weight, bias, h0, c0, pad_left)

The Row LSTM's masked 1 x k input convolution is such a convolution (its visible taps), and so
is the Diagonal BiLSTM's 1 x 1 one on the skewed map. The CPU kernel computes each row's part
of the convolution inside the recurrence, as a second gather into the same column buffer as the
state's convolution, so the [B, 4D, R, L] gates_in tensor is never written, read or
backpropagated through as a tensor: the backward gathers dL/dx from the gate gradients in the
same row loop. Without the CPU kernel the two ops run one after the other.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from genfast import _backend, _ext
from genfast.ops import lstm_row
from genfast.ops._library import register_fake_and_autograd

__all__ = ["lstm_rows_conv", "lstm_rows_conv_ref", "conv_rows", "skewed_extent"]


def conv_rows(x: torch.Tensor, in_weight: torch.Tensor, in_pad_left: int) -> torch.Tensor:
    """x [B, C, R, L] -> [B, 4D, R, L]: tap t of output l reads x at l + t - in_pad_left."""
    k = in_weight.shape[2]
    return F.conv2d(F.pad(x, (in_pad_left, k - 1 - in_pad_left)), in_weight.unsqueeze(2))


def skewed_extent(rows: int, length: int, skew_width: int, device=None):
    """For a skewed map (see lstm_rows_conv): [R, L] 0/1 masks of the live positions (pixels)
    and of the positions the cpu kernel computes or copies (the live ones and the two after)."""
    step = torch.arange(rows, device=device)[:, None]
    position = torch.arange(length, device=device)[None, :]
    live = (position <= step) & (position >= step - skew_width + 1)
    kept = (position <= step + 2) & (position >= step - skew_width + 1)
    return live, kept


def _skewed_rows(x, in_weight, weight, bias, h0, c0, in_pad_left, pad_left, skew_width, rows):
    """``rows`` (an lstm_rows) on a skewed map: x zero at the padding, h and c kept where the
    cpu kernel keeps them."""
    live, kept = skewed_extent(x.shape[2], x.shape[3], skew_width, x.device)
    h, c = rows(conv_rows(x * live.to(x.dtype), in_weight, in_pad_left), weight, bias, h0, c0,
                pad_left)
    return h * kept.to(h.dtype), c * kept.to(c.dtype)


def lstm_rows_conv_ref(x, in_weight, weight, bias=None, h0=None, c0=None, in_pad_left=0,
                       pad_left=None, skew_width=0):
    """The reference: conv_rows, then lstm_rows_ref's Python loop over the rows (for a skewed
    map, x read as zero at the padding and h and c masked as the fast kernel keeps them)."""
    if skew_width:
        return _skewed_rows(x, in_weight, weight, bias, h0, c0, in_pad_left, pad_left,
                            skew_width, lstm_row.lstm_rows_ref)
    return lstm_row.lstm_rows_ref(conv_rows(x, in_weight, in_pad_left), weight, bias, h0, c0,
                                  pad_left)


# ----------------------------------------------------------------------------- the CPU op

def _fake_forward(x, in_weight, weight, bias, h0, c0, in_pad_left, pad_left, skew_width=0):
    batch, _, rows, length = x.shape
    gates = in_weight.shape[0]
    cell = lstm_row.cell_dtype(x.dtype)
    h = x.new_empty(batch, gates // 4, rows, length)
    c = x.new_empty(batch, gates // 4, rows, length, dtype=cell)
    # The activations saved for the backward, row-major [R, B, 4D, L], or for a skewed map only
    # at the positions computed, flat (GateLayout in csrc/lstm_row_common.h).
    if skew_width:
        computed = sum(min(r + 1, length - 1) - max(0, r - skew_width + 1) + 1
                       for r in range(rows))
        return h, c, x.new_empty(batch * gates * computed, dtype=cell)
    return h, c, x.new_empty(rows, batch, gates, length, dtype=cell)


def _fake_backward(grad_h, grad_c, x, in_weight, weight, h, c, gates, h0, c0, in_pad_left,
                   pad_left, skew_width=0):
    def like(t):
        return torch.empty_like(t, memory_format=torch.contiguous_format)

    return (like(x), like(in_weight), like(weight), weight.new_empty(weight.shape[0]), like(h0),
            like(c0))


def _setup_context(ctx, inputs, output):
    # options: in_pad_left, pad_left, skew_width (which may be left out)
    x, in_weight, weight, bias, h0, c0, *options = inputs
    h, c, gates = output
    ctx.mark_non_differentiable(gates)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(x, in_weight, weight, h, c, gates, h0, c0)
    ctx.geometry = tuple(options)  # the backward op's
    ctx.options = len(options)
    ctx.has_bias = bias is not None


def _make_backward(backward_op):
    def backward(ctx, grad_h, grad_c, grad_gates):
        x, in_weight, weight, h, c, gates, h0, c0 = ctx.saved_tensors
        if grad_h is None:
            grad_h = h.new_zeros(()).expand(h.shape)
        if grad_c is None:
            grad_c = c.new_zeros(()).expand(c.shape)
        grads = backward_op(grad_h, grad_c, x, in_weight, weight, h, c, gates, h0, c0,
                            *ctx.geometry)
        needs = ctx.needs_input_grad
        wants = (needs[0], needs[1], needs[2], ctx.has_bias and needs[3], needs[4], needs[5])
        return (*(g if want else None for g, want in zip(grads, wants)),
                *(None for _ in range(ctx.options)))

    return backward


HAS_CPU_KERNEL = _ext.has_op("lstm_rows_conv") and _ext.has_kernel("lstm_rows_conv", "CPU")
if HAS_CPU_KERNEL:
    register_fake_and_autograd("genfast::lstm_rows_conv", "genfast::lstm_rows_conv_backward",
                               _fake_forward, _fake_backward, _make_backward, _setup_context)


# ----------------------------------------------------------------------------- public API

def _check_conv_args(x, in_weight, in_pad_left, hidden4: int) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"genfast: x must be [batch, channels, rows, length], got {shape}")
    if x.dtype not in _backend.FLOAT_DTYPES:
        raise TypeError(f"genfast: x must be float16, bfloat16, float32 or float64, got {x.dtype}")
    if not isinstance(in_weight, torch.Tensor) or in_weight.dim() != 3 \
            or tuple(in_weight.shape[:2]) != (hidden4, x.shape[1]) or in_weight.shape[2] < 1:
        shape = tuple(in_weight.shape) if isinstance(in_weight, torch.Tensor) else in_weight
        raise ValueError(f"genfast: in_weight must be [4 * hidden, channels, k_in] = "
                         f"[{hidden4}, {x.shape[1]}, k_in >= 1], got {shape}")
    if in_weight.dtype != x.dtype or in_weight.device != x.device:
        raise TypeError(f"genfast: in_weight must match x's dtype and device ({x.dtype} on "
                        f"{x.device}), got {in_weight.dtype} on {in_weight.device}")
    k = in_weight.shape[2]
    if isinstance(in_pad_left, bool) or not isinstance(in_pad_left, int) \
            or not 0 <= in_pad_left <= k:
        raise ValueError(f"genfast: in_pad_left must be an int in [0, {k}], got {in_pad_left!r}")


def _check_skew(x, in_weight, weight, h0, c0, in_pad_left, pad_left, skew_width) -> None:
    if isinstance(skew_width, bool) or not isinstance(skew_width, int) or skew_width < 0:
        raise ValueError(f"genfast: skew_width must be an int >= 0, got {skew_width!r}")
    if not skew_width:
        return
    if weight.shape[2] != 2 or pad_left != 1 or in_weight.shape[2] != 1 or in_pad_left != 0:
        raise ValueError("genfast: a skewed map (skew_width > 0) needs the Diagonal BiLSTM's "
                         "kernels: k = 2, pad_left = 1, k_in = 1, in_pad_left = 0")
    if h0 is not None or c0 is not None:
        raise ValueError("genfast: a skewed map starts from zero states: pass h0 = c0 = None")
    rows, length = x.shape[2], x.shape[3]
    if rows != length + skew_width - 1:
        raise ValueError(f"genfast: a skewed map of {length} x {skew_width} has "
                         f"{length + skew_width - 1} rows, x has {rows}")


def lstm_rows_conv(x, in_weight, weight, bias=None, h0=None, c0=None, in_pad_left=0,
                   pad_left=None, skew_width=0, *, backend=None):
    """lstm_rows(conv_rows(x, in_weight, in_pad_left), weight, bias, h0, c0, pad_left).

    Args:
        x: [B, C, R, L] the input rows (float16, bfloat16, float32 or float64).
        in_weight: [4D, C, k_in] the input-to-state convolution along the row, gates i, f, o, g.
        in_pad_left: zero columns left of x's row, in [0, k_in]: tap t of output l reads x at
            l + t - in_pad_left (k_in: every tap left of the output, as a mask-A row kernel).
        weight, bias, h0, c0, pad_left, backend: as for genfast.ops.lstm_rows.
        skew_width: 0, or W > 0 when x is a skewed L x W map of R = L + W - 1 diagonals, row r
            holding the pixels (l, r - l) (the Diagonal BiLSTM: k = 2, pad_left = 1, k_in = 1,
            in_pad_left = 0, h0 = c0 = None). Row r then depends only on its live positions
            r - W + 1 <= l <= r and on the padding after them, whose states are all equal: the
            cpu kernel computes the live positions and one padding position (about half of a
            square map) and copies that one to the next. x is read as zero at the padding, and
            h and c are zero outside the positions computed or copied (lstm_rows_conv_ref
            masks the same way).
    Returns:
        (h, c), each [B, D, R, L], dtypes as for lstm_rows.

    The cpu backend runs the fused kernel; the others compute the convolution with
    torch.nn.functional.conv2d and then call lstm_rows on that backend.
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() != 3:
        raise ValueError("genfast: weight must be a [4 * hidden, hidden, k] tensor, got "
                         f"{tuple(weight.shape) if isinstance(weight, torch.Tensor) else weight!r}")
    hidden4 = weight.shape[0]
    _check_conv_args(x, in_weight, in_pad_left, hidden4)
    _check_skew(x, in_weight, weight, h0, c0, in_pad_left, pad_left, skew_width)
    name = _backend.select("lstm_rows", backend, x.device, x.dtype, lstm_row.IMPLEMENTED)
    if name != "cpu" or not HAS_CPU_KERNEL:
        def rows(*args):
            return lstm_row.lstm_rows(*args, backend=name)

        if skew_width:
            return _skewed_rows(x, in_weight, weight, bias, h0, c0, in_pad_left, pad_left,
                                skew_width, rows)
        return rows(conv_rows(x, in_weight, in_pad_left), weight, bias, h0, c0, pad_left)
    gates_like = x.new_empty(()).expand(x.shape[0], hidden4, x.shape[2], x.shape[3])
    pad_left = lstm_row._check_args(gates_like, weight, bias, h0, c0, pad_left)
    h0, c0 = lstm_row.initial_states(x, hidden4 // 4, h0, c0)
    h, c, _ = torch.ops.genfast.lstm_rows_conv(x, in_weight, weight, bias, h0, c0, in_pad_left,
                                               pad_left, skew_width)
    return h, c
