"""The row recurrence of PixelRNN's Row LSTM and Diagonal BiLSTM (van den Oord et al. 2016,
"Pixel Recurrent Neural Networks", section 3.1, eq. 3).

An image is processed one row at a time (R recurrence steps, each a "row" of L positions; for the
Diagonal BiLSTM a row is a column of the skewed map). The input-to-state part is computed for all
rows at once beforehand and comes in as ``gates_in``; the state-to-state part is a 1-D
convolution of the previous row's hidden state h_{r-1} with k taps along the row:

    [o, f, i, g] = [sigmoid, sigmoid, sigmoid, tanh](K_ss (*) h_{r-1} + K_is (*) x_r)
    c_r = f * c_{r-1} + i * g,   h_r = o * tanh(c_r)

here with the gates stacked in the order i, f, o, g (``gates_in.chunk(4, dim=1)``). Tap t of
position l reads h_{r-1} at l + t - pad_left, with zeros outside the row.

The fast backends run the loop over rows inside one op, fusing each step's convolution, bias,
nonlinearities and state updates, and backpropagate through the rows in reverse in one backward
op; the forward returns the activations so the backward need not recompute them. The cell state
c is kept in float32 for float16/bfloat16 inputs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from genfast import _backend, _ext
from genfast.ops._library import register_fake_and_autograd, triton_kernels_exist

LOW_PRECISION = (torch.float16, torch.bfloat16)


def cell_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of the cell state and saved gates for inputs of ``dtype``."""
    return torch.float32 if dtype in LOW_PRECISION else dtype


# ----------------------------------------------------------------------------- reference

def lstm_row_step_ref(gates_in_row, h_prev, c_prev, weight, bias=None, pad_left=None):
    """One row: gates_in_row [B, 4D, L], h_prev and c_prev [B, D, L] -> (h, c), each [B, D, L].

    Plain PyTorch in the input dtype, except that c is computed and returned in float32 for
    float16/bfloat16 inputs, as the fast kernels keep it.
    """
    k = weight.shape[2]
    pad_left = (k - 1) // 2 if pad_left is None else pad_left
    recurrent = F.conv1d(F.pad(h_prev, (pad_left, k - 1 - pad_left)), weight, bias)
    i, f, o, g = (gates_in_row + recurrent).chunk(4, dim=1)
    i, f, o, g = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o), torch.tanh(g)
    c = f * c_prev.to(cell_dtype(gates_in_row.dtype)) + i * g
    h = (o * torch.tanh(c)).to(gates_in_row.dtype)
    return h, c


