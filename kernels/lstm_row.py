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

Design: one launch per row, the whole GPU on each row. The kernels are in
kernels/lstm_row_step.py; a launch's grid is (batch, hidden blocks, position blocks) and each
program computes the four gates of BLOCK_D hidden channels at BLOCK_L positions of one image,
with the cell update as the GEMM's epilogue. The previous row comes from global memory (L2),
written by the previous launch: the launch boundary is the barrier between rows, so no program
waits for another (an inter-program spin barrier would deadlock the interpreter, which runs
programs one after another, and needs every program resident at once). A CUDA graph of the
caller (torch.compile's "reduce-overhead", or a captured training step) removes the per-launch
host cost; nothing in the launchers synchronises or copies from the host, so they capture.
This replaces a persistent kernel (one program per image walking every row: 16 of 132 SMs at
batch 16); that one launch would only win where the host's per-row launch cost dominates (tiny
problems run without a graph), not worth a second set of kernels.

- forward: R launches. c and h in float32 (float64 for float64); h_{r-1} is read back from the
  output h in gates_in's dtype, so the recurrence sees exactly the h it returns (and backward
  reads); c and the activations are stored in the state dtype (float32 for float16/bfloat16).
- backward: R + 1 launches, rows in reverse. The launch of row r first computes dL/dh_r through
  row r+1, the transposed convolution sum_{o, t} W[o, e, t] * dL/dpre_{r+1}[o, m - t + pad_left]
  (a GEMM with W^T, read in place), adds grad_h, then element-wise the gate derivatives
  dL/dpre_r and dL/dc_{r-1} = dL/dc_r * f_r, kept in a two-half scratch for row r-1's launch.
  A last launch (row -1) computes grad_h0; grad_c0 is the scratch after row 0. grad_weight is
  one separate, fully parallel GEMM over all (batch, row, position) triples, split into parts
  the host adds in a fixed order; grad_bias is dL/dpre summed by torch: deterministic, no
  atomics.

Precision: every tl.dot accumulates in float32 (float64 for float64). float32 operands run on
TF32 tensor cores exactly when torch allows TF32 for matmuls
(torch.backends.cuda.matmul.allow_tf32, or fp32_precision "tf32"), else in IEEE float32;
bfloat16 and float16 run natively on tensor cores, the backward's gate derivatives rounded to
the input dtype as GEMM operands (as the reference's own backward keeps them); float64 is
IEEE. Offsets inside one batch element are int32 (the launchers check the sizes), batch offsets
and the grad-weight kernel's indices int64.

Figures at the bench shape, batch 16, 28x28, hidden 64, float32 with TF32 on an H100 (132 SMs,
64K registers and 228 KiB shared memory per SM); registers and shared memory from ptxas -v and
Triton's metadata for sm_90a, 4 warps (128 threads) per program:

| kernel | launches per call | grid at the bench shape | registers | shared | resident / SM |
|---|---|---|---|---|---|
| _forward_row_kernel (BLOCK_L 16) | R | 16 x 4 x 2 = 128 | 80 | 20 KiB | 6 |
| _backward_row_kernel (BLOCK_L 16) | R + 1 | 16 x 4 x 2 = 128 | 40 | 8 KiB | 12 |
| _grad_weight_kernel | 1 | 8 x 6 x 10 = 480 | 90 | 12 KiB | 5 |

(bfloat16: 96 / 40 / 80 registers, 2 / 5 / 5 KiB.) R = 28 for the Row LSTM (k = 3); the
Diagonal BiLSTM runs R = 55 steps (L = 28, k = 2) for both directions at once, a grid of
32 x 4 x 2 = 256 programs (two weight groups), and two grad-weight launches. Registers, not shared
memory, bound residency (6 forward programs = 24 of 64 warps per SM), but a row's 128 programs
take one program each on 128 of the 132 SMs, against 16 SMs for the persistent kernel this
replaces: a row is too small to fill the SMs' warps, so it is latency-bound either way.

Roofline estimate (a projection, not measured: no GPU has run it; +-50%): a forward row is a
[256, 192] x [192, 448] GEMM, 44 MFLOP (0.1 us of TF32 tensor-core time), and moves about
1.2 MB to and from HBM (0.4 us) plus 8 MB of L2 reads of W and h (each program reads its
49 KiB slice of W from L2, which holds it between launches: W is not kept on chip across rows).
So each launch costs its latency: about 1-3 us between dependent launches (less in a CUDA
graph) plus about 2-3 us for the chain of L2 loads and the epilogue, so ~4-5 us a forward row
and ~5-7 us a backward row (K = 768). The Row LSTM's recurrence: 28 x ~4.5 + 29 x ~6 us +
~30 us grad-weight ~ 0.35 ms of GPU time, the Diagonal BiLSTM's ~0.6 ms (111 launches of
twice the programs, each still latency-bound); add the layers' input convolutions and skews.
Without a CUDA graph the host issues each Triton launch in several microseconds, about the
same as the GPU runs it, so the estimate for a layer forward+backward is ~0.5-0.7 ms (Row
LSTM) and ~1-1.3 ms (Diagonal BiLSTM; ~1.5-2 ms with a launch per direction), against
issue 19's ~2 / ~5 ms for the persistent Triton kernel, ~4.1 / ~10.6 ms for CUDA and
~1.7 / ~6.5 ms for torch.compile(reference).

