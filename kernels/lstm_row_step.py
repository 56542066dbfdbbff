"""The Triton kernels of one recurrence step of genfast::lstm_rows, and its weight gradient.

kernels/lstm_row.py launches them (one launch per row) and documents the design; this module
holds only the @triton.jit functions. Notation as there: gates_in [B, 4D, R, L], weight
W [4D, D, k] viewed as [4D, D*k] with column e*k + t, tap t of position l reading position
l + t - pad_left of the previous row (zero outside the row).

Every program owns one (batch element, block of hidden channels, block of positions) tile of
one row: the launch boundary is the barrier between rows, so programs never wait for each
other (which also keeps the interpreter, running programs one after another, correct).
"""
from __future__ import annotations

import triton
import triton.language as tl

from .gated import _sigmoid, _tanh

# Sizes and the row index are runtime values: specializing on them (value 1, divisibility by
# 16) would compile a new variant for some rows.
SIZES = ["row", "batch", "hidden", "rows", "length", "ksize", "pad_left", "per_group"]

# AOT_SPECS of these kernels are listed by kernels/lstm_row.py, next to their launch settings.
AOT_SPECS = []


@triton.jit
def _dot(a, b, acc, PRECISION: tl.constexpr, DOT_IN_FP32: tl.constexpr):
    """acc + a @ b on tensor cores (input_precision PRECISION for float32 operands).

    DOT_IN_FP32, set only for the CPU interpreter, whose tl.dot has no bfloat16 or float16
    product, widens the operands first: their products are exact in float32, so only the
    order of the float32 sums differs from the tensor cores'."""
    if DOT_IN_FP32:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=PRECISION)


