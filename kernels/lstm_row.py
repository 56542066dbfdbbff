"""Triton kernels of genfast::lstm_rows: the row LSTM recurrence of PixelRNN (van den Oord et
al. 2016, "Pixel Recurrent Neural Networks", section 3.1, eq. 3), with the semantics of the
reference in genfast/ops/lstm_row.py and of the C++ kernels (csrc/lstm_row.cpp).

For rows r = 0 .. R-1 of length L, with k-tap state-to-state weights W [4D, D, k]:
    pre_r = gates_in_r + bias + sum_t W[:, :, t] @ h_{r-1}[:, l + t - pad_left]
    i, f, o = sigmoid(pre_i, pre_f, pre_o), g = tanh(pre_g)
    c_r = f * c_{r-1} + i * g,  h_r = o * tanh(c_r)
The state-to-state convolution of a row is one small GEMM [4D, D*k] x [D*k, L] whose right
operand is gathered from h_{r-1}: column l, reduction index e*k + t reads h_{r-1}[e, l + t -
pad_left] (zero outside the row), so W is used as stored, viewed as [4D, D*k].

Persistent design: one program per batch element walks all R rows, so a forward or a backward
is one launch. The previous row's state is read back from global memory (the output rows of h
and c, or small per-batch-element scratch that stays in L1/L2); tl.debug_barrier (bar.sync,
which also orders the block's global memory accesses) separates a row's writes from the next
row's reads. A row is walked in tiles of hidden channels x positions, each with the four gate
accumulators of its channels, so the non-linearities and the cell update are the GEMM's epilogue.

- forward: c and h in float32 (float64 for float64). h_{r-1} is read back from the output h
  in gates_in's dtype, so the recurrence sees exactly the h it returns (and backward reads);
  c and the activations are stored in the state dtype (float32 for float16 / bfloat16).
- backward: the rows in reverse, two phases per row. Phase 1 (element-wise): grad_h plus what
  reached h_r through row r+1's convolution, dL/dc_r, the gate derivatives dL/dpre_r and
  dL/dc_{r-1} = dL/dc_r * f. Phase 2: the transposed convolution dL/dh_{r-1}[e, m] =
  sum_{o, t} W[o, e, t] * dL/dpre_r[o, m - t + pad_left], a GEMM with the transposed weight
  [D, 4D*k]. After row 0 the scratch holds grad_h0 and grad_c0. grad_weight is a separate,
  fully parallel GEMM over all (batch, row, position) triples, split into parts the host adds
  in a fixed order; grad_bias is dL/dpre summed on the host: deterministic, no atomics.

Accumulation is in float32 (float64 for float64 inputs); float32 products use IEEE precision
rather than TF32. Offsets inside one batch element are int32 (the launchers check the sizes),
batch offsets and the grad-weight kernel's indices int64.
"""
from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

from ._aot import AotSpec, triton_type
from ._host import zeros
from .gated import _sigmoid, _tanh

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# Launch settings per dtype, read by the launchers and AOT_SPECS alike, chosen so that no variant
# spills on sm_80 or sm_90 (ptxas -v; values live across the row loop are what ptxas likes to
# spill, so these were picked by compiling the alternatives). tl.dot needs every block
# dimension >= 16. (BLOCK_D hidden channels, BLOCK_K reduction chunk, num_warps) of the per-row
# GEMMs; BLOCK_L, the positions of a tile, is picked per launch from L_CHOICES so that short
# rows do not leave most of a tile idle. float16 and bfloat16 products run on tensor cores;
# the backward works on float32 (float64) gate derivatives for every input dtype.
FORWARD_BLOCKS = {
    torch.float16: (32, 32, 8),
    torch.bfloat16: (32, 32, 8),
    torch.float32: (32, 16, 8),
    torch.float64: (16, 16, 4),
}
BACKWARD_BLOCKS = dict.fromkeys(_DTYPES, (32, 32, 8))
L_CHOICES = (16, 32)
# Grad-weight: (BLOCK_O gate channels, BLOCK_N (batch, row, position) triples, BLOCK_K, warps).
WEIGHT_BLOCKS = dict.fromkeys(_DTYPES, (32, 16, 32, 4))
# On a GPU, grad-weight splits its reduction over more programs until there are about this many.
# The interpreter runs programs one after another, so there a split would only add work.
_TARGET_PROGRAMS = 512