Both Diagonal BiLSTM directions run in one launch per row: a weight [G, 4D, D, k] (and bias
[G, 4D]) splits the batch into G groups, and a program of image b reads weight group
b // (B / G). genfast.nn.DiagonalBiLSTM stacks its two directions along the batch that way on
this backend, which halves its launches (and doubles each launch's grid: 256 programs at the
bench shape); grad-weight runs one launch per group.
"""
from __future__ import annotations

import contextlib

import torch
import triton

from ._aot import AotSpec, triton_type
from ._host import cached_table, zeros
from .lstm_row_step import SIZES, _backward_row_kernel, _forward_row_kernel, _grad_weight_kernel

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# Launch settings per tl.dot variant (_variant below), read by the launchers and AOT_SPECS
# alike; no variant spills on sm_80 or sm_90 (ptxas -v, tests/test_tensor_cores_lstm.py).
# (BLOCK_D hidden channels, BLOCK_K reduction chunk, num_warps) of the per-row kernels: 16
# channels (tl.dot's smallest M) keep the grid large; BLOCK_L, the positions of a program, is
# picked per launch by _block_l.
ROW_BLOCKS = {"fp16": (16, 32, 4), "bf16": (16, 32, 4), "tf32": (16, 32, 4),
              "ieee": (16, 32, 4), "fp64": (16, 16, 4)}
L_CHOICES = (16, 32)
# Grad-weight: (BLOCK_O gate channels, BLOCK_N (batch, row, position) triples, BLOCK_K, warps).
WEIGHT_BLOCKS = dict.fromkeys(ROW_BLOCKS, (32, 16, 32, 4))
# On a GPU, grad-weight splits its reduction over more programs until there are about this many.
# The interpreter runs programs one after another, so there a split would only add work.
_TARGET_PROGRAMS = 512
_VARIANT_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "tf32": torch.float32,
                   "ieee": torch.float32, "fp64": torch.float64}


# ----------------------------------------------------------------------------- launchers

def _state_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _device_guard(t: torch.Tensor):
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _variant(dtype: torch.dtype, device: torch.device) -> str:
    """The tl.dot variant for ``dtype`` now: float32 is "tf32" exactly when torch allows TF32
    for matmuls on a GPU (read through the getter that resolves both the legacy allow_tf32 flag
    and the newer fp32_precision, so that mixing the two does not raise), else "ieee"."""
    if dtype == torch.float32:
        tf32 = device.type == "cuda" and \
            torch._C._get_fp32_precision_getter("cuda", "matmul") == "tf32"
        return "tf32" if tf32 else "ieee"
    return {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64"}[dtype]


def _dot_options(variant: str, device: torch.device) -> dict:
    """The kernels' PRECISION and DOT_IN_FP32 constexprs (DOT_IN_FP32: 16-bit operands on the
    interpreter, which cannot multiply them)."""
    return {"PRECISION": "tf32" if variant == "tf32" else "ieee",
            "DOT_IN_FP32": device.type != "cuda" and variant in ("fp16", "bf16")}


@cached_table(maxsize=16)
def _sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of a GPU, read once per device."""
    return torch.cuda.get_device_properties(device).multi_processor_count