def lstm_rows_ref(gates_in, weight, bias=None, h0=None, c0=None, pad_left=None):
    """A Python loop of lstm_row_step_ref over the R rows of gates_in [B, 4D, R, L].

    Returns (h, c), each [B, D, R, L]; h0 and c0 default to zeros.
    """
    batch, channels, rows, length = gates_in.shape
    shape = (batch, channels // 4, length)
    h = gates_in.new_zeros(shape) if h0 is None else h0
    c = gates_in.new_zeros(shape, dtype=cell_dtype(gates_in.dtype)) if c0 is None else c0
    hs, cs = [], []
    # unbind, not gates_in[:, :, r]: the backward of R selects would write R full-size
    # zero tensors (O(R^2) memory traffic); unbind's backward is a single stack.
    for row_gates in gates_in.unbind(2):
        h, c = lstm_row_step_ref(row_gates, h, c, weight, bias, pad_left)
        hs.append(h)
        cs.append(c)
    if rows == 0:
        empty = gates_in.new_empty(batch, channels // 4, 0, length)
        return empty, empty.to(cell_dtype(gates_in.dtype))
    return torch.stack(hs, dim=2), torch.stack(cs, dim=2)


# ----------------------------------------------------------------------------- the ops

def _fake_forward(gates_in, weight, bias, h0, c0, pad_left):
    batch, channels, rows, length = gates_in.shape
    cell = cell_dtype(gates_in.dtype)
    h = gates_in.new_empty(batch, channels // 4, rows, length)
    c = gates_in.new_empty(batch, channels // 4, rows, length, dtype=cell)
    gates = gates_in.new_empty(batch, channels, rows, length, dtype=cell)
    return h, c, gates


def _fake_backward(grad_h, grad_c, weight, h, c, gates, h0, c0, pad_left):
    return (torch.empty(gates.shape, dtype=h.dtype, device=h.device),
            torch.empty_like(weight, memory_format=torch.contiguous_format),
            weight.new_empty(weight.shape[:-2]),
            torch.empty_like(h0, memory_format=torch.contiguous_format),
            torch.empty_like(c0, memory_format=torch.contiguous_format))


def _setup_context(ctx, inputs, output):
    gates_in, weight, bias, h0, c0, pad_left = inputs
    h, c, gates = output
    # The gates are returned only for the backward: no gradient flows back through them.
    ctx.mark_non_differentiable(gates)
    # An unused output's gradient reaches the backward as a broadcast zero instead of a
    # materialised tensor (the CPU kernel reads an expanded scalar without expanding it).
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(weight, h, c, gates, h0, c0)
    ctx.pad_left = pad_left
    ctx.has_bias = bias is not None


def _make_backward(backward_op):
    def backward(ctx, grad_h, grad_c, grad_gates):
        weight, h, c, gates, h0, c0 = ctx.saved_tensors
        if grad_h is None:
            grad_h = h.new_zeros(()).expand(h.shape)
        if grad_c is None:
            grad_c = c.new_zeros(()).expand(c.shape)
        grads = backward_op(grad_h, grad_c, weight, h, c, gates, h0, c0, ctx.pad_left)
        wants = (ctx.needs_input_grad[0], ctx.needs_input_grad[1],
                 ctx.has_bias and ctx.needs_input_grad[2], ctx.needs_input_grad[3],
                 ctx.needs_input_grad[4])
        return (*(g if want else None for g, want in zip(grads, wants)), None)

    return backward


@torch.library.custom_op("genfast::lstm_rows_triton", mutates_args=())
def _triton_forward(gates_in: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                    h0: torch.Tensor, c0: torch.Tensor,
                    pad_left: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """genfast::lstm_rows on Triton (schema as in csrc/registration.cpp).

    Defined here rather than in C++ so that the Triton backend works without the extension.
    """
    from genfast.kernels import lstm_row as kernels

    return kernels.lstm_rows_forward(gates_in, weight, bias, h0, c0, pad_left)


@torch.library.custom_op("genfast::lstm_rows_triton_backward", mutates_args=())
def _triton_backward(grad_h: torch.Tensor, grad_c: torch.Tensor, weight: torch.Tensor,
                     h: torch.Tensor, c: torch.Tensor, gates: torch.Tensor, h0: torch.Tensor,
                     c0: torch.Tensor, pad_left: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                torch.Tensor]:
    from genfast.kernels import lstm_row as kernels

    return kernels.lstm_rows_backward(grad_h, grad_c, weight, h, c, gates, h0, c0, pad_left)


def _register(forward_name: str, backward_name: str) -> None:
    register_fake_and_autograd(forward_name, backward_name, _fake_forward, _fake_backward,
                               _make_backward, _setup_context)


_FORWARD_OPS = {}
if triton_kernels_exist("lstm_row"):
    _register("genfast::lstm_rows_triton", "genfast::lstm_rows_triton_backward")
    _FORWARD_OPS["triton"] = torch.ops.genfast.lstm_rows_triton
if _ext.has_op("lstm_rows"):
    _register("genfast::lstm_rows", "genfast::lstm_rows_backward")
    if _ext.has_kernel("lstm_rows", "CPU"):
        _FORWARD_OPS["cpu"] = torch.ops.genfast.lstm_rows
    if _ext.has_kernel("lstm_rows", "CUDA"):
        _FORWARD_OPS["cuda"] = torch.ops.genfast.lstm_rows
# A stale build of the extension may lack the op: then only the reference and Triton have it.
IMPLEMENTED = ("reference", *_FORWARD_OPS)


# ----------------------------------------------------------------------------- public API

def _check_tensor(name, t, dtype, device, shape, allowed_dtypes=None):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"genfast: {name} must be a torch.Tensor, got {type(t).__name__}")
    allowed = allowed_dtypes or (dtype,)
    if t.dtype not in allowed:
        names = " or ".join(str(d) for d in allowed)
        raise TypeError(f"genfast: {name} must have dtype {names} (as gates_in), got {t.dtype}")
    if t.device != device:
        raise ValueError(f"genfast: {name} is on {t.device} but gates_in is on {device}")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"genfast: {name} must have shape {tuple(shape)}, got {tuple(t.shape)}")


def _check_args(gates_in, weight, bias, h0, c0, pad_left) -> int:
    """pad_left resolved to an int, after checking every argument."""
    if not isinstance(gates_in, torch.Tensor):
        raise TypeError(f"genfast: gates_in must be a torch.Tensor, got {type(gates_in).__name__}")
    if gates_in.dtype not in _backend.FLOAT_DTYPES:
        raise TypeError(f"genfast: gates_in must be float16, bfloat16, float32 or float64, got "
                        f"{gates_in.dtype}")
    if gates_in.dim() != 4 or gates_in.shape[1] % 4:
        raise ValueError(f"genfast: gates_in must be [batch, 4 * hidden, rows, length] (gates i, "
                         f"f, o, g), got shape {tuple(gates_in.shape)}")
    if not isinstance(weight, torch.Tensor) or weight.dim() != 3:
        raise ValueError("genfast: weight must be a [4 * hidden, hidden, k] tensor, got "
                         f"{tuple(weight.shape) if isinstance(weight, torch.Tensor) else weight!r}")
    batch, channels, _, length = gates_in.shape
    hidden, k = channels // 4, weight.shape[2]
    if k < 1:
        raise ValueError("genfast: weight has no taps (k = 0)")
    dtype, device = gates_in.dtype, gates_in.device
    _check_tensor("weight", weight, dtype, device, (channels, hidden, k))
    if bias is not None:
        _check_tensor("bias", bias, dtype, device, (channels,))
    if h0 is not None:
        _check_tensor("h0", h0, dtype, device, (batch, hidden, length))
    if c0 is not None:
        _check_tensor("c0", c0, dtype, device, (batch, hidden, length),
                      (dtype, cell_dtype(dtype)))
    if pad_left is None:
        return (k - 1) // 2
    if isinstance(pad_left, bool) or not isinstance(pad_left, int) or not 0 <= pad_left < k:
        raise ValueError(f"genfast: pad_left must be an int in [0, k) = [0, {k}), got "
                         f"{pad_left!r}")
    return pad_left


def lstm_rows(gates_in, weight, bias=None, h0=None, c0=None, pad_left=None, *, backend=None):
    """Runs the LSTM row recurrence over all R rows of ``gates_in``.

    Args:
        gates_in: [B, 4D, R, L] input-to-state pre-activations of R rows of length L, the gates
            stacked i, f, o, g along dim 1 (float16, bfloat16, float32 or float64).
        weight: [4D, D, k] state-to-state convolution along the row (as nn.Conv1d's weight).
        bias: optional [4D], added to every pre-activation.
        h0, c0: [B, D, L] states before the first row (zeros when None); c0 may be float32 for
            float16/bfloat16 gates_in (the c of a previous call).
        pad_left: zero columns left of the row, in [0, k): tap t of position l reads
            h_{r-1}[l + t - pad_left]; default (k - 1) // 2, a centred kernel.
        backend: 'auto', 'reference', 'cpu', 'triton' or 'cuda' (default: see genfast.backends).
    Returns:
        (h, c), each [B, D, R, L]: h in gates_in's dtype, c in float32 for float16/bfloat16
        gates_in, else in gates_in's dtype.
    """
    pad_left = _check_args(gates_in, weight, bias, h0, c0, pad_left)
    name = _backend.select("lstm_rows", backend, gates_in.device, gates_in.dtype, IMPLEMENTED)
    if name == "reference":
        return lstm_rows_ref(gates_in, weight, bias, h0, c0, pad_left)
    h0, c0 = initial_states(gates_in, gates_in.shape[1] // 4, h0, c0)
    h, c, _ = _FORWARD_OPS[name](gates_in, weight, bias, h0, c0, pad_left)
    return h, c


def lstm_rows_grouped(gates_in, weight, bias=None, pad_left=None, *, backend=None):
    """lstm_rows for G groups of the batch at once, each with its own weights: image b of
    gates_in [B, 4D, R, L] runs with weight[g] [4D, D, k] and bias[g] for g = b // (B / G)
    (zero initial states). The Triton backend runs every group in one launch per row (how
    genfast.nn.DiagonalBiLSTM runs its two directions together on a GPU); the others run the
    groups one after another.

    Args:
        weight: [G, 4D, D, k]; bias: [G, 4D] or None; the rest as for lstm_rows.
    Returns:
        (h, c), each [B, D, R, L], as lstm_rows.
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        got = tuple(weight.shape) if isinstance(weight, torch.Tensor) else weight
        raise ValueError("genfast: lstm_rows_grouped needs weight [groups, 4 * hidden, hidden, "
                         f"k], got {got!r}")
    groups = weight.shape[0]
    if not isinstance(gates_in, torch.Tensor) or groups < 1 or gates_in.shape[0] % groups:
        raise ValueError(f"genfast: lstm_rows_grouped splits the batch into {groups} weight "
                         f"groups, got gates_in of shape {tuple(gates_in.shape)}")
    if bias is not None and (not isinstance(bias, torch.Tensor) or bias.dim() != 2
                             or bias.shape[0] != groups):
        raise ValueError(f"genfast: lstm_rows_grouped needs bias [{groups}, 4 * hidden], got "
                         f"{tuple(bias.shape) if isinstance(bias, torch.Tensor) else bias!r}")
    per_group = gates_in.shape[0] // groups
    slices = [slice(g * per_group, (g + 1) * per_group) for g in range(groups)]
    for g, rows in enumerate(slices):  # every group as lstm_rows would check it
        pad = _check_args(gates_in[rows], weight[g], None if bias is None else bias[g], None,
                          None, pad_left)
    name = _backend.select("lstm_rows", backend, gates_in.device, gates_in.dtype, IMPLEMENTED)
    if name == "triton":
        h0, c0 = initial_states(gates_in, gates_in.shape[1] // 4)
        h, c, _ = _FORWARD_OPS[name](gates_in, weight, bias, h0, c0, pad)
        return h, c
    outs = [lstm_rows(gates_in[rows], weight[g], None if bias is None else bias[g],
                      pad_left=pad, backend=name) for g, rows in enumerate(slices)]
    return torch.cat([h for h, _ in outs]), torch.cat([c for _, c in outs])


def initial_states(like, hidden, h0=None, c0=None):
    """The (h0, c0) the fused ops take, for a [B, *, R, L] input ``like``: zeros [B, hidden, L]
    where None, and c0 in the cell's dtype (float32 for float16/bfloat16)."""
    batch, _, _, length = like.shape
    cell = cell_dtype(like.dtype)
    h0 = like.new_zeros(batch, hidden, length) if h0 is None else h0
    c0 = like.new_zeros(batch, hidden, length, dtype=cell) if c0 is None else c0.to(cell)
    return h0, c0


def lstm_row_step(gates_in_row, h_prev=None, c_prev=None, weight=None, bias=None, pad_left=None,
                  *, backend=None):
    """One row of the recurrence: lstm_rows with R = 1, for samplers that go row by row.

    Args:
        gates_in_row: [B, 4D, L] the row's input-to-state pre-activations.
        h_prev, c_prev: [B, D, L] the previous row's states (zeros when None).
        weight, bias, pad_left, backend: as for lstm_rows.
    Returns:
        (h, c), each [B, D, L], dtypes as for lstm_rows.
    """
    if weight is None:
        raise TypeError("genfast: lstm_row_step needs the state-to-state weight")
    if not isinstance(gates_in_row, torch.Tensor) or gates_in_row.dim() != 3:
        shape = tuple(gates_in_row.shape) if isinstance(gates_in_row, torch.Tensor) else None
        raise ValueError(f"genfast: gates_in_row must be [batch, 4 * hidden, length], got "
                         f"{shape if shape is not None else type(gates_in_row).__name__}")
    h, c = lstm_rows(gates_in_row.unsqueeze(2), weight, bias, h_prev, c_prev, pad_left,
                     backend=backend)
    return h.squeeze(2), c.squeeze(2)