_SIZES = ["batch", "hidden", "rows", "length", "ksize", "pad_left"]


@triton.jit(do_not_specialize=_SIZES)
def _forward_kernel(
    h_ptr,       # out [B, D, R, L] hidden states in gates_in's dtype
    c_ptr,       # out [B, D, R, L] cell states in the state dtype
    gates_ptr,   # out [B, 4D, R, L] activations i, f, o, g in the state dtype
    x_ptr,       # in [B, 4D, R, L] gates_in: input-to-state pre-activations
    w_ptr,       # in [4D, D*k] state-to-state weight in gates_in's dtype, column e*k + t
    bias_ptr,    # in [4D] bias in the state dtype (zeros when there is none)
    h0_ptr,      # in [B, D, L] initial hidden state in gates_in's dtype
    c0_ptr,      # in [B, D, L] initial cell state in the state dtype
    batch,       # B (unused: one program per batch element)
    hidden,      # D
    rows,        # R, recurrence steps
    length,      # L, positions in a row
    ksize,       # k, taps of the state-to-state convolution
    pad_left,    # taps left of the centre: tap t reads position l + t - pad_left
    BLOCK_D: tl.constexpr,  # hidden channels per tile (each with its four gates)
    BLOCK_L: tl.constexpr,  # positions per tile
    BLOCK_K: tl.constexpr,  # reduction (channel, tap) pairs per tl.dot
):
    acc_ty = c_ptr.dtype.element_ty
    F64: tl.constexpr = acc_ty == tl.float64
    # Offsets inside one batch element fit int32 (the launcher checks 4*D*R*L < 2^31); only
    # the scalar bases are int64. In [B, C, R, L], channels are R*L apart for any C.
    b = tl.program_id(0).to(tl.int64)
    plane = rows * length
    red = hidden * ksize
    gate_step = hidden * plane  # from one gate's channels to the next gate's
    x_b = x_ptr + b * 4 * gate_step
    g_b = gates_ptr + b * 4 * gate_step
    h_b = h_ptr + b * gate_step
    c_b = c_ptr + b * gate_step
    offs_d0 = tl.arange(0, BLOCK_D)
    offs_l0 = tl.arange(0, BLOCK_L)
    offs_k0 = tl.arange(0, BLOCK_K)
    for r in range(0, rows):
        # The previous row's states: h0 / c0 ([B, D, L]) for row 0, else row r-1 of h / c.
        if r == 0:
            h_prev = h0_ptr + b * hidden * length
            c_prev = c0_ptr + b * hidden * length
            prev_cs = length
        else:
            h_prev = h_b + (r - 1) * length
            c_prev = c_b + (r - 1) * length
            prev_cs = plane
        row = r * length
        for d0 in range(0, hidden, BLOCK_D):
            offs_d = d0 + offs_d0
            d_ok = offs_d < hidden
            for l0 in range(0, length, BLOCK_L):
                offs_l = l0 + offs_l0
                l_ok = offs_l < length
                acc_i = tl.zeros([BLOCK_D, BLOCK_L], acc_ty)
                acc_f = tl.zeros([BLOCK_D, BLOCK_L], acc_ty)
                acc_o = tl.zeros([BLOCK_D, BLOCK_L], acc_ty)
                acc_g = tl.zeros([BLOCK_D, BLOCK_L], acc_ty)
                for k0 in tl.range(0, red, BLOCK_K, num_stages=1):
                    kk = k0 + offs_k0
                    k_ok = kk < red
                    e = kk // ksize
                    src = offs_l[None, :] + (kk - e * ksize - pad_left)[:, None]
                    hk = tl.load(h_prev + (e[:, None] * prev_cs + src),
                                 mask=k_ok[:, None] & (src >= 0) & (src < length), other=0.0)
                    w_ptrs = w_ptr + (offs_d[:, None] * red + kk[None, :])
                    w_mask = d_ok[:, None] & k_ok[None, :]
                    w_i = tl.load(w_ptrs, mask=w_mask, other=0.0)
                    w_f = tl.load(w_ptrs + hidden * red, mask=w_mask, other=0.0)
                    w_o = tl.load(w_ptrs + 2 * hidden * red, mask=w_mask, other=0.0)
                    w_g = tl.load(w_ptrs + 3 * hidden * red, mask=w_mask, other=0.0)
                    acc_i = tl.dot(w_i, hk, acc_i, input_precision="ieee")
                    acc_f = tl.dot(w_f, hk, acc_f, input_precision="ieee")
                    acc_o = tl.dot(w_o, hk, acc_o, input_precision="ieee")
                    acc_g = tl.dot(w_g, hk, acc_g, input_precision="ieee")
                mask = d_ok[:, None] & l_ok[None, :]
                offs = offs_d[:, None] * plane + offs_l[None, :] + row  # (channel d, row r, l)
                pre_i = acc_i + tl.load(bias_ptr + offs_d, mask=d_ok, other=0.0)[:, None] \
                    + tl.load(x_b + offs, mask=mask, other=0.0).to(acc_ty)
                pre_f = acc_f + tl.load(bias_ptr + hidden + offs_d, mask=d_ok, other=0.0)[:, None] \
                    + tl.load(x_b + gate_step + offs, mask=mask, other=0.0).to(acc_ty)
                pre_o = acc_o + tl.load(bias_ptr + 2 * hidden + offs_d, mask=d_ok,
                                        other=0.0)[:, None] \
                    + tl.load(x_b + 2 * gate_step + offs, mask=mask, other=0.0).to(acc_ty)
                pre_g = acc_g + tl.load(bias_ptr + 3 * hidden + offs_d, mask=d_ok,
                                        other=0.0)[:, None] \
                    + tl.load(x_b + 3 * gate_step + offs, mask=mask, other=0.0).to(acc_ty)
                gate_i, _ = _sigmoid(pre_i)
                gate_f, _ = _sigmoid(pre_f)
                gate_o, _ = _sigmoid(pre_o)
                gate_g, _ = _tanh(pre_g, F64)
                tl.store(g_b + offs, gate_i, mask=mask)
                tl.store(g_b + gate_step + offs, gate_f, mask=mask)
                tl.store(g_b + 2 * gate_step + offs, gate_o, mask=mask)
                tl.store(g_b + 3 * gate_step + offs, gate_g, mask=mask)
                c_old = tl.load(c_prev + (offs_d[:, None] * prev_cs + offs_l[None, :]), mask=mask,
                                other=0.0)
                c_new = gate_f * c_old + gate_i * gate_g
                tanh_c, _ = _tanh(c_new, F64)
                tl.store(c_b + offs, c_new, mask=mask)
                tl.store(h_b + offs, (gate_o * tanh_c).to(h_ptr.dtype.element_ty), mask=mask)
        # Row r's h is complete before any thread gathers it for row r + 1.
        tl.debug_barrier()