@triton.jit
def _row_tile(hidden, length, BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    """This program's image b, its hidden channels and positions, and their bounds. Offsets
    inside one image are int32 (the launchers check 4*D*R*L < 2^31); b, the image base, is
    int64."""
    b = tl.program_id(0).to(tl.int64)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_l = tl.program_id(2) * BLOCK_L + tl.arange(0, BLOCK_L)
    return b, offs_d, offs_l, offs_d < hidden, offs_l < length


@triton.jit
def _pre_activation(acc, bias_ptr, x_ptr, offs, offs_d, d_ok, mask, acc_ty: tl.constexpr):
    """One gate's pre-activations: the recurrent GEMM's tile + bias + gates_in."""
    return acc + tl.load(bias_ptr + offs_d, mask=d_ok, other=0.0)[:, None] \
        + tl.load(x_ptr + offs, mask=mask, other=0.0).to(acc_ty)


@triton.jit(do_not_specialize=SIZES)
def _forward_row_kernel(
    h_ptr,       # out [B, D, R, L] hidden states in gates_in's dtype (row `row` written)
    c_ptr,       # out [B, D, R, L] cell states in the state dtype (row `row` written)
    gates_ptr,   # out [B, 4D, R, L] activations i, f, o, g in the state dtype (row `row`)
    x_ptr,       # in [B, 4D, R, L] gates_in: input-to-state pre-activations
    w_ptr,       # in [G, 4D, D*k] state-to-state weights in gates_in's dtype, column e*k + t
    bias_ptr,    # in [G, 4D] biases in the state dtype (zeros when there are none)
    h0_ptr,      # in [B, D, L] initial hidden state in gates_in's dtype (read for row 0)
    c0_ptr,      # in [B, D, L] initial cell state in the state dtype (read for row 0)
    row,         # r, the row this launch computes; rows < r were written by earlier launches
    batch,       # B (the grid's first dimension)
    hidden,      # D
    rows,        # R
    length,      # L
    ksize,       # k, taps of the state-to-state convolution
    pad_left,    # taps left of the centre
    per_group,   # images per weight group: image b uses weight and bias group b // per_group
    BLOCK_D: tl.constexpr,  # hidden channels per program, each with its four gates
    BLOCK_L: tl.constexpr,  # positions per program
    BLOCK_K: tl.constexpr,  # reduction (channel, tap) pairs per tl.dot
    PRECISION: tl.constexpr,  # tl.dot input_precision for float32: "tf32" or "ieee"
    DOT_IN_FP32: tl.constexpr,  # widen tl.dot operands (the CPU interpreter only)
):
    """Row r: pre = gates_in_r + bias + W @ gather(h_{r-1}); the cell update is the epilogue."""
    acc_ty = c_ptr.dtype.element_ty
    F64: tl.constexpr = acc_ty == tl.float64
    # In [B, C, R, L], channels are R*L apart for any C.
    b, offs_d, offs_l, d_ok, l_ok = _row_tile(hidden, length, BLOCK_D, BLOCK_L)
    offs_k0 = tl.arange(0, BLOCK_K)
    plane = rows * length
    red = hidden * ksize
    gate_step = hidden * plane  # from one gate's channels to the next gate's
    group = b // per_group
    w_ptr += group * 4 * hidden * red
    bias_ptr += group * 4 * hidden
    # The previous row's states: h0 / c0 ([B, D, L]) for row 0, else row r-1 of h / c.
    if row == 0:
        h_prev = h0_ptr + b * hidden * length
        c_prev = c0_ptr + b * hidden * length
        prev_cs = length
    else:
        h_prev = h_ptr + b * gate_step + (row - 1) * length
        c_prev = c_ptr + b * gate_step + (row - 1) * length
        prev_cs = plane
    acc_i = tl.zeros([BLOCK_D, BLOCK_L], acc_ty)
    acc_f = tl.zeros_like(acc_i)
    acc_o = tl.zeros_like(acc_i)
    acc_g = tl.zeros_like(acc_i)
    w_rows = offs_d[:, None] * red
    for k0 in range(0, red, BLOCK_K):
        kk = k0 + offs_k0
        k_ok = kk < red
        e = kk // ksize
        src = offs_l[None, :] + (kk - e * ksize - pad_left)[:, None]
        hk = tl.load(h_prev + (e[:, None] * prev_cs + src),
                     mask=k_ok[:, None] & (src >= 0) & (src < length), other=0.0)
        w_ptrs = w_ptr + (w_rows + kk[None, :])
        w_mask = d_ok[:, None] & k_ok[None, :]
        acc_i = _dot(tl.load(w_ptrs, mask=w_mask, other=0.0), hk, acc_i,
                     PRECISION, DOT_IN_FP32)
        acc_f = _dot(tl.load(w_ptrs + hidden * red, mask=w_mask, other=0.0), hk, acc_f,
                     PRECISION, DOT_IN_FP32)
        acc_o = _dot(tl.load(w_ptrs + 2 * hidden * red, mask=w_mask, other=0.0), hk, acc_o,
                     PRECISION, DOT_IN_FP32)
        acc_g = _dot(tl.load(w_ptrs + 3 * hidden * red, mask=w_mask, other=0.0), hk, acc_g,
                     PRECISION, DOT_IN_FP32)
    mask = d_ok[:, None] & l_ok[None, :]
    offs = offs_d[:, None] * plane + offs_l[None, :] + row * length  # (channel d, row r, l)
    x_b = x_ptr + b * 4 * gate_step
    g_b = gates_ptr + b * 4 * gate_step
    pre_i = _pre_activation(acc_i, bias_ptr, x_b, offs, offs_d, d_ok, mask, acc_ty)
    pre_f = _pre_activation(acc_f, bias_ptr + hidden, x_b + gate_step, offs, offs_d, d_ok, mask,
                            acc_ty)
    pre_o = _pre_activation(acc_o, bias_ptr + 2 * hidden, x_b + 2 * gate_step, offs, offs_d,
                            d_ok, mask, acc_ty)
    pre_g = _pre_activation(acc_g, bias_ptr + 3 * hidden, x_b + 3 * gate_step, offs, offs_d,
                            d_ok, mask, acc_ty)
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
    tl.store(c_ptr + b * gate_step + offs, c_new, mask=mask)
    tl.store(h_ptr + b * gate_step + offs, (gate_o * tanh_c).to(h_ptr.dtype.element_ty),
             mask=mask)


@triton.jit(do_not_specialize=SIZES)
def _backward_row_kernel(
    dpre_ptr,     # in/out [B, 4D, R, L] dL/d(pre-activations), state dtype: row r+1 read,
                  #   row r written
    carry_ptr,    # in/out [2, B, D, L] dL/dc_r through row r+1's forget gate, state dtype,
                  #   alternating halves: row r reads half (R-1-r) % 2 and writes the other;
                  #   after row 0, half R % 2 holds grad_c0
    grad_h0_ptr,  # out [B, D, L] dL/dh0 in the state dtype, written by the row -1 launch
    grad_h_ptr,   # in [B, D, R, L] dL/dh in h's dtype
    grad_c_ptr,   # in [B, D, R, L] dL/dc in the state dtype
    c_ptr,        # in [B, D, R, L] the forward's cell states
    gates_ptr,    # in [B, 4D, R, L] the forward's activations i, f, o, g
    c0_ptr,       # in [B, D, L] initial cell state in the state dtype
    w_ptr,        # in [G, 4D, D*k] state-to-state weights in gates_in's dtype
    row,          # r in R-1 .. 0, then -1 for grad_h0 alone
    batch,        # B
    hidden,       # D
    rows,         # R
    length,       # L
    ksize,        # k
    pad_left,     # as in the forward
    per_group,    # as in the forward
    BLOCK_D: tl.constexpr,  # hidden channels per program
    BLOCK_L: tl.constexpr,  # positions per program
    BLOCK_K: tl.constexpr,  # reduction (gate channel, tap) pairs per tl.dot
    PRECISION: tl.constexpr,  # tl.dot input_precision for float32: "tf32" or "ieee"
    DOT_IN_FP32: tl.constexpr,  # widen tl.dot operands (the CPU interpreter only)
):
    """Row r of the backward: dL/dh_r = grad_h_r + (row r+1's transposed convolution of
    dL/dpre_{r+1}, a GEMM with W^T), then element-wise the gate derivatives dL/dpre_r and
    dL/dc_{r-1} = dL/dc_r * f_r for row r-1's launch."""
    acc_ty = dpre_ptr.dtype.element_ty
    F64: tl.constexpr = acc_ty == tl.float64
    b, offs_e, offs_m, e_ok, m_ok = _row_tile(hidden, length, BLOCK_D, BLOCK_L)
    offs_k0 = tl.arange(0, BLOCK_K)
    mask = e_ok[:, None] & m_ok[None, :]
    plane = rows * length
    gate_step = hidden * plane
    dp_b = dpre_ptr + b * 4 * gate_step
    w_ptr += (b // per_group) * 4 * hidden * hidden * ksize
    s_offs = offs_e[:, None] * length + offs_m[None, :]  # (e, m) in [D, L] state buffers
    # dL/dh_r[e, m] through row r+1 = sum over (o, t) of W[o, e, t] * dpre_{r+1}[o, m - t + pad],
    # the transposed weight read in place: element (e, o*k + t) at o*D*k + e*k + t.
    acc = tl.zeros([BLOCK_D, BLOCK_L], acc_ty)
    if row + 1 < rows:
        red = 4 * hidden * ksize
        nxt = (row + 1) * length
        for k0 in range(0, red, BLOCK_K):
            kk = k0 + offs_k0
            k_ok = kk < red
            o = kk // ksize
            t = kk - o * ksize
            src = offs_m[None, :] - (t - pad_left)[:, None]
            dp = tl.load(dp_b + (o[:, None] * plane + src + nxt),
                         mask=k_ok[:, None] & (src >= 0) & (src < length), other=0.0)
            wt = tl.load(w_ptr + (o[None, :] * (hidden * ksize) + offs_e[:, None] * ksize
                                  + t[None, :]),
                         mask=e_ok[:, None] & k_ok[None, :], other=0.0)
            acc = _dot(wt, dp.to(wt.dtype), acc, PRECISION, DOT_IN_FP32)
    if row < 0:
        tl.store(grad_h0_ptr + b * hidden * length + s_offs, acc, mask=mask)
    else:
        offs = offs_e[:, None] * plane + offs_m[None, :] + row * length  # (channel e, row r, m)
        half = batch.to(tl.int64) * hidden * length  # elements in one half of the carry
        j = rows - 1 - row
        carry_b = carry_ptr + b * hidden * length
        g_b = gates_ptr + b * 4 * gate_step
        c_b = c_ptr + b * gate_step
        gh = tl.load(grad_h_ptr + b * gate_step + offs, mask=mask, other=0.0).to(acc_ty) \
            + acc
        gate_o = tl.load(g_b + 2 * gate_step + offs, mask=mask, other=0.0)
        tanh_c, sech2_c = _tanh(tl.load(c_b + offs, mask=mask, other=0.0), F64)
        tl.store(dp_b + 2 * gate_step + offs, gh * tanh_c * gate_o * (1.0 - gate_o), mask=mask)
        gc = tl.load(grad_c_ptr + b * gate_step + offs, mask=mask, other=0.0) \
            + gh * gate_o * sech2_c
        if row + 1 < rows:
            gc += tl.load(carry_b + (j % 2) * half + s_offs, mask=mask, other=0.0)
        gate_f = tl.load(g_b + gate_step + offs, mask=mask, other=0.0)
        tl.store(carry_b + ((j + 1) % 2) * half + s_offs, gc * gate_f, mask=mask)
        if row == 0:
            c_old = tl.load(c0_ptr + b * hidden * length + s_offs, mask=mask, other=0.0)
        else:
            c_old = tl.load(c_b + offs - length, mask=mask, other=0.0)
        tl.store(dp_b + gate_step + offs, gc * c_old * gate_f * (1.0 - gate_f), mask=mask)
        gate_i = tl.load(g_b + offs, mask=mask, other=0.0)
        gate_g = tl.load(g_b + 3 * gate_step + offs, mask=mask, other=0.0)
        tl.store(dp_b + offs, gc * gate_g * gate_i * (1.0 - gate_i), mask=mask)
        tl.store(dp_b + 3 * gate_step + offs, gc * gate_i * (1.0 - gate_g * gate_g), mask=mask)


@triton.jit(do_not_specialize=SIZES[1:-1])
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
    PRECISION: tl.constexpr,  # tl.dot input_precision for float32: "tf32" or "ieee"
    DOT_IN_FP32: tl.constexpr,  # widen tl.dot operands (the CPU interpreter only)
):
    """partial[s, o, e*k + t] = sum over split s's (b, r, l) of dpre[b, o, r, l] *
    h_{r-1}[b, e, l + t - pad_left], h_{-1} = h0: a GEMM over all (b, r, l) at once, with
    dpre rounded to h's dtype as the operand (float32 accumulation)."""
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
        hk = from_h + from_h0
        acc = _dot(dp.to(hk.dtype), hk, acc, PRECISION, DOT_IN_FP32)
    out = (split * 4 * hidden + offs_o)[:, None] * red + kk[None, :]
    tl.store(partial_ptr + out, acc, mask=o_ok[:, None] & k_ok[None, :])