def _block_l(length: int, other_programs: int, device: torch.device) -> int:
    """Positions per program: the narrowest choice that holds the row (else the widest), or on
    a GPU the narrowest choice when the wider grid would leave SMs idle (fewer programs than
    SMs), so that batch 16 at 28x28 and hidden 64 runs 128 programs rather than 64."""
    fit = next((b for b in L_CHOICES if length <= b), L_CHOICES[-1])
    if device.type == "cuda" and fit > L_CHOICES[0] \
            and other_programs * triton.cdiv(length, fit) < _sm_count(device):
        return L_CHOICES[0]
    return fit


def row_grid(batch: int, hidden: int, length: int, variant: str, device: torch.device):
    """(grid, BLOCK_L) of one row's launch."""
    block_d = ROW_BLOCKS[variant][0]
    d_blocks = triton.cdiv(hidden, block_d)
    block_l = _block_l(length, batch * d_blocks, device)
    l_blocks = triton.cdiv(length, block_l)
    if max(d_blocks, l_blocks) > 65535:  # a CUDA grid's y and z dimensions
        raise RuntimeError(f"genfast: lstm_rows on Triton takes at most {65535 * block_d} "
                           f"hidden channels and {65535 * block_l} positions, got {hidden} and "
                           f"{length}")
    return (batch, d_blocks, l_blocks), block_l


def _check_int32(hidden, rows, length, ksize):
    """The kernels index inside one batch element with int32 (the batch offset is int64); the
    margin covers the masked lanes of the last channel block."""
    limit = 2**31 - 1
    margin = 4 * hidden + 64
    if margin * rows * length > limit or margin * (hidden + 64) * ksize > limit:
        raise RuntimeError(f"genfast: lstm_rows on Triton needs 4*D*R*L and 4*D*D*k (plus a "
                           f"tile's margin) below 2^31 elements, got D={hidden}, R={rows}, "
                           f"L={length}, k={ksize}")