@triton.jit(do_not_specialize=_SIZES)
def _backward_kernel(
    dpre_ptr,     # out [B, 4D, R, L] dL/d(pre-activations) in the state dtype
    dh_ptr,       # in/out [B, D, L] dL/dh_{r-1} through row r's convolution, state dtype:
                  #   zeros on entry, grad_h0 on exit
    dc_ptr,       # in/out [2, B, D, L] dL/dc_{r-1} through f, state dtype, alternating halves:
                  #   half 0 zeros on entry, grad_c0 in half R % 2 on exit
    grad_h_ptr,   # in [B, D, R, L] dL/dh in h's dtype
    grad_c_ptr,   # in [B, D, R, L] dL/dc in the state dtype
    c_ptr,        # in [B, D, R, L] the forward's cell states
    gates_ptr,    # in [B, 4D, R, L] the forward's activations i, f, o, g
    c0_ptr,       # in [B, D, L] initial cell state in the state dtype
    wt_ptr,       # in [D, 4D*k] transposed weight in the state dtype: wt[e, o*k + t] = W[o, e, t]
    batch,        # B
    hidden,       # D
    rows,         # R
    length,       # L
    ksize,        # k
    pad_left,     # as in the forward
    BLOCK_D: tl.constexpr,  # hidden channels per tile
    BLOCK_L: tl.constexpr,  # positions per tile
    BLOCK_K: tl.constexpr,  # reduction (gate channel, tap) pairs per tl.dot
):
    acc_ty = dpre_ptr.dtype.element_ty
    F64: tl.constexpr = acc_ty == tl.float64
    b = tl.program_id(0).to(tl.int64)
    plane = rows * length
    red = 4 * hidden * ksize
    gate_step = hidden * plane
    # This batch element in every tensor (int64 bases, int32 offsets as in the forward).
    dp_b = dpre_ptr + b * 4 * gate_step
    g_b = gates_ptr + b * 4 * gate_step
    gh_b = grad_h_ptr + b * gate_step
    gc_b = grad_c_ptr + b * gate_step
    c_b = c_ptr + b * gate_step
    dh_b = dh_ptr + b * hidden * length
    dc_b = dc_ptr + b * hidden * length
    half = batch.to(tl.int64) * hidden * length  # elements in one half of dc
    offs_d0 = tl.arange(0, BLOCK_D)
    offs_l0 = tl.arange(0, BLOCK_L)
    offs_k0 = tl.arange(0, BLOCK_K)
    for j in range(0, rows):
        r = rows - 1 - j
        row = r * length
        dc_in = dc_b + (j % 2) * half
        dc_out = dc_b + ((j + 1) % 2) * half
        if r == 0:
            c_prev = c0_ptr + b * hidden * length
            prev_cs = length
        else:
            c_prev = c_b + (r - 1) * length
            prev_cs = plane
        # Phase 1, element-wise: the gate derivatives of row r and dL/dc_{r-1}.
        for d0 in range(0, hidden, BLOCK_D):
            offs_d = d0 + offs_d0
            d_ok = offs_d < hidden
            for l0 in range(0, length, BLOCK_L):
                offs_l = l0 + offs_l0
                mask = d_ok[:, None] & (offs_l < length)[None, :]
                offs = offs_d[:, None] * plane + offs_l[None, :] + row  # (channel d, row r, l)
                s_offs = offs_d[:, None] * length + offs_l[None, :]  # (d, l) in dh and dc
                gh = tl.load(gh_b + offs, mask=mask, other=0.0).to(acc_ty) \
                    + tl.load(dh_b + s_offs, mask=mask, other=0.0)
                gate_o = tl.load(g_b + 2 * gate_step + offs, mask=mask, other=0.0)
                tanh_c, sech2_c = _tanh(tl.load(c_b + offs, mask=mask, other=0.0), F64)
                tl.store(dp_b + 2 * gate_step + offs, gh * tanh_c * gate_o * (1.0 - gate_o),
                         mask=mask)
                gc = tl.load(gc_b + offs, mask=mask, other=0.0) \
                    + tl.load(dc_in + s_offs, mask=mask, other=0.0) + gh * gate_o * sech2_c
                gate_f = tl.load(g_b + gate_step + offs, mask=mask, other=0.0)
                tl.store(dc_out + s_offs, gc * gate_f, mask=mask)
                c_old = tl.load(c_prev + (offs_d[:, None] * prev_cs + offs_l[None, :]), mask=mask,
                                other=0.0)
                tl.store(dp_b + gate_step + offs, gc * c_old * gate_f * (1.0 - gate_f), mask=mask)
                gate_i = tl.load(g_b + offs, mask=mask, other=0.0)
                gate_g = tl.load(g_b + 3 * gate_step + offs, mask=mask, other=0.0)
                tl.store(dp_b + offs, gc * gate_g * gate_i * (1.0 - gate_i), mask=mask)
                tl.store(dp_b + 3 * gate_step + offs, gc * gate_i * (1.0 - gate_g * gate_g),
                         mask=mask)
        # Row r's dL/dpre is complete before phase 2 gathers it, and every thread has read dh.
        tl.debug_barrier()
        # Phase 2: dL/dh_{r-1}[e, m] = sum over (o, t) of wt[e, o*k + t] * dpre[o, m - t + pad].
        for e0 in range(0, hidden, BLOCK_D):
            offs_e = e0 + offs_d0
            e_ok = offs_e < hidden
            for l0 in range(0, length, BLOCK_L):
                offs_m = l0 + offs_l0
                acc = tl.zeros([BLOCK_D, BLOCK_L], acc_ty)
                for k0 in tl.range(0, red, BLOCK_K, num_stages=1):
                    kk = k0 + offs_k0
                    k_ok = kk < red
                    o = kk // ksize
                    src = offs_m[None, :] - (kk - o * ksize - pad_left)[:, None]
                    dp = tl.load(dp_b + (o[:, None] * plane + src + row),
                                 mask=k_ok[:, None] & (src >= 0) & (src < length), other=0.0)
                    wt = tl.load(wt_ptr + (offs_e[:, None] * red + kk[None, :]),
                                 mask=e_ok[:, None] & k_ok[None, :], other=0.0)
                    acc = tl.dot(wt, dp, acc, input_precision="ieee")
                tl.store(dh_b + (offs_e[:, None] * length + offs_m[None, :]), acc,
                         mask=e_ok[:, None] & (offs_m < length)[None, :])
        # dh is complete before the next row's phase 1 reads it.
        tl.debug_barrier()


@triton.jit(do_not_specialize=_SIZES)
def _grad_weight_kernel(
    partial_ptr,  # out [S, 4D, D*k] each split's sums in the state dtype
    dpre_ptr,     # in [B, 4D, R, L] dL/d(pre-activations) in the state dtype
    h_ptr,        # in [B, D, R, L] the forward's hidden states
    h0_ptr,       # in [B, D, L] initial hidden state, h's dtype
    batch,        # B
    hidden,       # D
    rows,         # R
    length,       # L
    ksize,        # k
    pad_left,     # as in the forward
    BLOCK_O: tl.constexpr,  # gate channels per program
    BLOCK_N: tl.constexpr,  # (batch, row, position) triples per tl.dot
    BLOCK_K: tl.constexpr,  # (channel, tap) pairs per program
):
    """partial[s, o, e*k + t] = sum over split s's (b, r, l) of dpre[b, o, r, l] *
    h_{r-1}[b, e, l + t - pad_left], h_{-1} = h0."""
    acc_ty = partial_ptr.dtype.element_ty
    hidden = hidden.to(tl.int64)
    rows = rows.to(tl.int64)
    length = length.to(tl.int64)
    ksize = ksize.to(tl.int64)
    red = hidden * ksize
    total = batch.to(tl.int64) * rows * length
    split = tl.program_id(2)
    splits = tl.num_programs(2)
    offs_o = tl.program_id(0) * BLOCK_O + tl.arange(0, BLOCK_O).to(tl.int64)
    o_ok = offs_o < 4 * hidden
    kk = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K).to(tl.int64)
    k_ok = kk < red
    e = kk // ksize
    shift = kk - e * ksize - pad_left
    acc = tl.zeros([BLOCK_O, BLOCK_K], acc_ty)
    for n0 in range(split * BLOCK_N, total, splits * BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N).to(tl.int64)
        n_ok = offs_n < total
        pos = offs_n % length
        row = (offs_n // length) % rows
        img = offs_n // (length * rows)
        dp = tl.load(dpre_ptr + (((img * 4 * hidden)[None, :] + offs_o[:, None]) * rows
                                 + row[None, :]) * length + pos[None, :],
                     mask=o_ok[:, None] & n_ok[None, :], other=0.0)
        src = pos[:, None] + shift[None, :]
        ok = n_ok[:, None] & k_ok[None, :] & (src >= 0) & (src < length)
        first = (row == 0)[:, None]
        from_h = tl.load(h_ptr + (((img * hidden)[:, None] + e[None, :]) * rows
                                  + (row - 1)[:, None]) * length + src,
                         mask=ok & ~first, other=0.0)
        from_h0 = tl.load(h0_ptr + ((img * hidden)[:, None] + e[None, :]) * length + src,
                          mask=ok & first, other=0.0)
        hk = (from_h + from_h0).to(acc_ty)
        acc = tl.dot(dp, hk, acc, input_precision="ieee")
    out = (split * 4 * hidden + offs_o)[:, None] * red + kk[None, :]
    tl.store(partial_ptr + out, acc, mask=o_ok[:, None] & k_ok[None, :])


# ----------------------------------------------------------------------------- launchers

def _state_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _device_guard(t: torch.Tensor):
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _block_l(length: int) -> int:
    """The narrowest tile width in L_CHOICES that holds the row, else the widest."""
    for block_l in L_CHOICES:
        if length <= block_l:
            return block_l
    return L_CHOICES[-1]


def _check_int32(hidden, rows, length, ksize):
    """The kernels index inside one batch element with int32 (the batch offset is int64); the
    margin covers the masked lanes of the last channel block."""
    limit = 2**31 - 1
    margin = 4 * hidden + 64
    if margin * rows * length > limit or margin * (hidden + 64) * ksize > limit:
        raise RuntimeError(f"genfast: lstm_rows on Triton needs 4*D*R*L and 4*D*D*k (plus a "
                           f"tile's margin) below 2^31 elements, got D={hidden}, R={rows}, "
                           f"L={length}, k={ksize}")


def _check(gates_in, weight, h0, c0, pad_left):
    if gates_in.dim() != 4 or weight.dim() != 3:
        raise RuntimeError(f"genfast: lstm_rows expects gates_in [B, 4D, R, L] and weight "
                           f"[4D, D, k], got {tuple(gates_in.shape)} and {tuple(weight.shape)}")
    batch, channels, rows, length = gates_in.shape
    hidden, ksize = weight.shape[1], weight.shape[2]
    if channels != 4 * hidden or weight.shape[0] != 4 * hidden:
        raise RuntimeError(f"genfast: lstm_rows needs gates_in [B, 4D, R, L] and weight "
                           f"[4D, D, k] with one D, got {tuple(gates_in.shape)} and "
                           f"{tuple(weight.shape)}")
    for name, t in (("h0", h0), ("c0", c0)):
        if tuple(t.shape) != (batch, hidden, length):
            raise RuntimeError(f"genfast: {name} must have shape {[batch, hidden, length]}, "
                               f"got {list(t.shape)}")
    if not 0 <= pad_left < max(ksize, 1):
        raise RuntimeError(f"genfast: pad_left must lie in [0, {ksize}), got {pad_left}")
    if gates_in.dtype not in _DTYPES or weight.dtype != gates_in.dtype:
        raise RuntimeError(f"genfast: lstm_rows needs gates_in and weight of one floating dtype, "
                           f"got {gates_in.dtype} and {weight.dtype}")
    _check_int32(hidden, rows, length, ksize)
    return batch, hidden, rows, length, ksize


def lstm_rows_forward(gates_in, weight, bias, h0, c0, pad_left):
    """(h, c, gates) of genfast::lstm_rows (schema in csrc/registration.cpp).

    gates_in: [B, 4D, R, L]; weight: [4D, D, k]; bias: [4D] or None; h0, c0: [B, D, L];
    pad_left in [0, k). Returns h [B, D, R, L] in gates_in's dtype, c [B, D, R, L] and the
    activations gates [B, 4D, R, L] in the state dtype (float32 for float16 / bfloat16 inputs).
    """
    batch, hidden, rows, length, ksize = _check(gates_in, weight, h0, c0, pad_left)
    dtype, state = gates_in.dtype, _state_dtype(gates_in.dtype)
    device = gates_in.device
    h = torch.empty((batch, hidden, rows, length), dtype=dtype, device=device)
    c = torch.empty((batch, hidden, rows, length), dtype=state, device=device)
    gates = torch.empty((batch, 4 * hidden, rows, length), dtype=state, device=device)
    if h.numel() == 0:
        return h, c, gates
    bias_s = bias.to(state).contiguous() if bias is not None else zeros(4 * hidden, state, device)
    block_d, block_k, warps = FORWARD_BLOCKS[dtype]
    with _device_guard(gates_in):
        _forward_kernel[(batch,)](
            h, c, gates, gates_in.contiguous(), weight.contiguous(), bias_s,
            h0.to(dtype).contiguous(), c0.to(state).contiguous(),
            batch, hidden, rows, length, ksize, pad_left,
            BLOCK_D=block_d, BLOCK_L=_block_l(length), BLOCK_K=block_k, num_warps=warps)
    return h, c, gates


def _grad_weight(dpre, h, h0, batch, hidden, rows, length, ksize, pad_left):
    state = dpre.dtype
    red = hidden * ksize
    block_o, block_n, block_k, warps = WEIGHT_BLOCKS[h.dtype]
    o_blocks, k_blocks = triton.cdiv(4 * hidden, block_o), triton.cdiv(red, block_k)
    total = batch * rows * length
    splits = 1
    if dpre.is_cuda:
        splits = max(1, min(triton.cdiv(total, block_n),
                            _TARGET_PROGRAMS // (o_blocks * k_blocks), 65535))
    partial = torch.empty((splits, 4 * hidden, red), dtype=state, device=dpre.device)
    with _device_guard(dpre):
        _grad_weight_kernel[(o_blocks, k_blocks, splits)](
            partial, dpre, h, h0, batch, hidden, rows, length, ksize, pad_left,
            BLOCK_O=block_o, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=warps)
    # Splits summed in a fixed order: the result does not depend on scheduling.
    return partial.sum(0) if splits > 1 else partial[0]


def lstm_rows_backward(grad_h, grad_c, weight, h, c, gates, h0, c0, pad_left):
    """(grad_gates_in, grad_weight, grad_bias, grad_h0, grad_c0) of genfast::lstm_rows.

    grad_h, grad_c: [B, D, R, L] cotangents of h and c; h, c, gates: the forward's outputs;
    h0, c0: its initial states. grad_gates_in has h's dtype, grad_weight and grad_bias ([4D])
    weight's, grad_h0 and grad_c0 those of h0 and c0.
    """
    batch, hidden, rows, length = h.shape
    ksize = weight.shape[2]
    dtype, state = h.dtype, _state_dtype(h.dtype)
    device = h.device
    if tuple(weight.shape[:2]) != (4 * hidden, hidden) or tuple(gates.shape) != (
            batch, 4 * hidden, rows, length) or grad_h.shape != h.shape \
            or grad_c.shape != h.shape or c.shape != h.shape:
        raise RuntimeError("genfast: lstm_rows_backward got inconsistent shapes: "
                           f"grad_h {list(grad_h.shape)}, grad_c {list(grad_c.shape)}, weight "
                           f"{list(weight.shape)}, h {list(h.shape)}, c {list(c.shape)}, "
                           f"gates {list(gates.shape)}")
    if not 0 <= pad_left < max(ksize, 1):
        raise RuntimeError(f"genfast: pad_left must lie in [0, {ksize}), got {pad_left}")
    _check_int32(hidden, rows, length, ksize)
    grad_h0 = torch.zeros((batch, hidden, length), dtype=state, device=device)
    dc = torch.zeros((2, batch, hidden, length), dtype=state, device=device)
    dpre = torch.empty((batch, 4 * hidden, rows, length), dtype=state, device=device)
    if dpre.numel() == 0:
        grad_weight = torch.zeros((4 * hidden, hidden * ksize), dtype=state, device=device)
    else:
        h0_c = h0.to(dtype).contiguous()
        block_d, block_k, warps = BACKWARD_BLOCKS[dtype]
        with _device_guard(h):
            _backward_kernel[(batch,)](
                dpre, grad_h0, dc, grad_h.to(dtype).contiguous(), grad_c.to(state).contiguous(),
                c.to(state).contiguous(), gates.to(state).contiguous(), c0.to(state).contiguous(),
                weight.to(state).permute(1, 0, 2).reshape(hidden, 4 * hidden * ksize).contiguous(),
                batch, hidden, rows, length, ksize, pad_left,
                BLOCK_D=block_d, BLOCK_L=_block_l(length), BLOCK_K=block_k, num_warps=warps)
        grad_weight = _grad_weight(dpre, h.contiguous(), h0_c, batch, hidden, rows, length,
                                   ksize, pad_left)
    grad_bias = dpre.sum((0, 2, 3))
    grad_c0 = dc[rows % 2].to(c0.dtype, copy=True)  # not a view into the scratch
    return (dpre.to(dtype), grad_weight.view(4 * hidden, hidden, ksize).to(weight.dtype),
            grad_bias.to(weight.dtype), grad_h0.to(h0.dtype), grad_c0)


# ----------------------------------------------------------------------------- AOT variants

def _aot_specs() -> list[AotSpec]:
    """Every (kernel, dtype, BLOCK_L) the launchers above run, with their launch settings.

    The size arguments are not specialized (do_not_specialize), so each variant is one compile.
    """
    specs = []
    sizes = {name: "i32" for name in _SIZES}
    for dtype in _DTYPES:
        t, s = triton_type(dtype), triton_type(_state_dtype(dtype))
        forward = {"h_ptr": t, "c_ptr": s, "gates_ptr": s, "x_ptr": t, "w_ptr": t,
                   "bias_ptr": s, "h0_ptr": t, "c0_ptr": s, **sizes}
        backward = {"dpre_ptr": s, "dh_ptr": s, "dc_ptr": s, "grad_h_ptr": t, "grad_c_ptr": s,
                    "c_ptr": s, "gates_ptr": s, "c0_ptr": s, "wt_ptr": s, **sizes}
        weight = {"partial_ptr": s, "dpre_ptr": s, "h_ptr": t, "h0_ptr": t, **sizes}
        for fn, signature, blocks in ((_forward_kernel, forward, FORWARD_BLOCKS),
                                      (_backward_kernel, backward, BACKWARD_BLOCKS)):
            pointers = tuple(name for name, ty in signature.items() if ty.startswith("*"))
            block_d, block_k, warps = blocks[dtype]
            for block_l in L_CHOICES:
                specs.append(AotSpec(
                    fn, signature, {"BLOCK_D": block_d, "BLOCK_L": block_l, "BLOCK_K": block_k},
                    num_warps=warps, divisible_by_16=pointers, tag=f"{t[1:]}-l{block_l}"))
        block_o, block_n, block_kw, wwarps = WEIGHT_BLOCKS[dtype]
        specs.append(AotSpec(
            _grad_weight_kernel, weight,
            {"BLOCK_O": block_o, "BLOCK_N": block_n, "BLOCK_K": block_kw}, num_warps=wwarps,
            divisible_by_16=tuple(name for name, ty in weight.items() if ty.startswith("*")),
            tag=t[1:]))
    return specs


AOT_SPECS = _aot_specs()