def weight_groups(batch: int, weight: torch.Tensor) -> tuple[int, int]:
    """(G, images per group) of a weight [4D, D, k] (G = 1) or [G, 4D, D, k]: the batch splits
    into G equal groups, image b running with weight group b // (B / G) (at least 1 for the
    kernels' division when B = 0)."""
    groups = weight.shape[0] if weight.dim() == 4 else 1
    if groups < 1 or batch % groups:
        raise RuntimeError(f"genfast: lstm_rows with {groups} weight groups needs a batch that "
                           f"splits into them, got {batch}")
    return groups, max(batch // groups, 1)


def _check(gates_in, weight, bias, h0, c0, pad_left):
    if gates_in.dim() != 4 or weight.dim() not in (3, 4):
        raise RuntimeError(f"genfast: lstm_rows expects gates_in [B, 4D, R, L] and weight "
                           f"[4D, D, k] or [G, 4D, D, k], got {tuple(gates_in.shape)} and "
                           f"{tuple(weight.shape)}")
    batch, channels, rows, length = gates_in.shape
    groups, _ = weight_groups(batch, weight)
    hidden, ksize = weight.shape[-2], weight.shape[-1]
    if channels != 4 * hidden or weight.shape[-3] != 4 * hidden:
        raise RuntimeError(f"genfast: lstm_rows needs gates_in [B, 4D, R, L] and weight "
                           f"[4D, D, k] with one D, got {tuple(gates_in.shape)} and "
                           f"{tuple(weight.shape)}")
    if bias is not None and bias.numel() != groups * 4 * hidden:
        raise RuntimeError(f"genfast: lstm_rows needs a bias of {groups} x {4 * hidden} values, "
                           f"got shape {tuple(bias.shape)}")
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

    gates_in: [B, 4D, R, L]; weight: [4D, D, k], or [G, 4D, D, k] for G groups of the batch
    (weight_groups), one launch per row for all of them; bias: [4D] ([G, 4D]) or None; h0, c0:
    [B, D, L]; pad_left in [0, k). Returns h [B, D, R, L] in gates_in's dtype, c [B, D, R, L]
    and the activations gates [B, 4D, R, L] in the state dtype (float32 for float16 / bfloat16
    inputs).
    """
    batch, hidden, rows, length, ksize = _check(gates_in, weight, bias, h0, c0, pad_left)
    groups, per_group = weight_groups(batch, weight)
    dtype, state = gates_in.dtype, _state_dtype(gates_in.dtype)
    device = gates_in.device
    h = torch.empty((batch, hidden, rows, length), dtype=dtype, device=device)
    c = torch.empty((batch, hidden, rows, length), dtype=state, device=device)
    gates = torch.empty((batch, 4 * hidden, rows, length), dtype=state, device=device)
    if h.numel() == 0:
        return h, c, gates
    bias_s = (bias.to(state).contiguous() if bias is not None
              else zeros(groups * 4 * hidden, state, device))
    variant = _variant(dtype, device)
    block_d, block_k, warps = ROW_BLOCKS[variant]
    grid, block_l = row_grid(batch, hidden, length, variant, device)
    args = (h, c, gates, gates_in.contiguous(), weight.contiguous(), bias_s,
            h0.to(dtype).contiguous(), c0.to(state).contiguous())
    with _device_guard(gates_in):
        for row in range(rows):
            _forward_row_kernel[grid](
                *args, row, batch, hidden, rows, length, ksize, pad_left, per_group,
                BLOCK_D=block_d, BLOCK_L=block_l, BLOCK_K=block_k, num_warps=warps,
                **_dot_options(variant, device))
    return h, c, gates


def _grad_weight(dpre, h, h0, batch, hidden, rows, length, ksize, pad_left, variant):
    state = dpre.dtype
    red = hidden * ksize
    block_o, block_n, block_k, warps = WEIGHT_BLOCKS[variant]
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
            BLOCK_O=block_o, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=warps,
            **_dot_options(variant, dpre.device))
    # Splits summed in a fixed order: the result does not depend on scheduling.
    return partial.sum(0) if splits > 1 else partial[0]


def lstm_rows_backward(grad_h, grad_c, weight, h, c, gates, h0, c0, pad_left):
    """(grad_gates_in, grad_weight, grad_bias, grad_h0, grad_c0) of genfast::lstm_rows.

    grad_h, grad_c: [B, D, R, L] cotangents of h and c; h, c, gates: the forward's outputs;
    h0, c0: its initial states. grad_gates_in has h's dtype, grad_weight and grad_bias ([4D])
    weight's, grad_h0 and grad_c0 those of h0 and c0.
    """
    batch, hidden, rows, length = h.shape
    ksize = weight.shape[-1]
    groups, per_group = weight_groups(batch, weight)
    dtype, state = h.dtype, _state_dtype(h.dtype)
    device = h.device
    if tuple(weight.shape[-3:-1]) != (4 * hidden, hidden) or tuple(gates.shape) != (
            batch, 4 * hidden, rows, length) or grad_h.shape != h.shape \
            or grad_c.shape != h.shape or c.shape != h.shape:
        raise RuntimeError("genfast: lstm_rows_backward got inconsistent shapes: "
                           f"grad_h {list(grad_h.shape)}, grad_c {list(grad_c.shape)}, weight "
                           f"{list(weight.shape)}, h {list(h.shape)}, "
                           f"c {list(c.shape)}, gates {list(gates.shape)}")
    if not 0 <= pad_left < max(ksize, 1):
        raise RuntimeError(f"genfast: pad_left must lie in [0, {ksize}), got {pad_left}")
    _check_int32(hidden, rows, length, ksize)
    grad_h0 = torch.empty((batch, hidden, length), dtype=state, device=device)
    carry = torch.empty((2, batch, hidden, length), dtype=state, device=device)
    dpre = torch.empty((batch, 4 * hidden, rows, length), dtype=state, device=device)
    if dpre.numel() == 0:
        grad_weight = torch.zeros((groups, 4 * hidden, hidden * ksize), dtype=state,
                                  device=device)
        grad_h0.zero_()
        carry.zero_()
    else:
        variant = _variant(dtype, device)
        block_d, block_k, warps = ROW_BLOCKS[variant]
        grid, block_l = row_grid(batch, hidden, length, variant, device)
        args = (dpre, carry, grad_h0, grad_h.to(dtype).contiguous(),
                grad_c.to(state).contiguous(), c.to(state).contiguous(),
                gates.to(state).contiguous(), c0.to(state).contiguous(),
                weight.to(dtype).contiguous())
        with _device_guard(h):
            for row in range(rows - 1, -2, -1):
                _backward_row_kernel[grid](
                    *args, row, batch, hidden, rows, length, ksize, pad_left, per_group,
                    BLOCK_D=block_d, BLOCK_L=block_l, BLOCK_K=block_k, num_warps=warps,
                    **_dot_options(variant, device))
        # One fully parallel launch per group (a batch slice of contiguous tensors).
        h_c, h0_c = h.contiguous(), h0.to(dtype).contiguous()
        grad_weight = torch.stack([
            _grad_weight(dpre[g * per_group:(g + 1) * per_group],
                         h_c[g * per_group:(g + 1) * per_group],
                         h0_c[g * per_group:(g + 1) * per_group], per_group, hidden, rows,
                         length, ksize, pad_left, variant) for g in range(groups)])
    grad_bias = dpre.view(groups, batch // groups, 4 * hidden, rows, length).sum((1, 3, 4))
    grad_c0 = carry[rows % 2].to(c0.dtype, copy=True)  # not a view into the scratch
    return (dpre.to(dtype), grad_weight.view(weight.shape).to(weight.dtype),
            grad_bias.view(weight.shape[:-2]).to(weight.dtype), grad_h0.to(h0.dtype), grad_c0)


# ----------------------------------------------------------------------------- AOT variants

def _aot_specs() -> list[AotSpec]:
    """Every (kernel, tl.dot variant, BLOCK_L) the launchers above run on a GPU, with their
    launch settings. The sizes and the row are not specialized (do_not_specialize), so each
    variant is one compile."""
    specs = []
    sizes = {name: "i32" for name in SIZES}
    for variant, dtype in _VARIANT_DTYPES.items():
        t, s = triton_type(dtype), triton_type(_state_dtype(dtype))
        dot = {"PRECISION": "tf32" if variant == "tf32" else "ieee", "DOT_IN_FP32": False}
        forward = {"h_ptr": t, "c_ptr": s, "gates_ptr": s, "x_ptr": t, "w_ptr": t,
                   "bias_ptr": s, "h0_ptr": t, "c0_ptr": s, **sizes}
        backward = {"dpre_ptr": s, "carry_ptr": s, "grad_h0_ptr": s, "grad_h_ptr": t,
                    "grad_c_ptr": s, "c_ptr": s, "gates_ptr": s, "c0_ptr": s, "w_ptr": t,
                    **sizes}
        weight = {"partial_ptr": s, "dpre_ptr": s, "h_ptr": t, "h0_ptr": t,
                  **{name: "i32" for name in SIZES[1:-1]}}
        block_d, block_k, warps = ROW_BLOCKS[variant]
        for fn, signature in ((_forward_row_kernel, forward), (_backward_row_kernel, backward)):
            pointers = tuple(name for name, ty in signature.items() if ty.startswith("*"))
            for block_l in L_CHOICES:
                specs.append(AotSpec(
                    fn, signature,
                    {"BLOCK_D": block_d, "BLOCK_L": block_l, "BLOCK_K": block_k, **dot},
                    num_warps=warps, divisible_by_16=pointers, tag=f"{variant}-l{block_l}"))
        block_o, block_n, block_kw, wwarps = WEIGHT_BLOCKS[variant]
        specs.append(AotSpec(
            _grad_weight_kernel, weight,
            {"BLOCK_O": block_o, "BLOCK_N": block_n, "BLOCK_K": block_kw, **dot},
            num_warps=wwarps,
            divisible_by_16=tuple(name for name, ty in weight.items() if ty.startswith("*")),
            tag=variant))
    return specs


AOT_SPECS = _aot_specs()
