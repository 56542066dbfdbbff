"""Triton kernels of genfast::masked_conv2d: a PixelCNN masked convolution (van den Oord et al.
2016, "Pixel Recurrent Neural Networks", section 3.4) that spends no work on the taps its mask
hides, on tensor cores, with the semantics of the C++ CPU kernels (csrc/masked_conv.cpp).

Every pass is an implicit GEMM over the visible taps only (24 of 49 for a 7x7 mask A). The
visible taps of masks A, B and V are the first T taps of the kernel in raster order (rows above
the centre, then the centre row up to the centre), so tap t is (t // kw, t % kw) and no table of
taps exists. The host packs their weights as [tap, Cin, Cout] with the centre's colour mask
applied, so the kernels never test a mask. The activations are read in place, NCHW or NHWC
(one storage order per call, CHANNELS_LAST): a tap outside the image is a masked load that
reads zero, which is the convolution's zero padding without a zero-bordered copy.

- forward: y[pixel, co] = bias[co] + sum over taps t, channels ci of x[pixel + shift_t, ci] *
  W_t[ci, co]. M = output pixels, N = Cout, K = visible taps x Cin, one flat loop over
  (tap, BLOCK_K chunk of channels) so that Triton pipelines the loads across taps.
- grad-input: the same kernel with the taps mirrored and the packed weights read transposed,
  dx[pixel, ci] = sum over t, co of dy[pixel - shift_t, co] * W_t[ci, co]. Each dx element has
  one owner, so there are no atomics; only the window's receptive field is computed.
- grad-weight: dW_t[ci, co] = sum over output pixels of x[pixel + shift_t, ci] * dy[pixel, co].
  One program per (tap, ci block, co block, split of the pixels) reduces with tl.dot; the
  splits' partial sums are added by one torch sum in a fixed order (deterministic).
kernels/_masked_conv_host.py holds the host-side geometry, weight packing and precision choice.

Precision: tl.dot runs on tensor cores for every dtype but float64 (DMMA on sm_80 and later).
float32 uses TF32 exactly when torch lets cuDNN use it for convolutions (what the reference
runs at), else IEEE float32 (FMAs); float16/bfloat16 go to the MMA as they are. Accumulation
is float32 (float64 for float64). Pixel coordinates are int32, element offsets int64.

Bench shape (batch 16, 64 -> 64 channels, 28x28 NCHW, 7x7 A: 24 taps; 3x3 B: 5 taps), float32
in TF32 (bfloat16 alike), on an H100 (132 SMs):
- forward and grad-input: M = 12544 pixels in BLOCK_M = 64 rows, a grid of 196 x 1 programs of
  4 warps. ptxas -v: 252 (sm_80) / 244 (sm_90) registers a thread for the forward, 248 / 242
  for grad-input (bfloat16: ~250), so registers allow 2 programs (8 warps, 1/8 occupancy) per
  SM; shared memory is 3 stages of 64x32 + 32x64 tiles, 48 KiB (bfloat16: 24 KiB). All 196
  programs are resident in one wave, 1 or 2 per SM. NCHW loads are one element per thread
  (pixels contiguous, rows broken by the tile); NHWC with channels divisible by 16 vectorizes
  them and needs 128-150 registers (sm_80), 3 programs per SM.
- grad-weight: 8 warps, 176 / 158 registers (1 program per SM), 48 KiB shared; 24 taps x 11
  pixel splits = 264 programs (2 per SM, two waves) of ~1140 pixels each (3x3 B: 5 x 52 = 260
  programs of ~240 pixels), then one torch sum of the 11 [24, 64, 64] float32 partials.
tests/test_triton_aot.py checks every variant's PTX for mma / wgmma and ptxas for spills.
"""
from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl
from torch._prims_common import suggest_memory_format

from ._aot import AotSpec, triton_type
from ._masked_conv_host import (Geometry, acc_dtype, capability_key, centre_mask, multiprocessors,
                                variant_key)

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
CAPABILITIES = (80, 90)  # the launch settings below are chosen (ptxas -v, no spills) for these

# Launch settings per target and variant, read by the launchers and AOT_SPECS alike. tl.dot
# needs every block dimension >= 16. Tensor-core variants (bf16, fp16, tf32) take BLOCK_K 32 and
# 4 warps: one warpgroup, which sm_90's wgmma wants with BLOCK_M = 64. IEEE float32 runs as FMAs
# with each thread holding rows of A and columns of B, hence the short K blocks and 8 warps;
# float64 holds a float64 accumulator (twice the registers of float32).
GATHER_BLOCKS = {  # (BLOCK_M pixels, BLOCK_N channels out, BLOCK_K channels in, warps, stages)
    80: {"fp16": (64, 64, 32, 4, 3), "bf16": (64, 64, 32, 4, 3), "tf32": (64, 64, 32, 4, 3),
         "ieee": (64, 64, 16, 8, 3), "fp64": (64, 32, 16, 8, 3)},
}
WEIGHT_BLOCKS = {  # (BLOCK_M pixels, BLOCK_CI, BLOCK_CO, warps, stages)
    80: {"fp16": (32, 64, 64, 4, 3), "bf16": (32, 64, 64, 4, 3), "tf32": (32, 64, 64, 8, 3),
         "ieee": (16, 32, 32, 4, 3), "fp64": (32, 32, 32, 4, 3)},
}
# sm_90 takes sm_80's settings but for float64's gather, whose 8-warp NHWC grad-input spills
# there (16 bytes).
GATHER_BLOCKS[90] = {**GATHER_BLOCKS[80], "fp64": (64, 32, 16, 4, 3)}
WEIGHT_BLOCKS[90] = WEIGHT_BLOCKS[80]
# On a GPU, grad-weight splits the pixels over more programs until there are about this many
# per SM: every split adds a [T, Cin, Cout] float32 partial sum to write and add up. The
# interpreter runs programs one after another, so there a split would only add work.
_WEIGHT_PROGRAMS_PER_SM = 2


@triton.jit
def _dot(a, b, acc, PRECISION: tl.constexpr, DOT_IN_FP32: tl.constexpr):
    """acc + a @ b. DOT_IN_FP32 (set only under the interpreter, whose tl.dot misreads
    bfloat16) widens the operands first: bfloat16 products are exact in float32, so the result
    is the tensor cores' up to the order of the float32 sums."""
    if DOT_IN_FP32:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=PRECISION)


@triton.jit
def _gather_conv_kernel(
    out_ptr,       # out [B, N, out_h, out_w] in src's dtype and storage order
    src_ptr,       # in [B, K, src_h, src_w]: x (forward) or grad_y (grad-input), in place
    w_ptr,         # in [T, Cin, Cout] packed weights of the visible taps, src's dtype
    bias_ptr,      # in [N] bias in src's dtype; unread without HAS_BIAS
    num_taps,      # T, visible taps (>= 1): the first T of the kernel in raster order
    kernel_w,      # kw, columns of the kernel
    centre_row,    # (kh - 1) // 2
    centre_col,    # (kw - 1) // 2
    tap_step,      # dilation (forward) or -dilation (grad-input: taps mirrored)
    num_pixels,    # M = B * region_h * region_w, the output pixels this launch computes
    region_h,      # rows of the computed region
    region_w,      # columns of the computed region
    src_h,         # rows of src
    src_w,         # columns of src
    src_row0,      # src row that the centre tap of region row 0 reads
    src_col0,      # src column that the centre tap of region column 0 reads
    out_h,         # rows of out
    out_w,         # columns of out
    out_row0,      # out row of region row 0
    out_col0,      # out column of region column 0
    k_channels,    # K, channels of src
    n_channels,    # N, channels of out
    CHANNELS_LAST: tl.constexpr,  # src and out stored NHWC (else NCHW)
    W_TRANSPOSED: tl.constexpr,   # weights read as [T, N, K] (grad-input) rather than [T, K, N]
    HAS_BIAS: tl.constexpr,       # add bias_ptr's values
    PRECISION: tl.constexpr,      # tl.dot input_precision: "tf32" or "ieee"
    DOT_IN_FP32: tl.constexpr,    # widen tl.dot's operands (see _dot)
    BLOCK_M: tl.constexpr,        # pixels per program
    BLOCK_N: tl.constexpr,        # output channels per program
    BLOCK_K: tl.constexpr,        # channels per tl.dot
):
    if src_ptr.dtype.element_ty == tl.float64:
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float64)
    else:
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = offs_m < num_pixels
    q = offs_m % region_w
    p = (offs_m // region_w) % region_h
    b = (offs_m // (region_w * region_h)).to(tl.int64)  # int64 offsets from here on
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < n_channels
    offs_k = tl.arange(0, BLOCK_K)
    # A tap shifts every pixel of the tile by the same (row, column) step, so its loads are the
    # centre tap's pointers plus one scalar; only the image-border mask depends on the pixel.
    row0 = p + src_row0
    col0 = q + src_col0
    src_plane = src_h.to(tl.int64) * src_w
    if CHANNELS_LAST:
        pixel_stride = k_channels
        k_stride = 1
        centre = (b * src_plane + row0 * src_w + col0) * k_channels
    else:
        pixel_stride = 1
        k_stride = src_plane
        centre = b * k_channels * src_plane + row0 * src_w + col0
    a_ptrs = src_ptr + (centre[:, None] + offs_k[None, :] * k_stride)
    if W_TRANSPOSED:
        w_ptrs = w_ptr + (offs_n[None, :] * k_channels + offs_k[:, None])
    else:
        w_ptrs = w_ptr + (offs_k[:, None] * n_channels + offs_n[None, :])
    k_chunks = tl.cdiv(k_channels, BLOCK_K)
    for i in range(0, num_taps * k_chunks):
        tap = i // k_chunks
        k0 = (i - tap * k_chunks) * BLOCK_K
        dy = (tap // kernel_w - centre_row) * tap_step
        dx = (tap % kernel_w - centre_col) * tap_step
        inside = m_ok & (row0 + dy >= 0) & (row0 + dy < src_h) & (col0 + dx >= 0) \
            & (col0 + dx < src_w)
        k_ok = offs_k < k_channels - k0
        a_shift = (dy * src_w + dx).to(tl.int64) * pixel_stride + k0 * k_stride
        a = tl.load(a_ptrs + a_shift, mask=inside[:, None] & k_ok[None, :], other=0.0)
        w_shift = tap.to(tl.int64) * k_channels * n_channels
        if W_TRANSPOSED:
            w_shift += k0
        else:
            w_shift += k0 * n_channels
        w = tl.load(w_ptrs + w_shift, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        acc = _dot(a, w, acc, PRECISION, DOT_IN_FP32)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=n_ok, other=0.0).to(acc.dtype)[None, :]
    orow = p + out_row0
    ocol = q + out_col0
    if CHANNELS_LAST:
        dst = ((b * out_h + orow) * out_w + ocol)[:, None] * n_channels + offs_n[None, :]
    else:
        dst = ((b[:, None] * n_channels + offs_n[None, :]) * out_h + orow[:, None]) * out_w \
            + ocol[:, None]
    tl.store(out_ptr + dst, acc.to(out_ptr.dtype.element_ty),
             mask=m_ok[:, None] & n_ok[None, :])


@triton.jit
def _grad_weight_kernel(
    partial_ptr,   # out [S, T, Cin, Cout] each split's sums in the accumulator dtype
    x_ptr,         # in [B, Cin, height, width] the layer's input, in place
    dy_ptr,        # in [B, Cout, win_h, win_w] grad_y, in place, stored as x is
    num_taps,      # T, visible taps: the first T of the kernel in raster order
    kernel_w,      # kw
    centre_row,    # (kh - 1) // 2
    centre_col,    # (kw - 1) // 2
    dilation,      # spacing of the taps
    num_pixels,    # M = B * win_h * win_w
    win_h,         # rows of the output window
    win_w,         # columns of the output window
    height,        # rows of x
    width,         # columns of x
    row0,          # image row of window row 0
    col0,          # image column of window column 0
    in_channels,   # Cin
    out_channels,  # Cout
    CHANNELS_LAST: tl.constexpr,  # x and dy stored NHWC (else NCHW)
    PRECISION: tl.constexpr,      # tl.dot input_precision: "tf32" or "ieee"
    DOT_IN_FP32: tl.constexpr,    # widen tl.dot's operands (see _dot)
    BLOCK_M: tl.constexpr,        # pixels per tl.dot
    BLOCK_CI: tl.constexpr,       # input channels per program
    BLOCK_CO: tl.constexpr,       # output channels per program
):
    ci_blocks = tl.cdiv(in_channels, BLOCK_CI)
    tap = tl.program_id(0) // ci_blocks
    offs_ci = (tl.program_id(0) % ci_blocks) * BLOCK_CI + tl.arange(0, BLOCK_CI)
    offs_co = tl.program_id(1) * BLOCK_CO + tl.arange(0, BLOCK_CO)
    split = tl.program_id(2)
    splits = tl.num_programs(2)
    ci_ok = offs_ci < in_channels
    co_ok = offs_co < out_channels
    shift_row = row0 + (tap // kernel_w - centre_row) * dilation
    shift_col = col0 + (tap % kernel_w - centre_col) * dilation
    plane = height.to(tl.int64) * width
    win_plane = win_h.to(tl.int64) * win_w
    acc = tl.zeros([BLOCK_CI, BLOCK_CO], partial_ptr.dtype.element_ty)
    for m0 in range(split * BLOCK_M, num_pixels, splits * BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M).to(tl.int64)
        m_ok = offs_m < num_pixels
        oj = offs_m % win_w
        oi = (offs_m // win_w) % win_h
        b = offs_m // win_plane
        row = oi + shift_row
        col = oj + shift_col
        inside = m_ok & (row >= 0) & (row < height) & (col >= 0) & (col < width)
        if CHANNELS_LAST:
            x_offs = ((b * plane + row * width + col) * in_channels)[None, :] + offs_ci[:, None]
            g_offs = ((b * win_plane + oi * win_w + oj) * out_channels)[:, None] \
                + offs_co[None, :]
        else:
            x_offs = (b * in_channels * plane + row * width + col)[None, :] \
                + offs_ci[:, None].to(tl.int64) * plane
            g_offs = (b * out_channels * win_plane + oi * win_w + oj)[:, None] \
                + offs_co[None, :].to(tl.int64) * win_plane
        xt = tl.load(x_ptr + x_offs, mask=ci_ok[:, None] & inside[None, :], other=0.0)
        g = tl.load(dy_ptr + g_offs, mask=m_ok[:, None] & co_ok[None, :], other=0.0)
        acc = _dot(xt, g, acc, PRECISION, DOT_IN_FP32)
    row_out = (split * num_taps + tap).to(tl.int64) * in_channels + offs_ci
    tl.store(partial_ptr + (row_out[:, None] * out_channels + offs_co[None, :]), acc,
             mask=ci_ok[:, None] & co_ok[None, :])


# The interpreter replaces jit functions with Python ones; its tl.dot misreads bfloat16.
_INTERPRETED = not isinstance(_gather_conv_kernel, triton.runtime.JITFunction)


# ----------------------------------------------------------------------------- host side

def _device_guard(t: torch.Tensor):
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _dot_settings(variant: str) -> dict:
    return {"PRECISION": "tf32" if variant == "tf32" else "ieee",
            "DOT_IN_FP32": _INTERPRETED and variant == "bf16"}


def _in_storage_order(t: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """t dense in the one storage order of the call (a copy only if it is not already)."""
    return t.contiguous(memory_format=torch.channels_last if channels_last
                        else torch.contiguous_format)


def _launch_gather(out, src, packed, bias, tap_args, region, src_origin, out_origin,
                   transposed, channels_last):
    """out[region] = bias + the gather convolution of src with the packed weights."""
    variant = variant_key(out.dtype)
    block_m, block_n, block_k, warps, stages = GATHER_BLOCKS[capability_key(out.device)][variant]
    k_channels, n_channels = src.shape[1], out.shape[1]
    num_pixels = out.shape[0] * region[0] * region[1]
    grid = (triton.cdiv(num_pixels, block_m), triton.cdiv(n_channels, block_n))
    with _device_guard(out):
        _gather_conv_kernel[grid](
            out, src, packed, src if bias is None else bias, *tap_args, num_pixels,
            region[0], region[1], src.shape[2], src.shape[3], src_origin[0], src_origin[1],
            out.shape[2], out.shape[3], out_origin[0], out_origin[1], k_channels, n_channels,
            CHANNELS_LAST=channels_last, W_TRANSPOSED=transposed, HAS_BIAS=bias is not None,
            **_dot_settings(variant), BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
            num_warps=warps, num_stages=stages)


def masked_conv2d_forward(x, weight, bias, mask_type, data_channels, dilation, window):
    """y of genfast::masked_conv2d (schema in csrc/registration.cpp).

    x: [B, Cin, H, W]; weight: [Cout, Cin, kh, kw]; bias: [Cout] or None; mask_type 0 (A),
    1 (B) or 2 (V); window: [] or [row0, row1, col0, col1]. Returns [B, Cout, win_h, win_w] in x's
    suggested memory format.
    """
    g = Geometry(x, weight, mask_type, data_channels, dilation, window)
    fmt = suggest_memory_format(x)
    y = torch.empty((g.batch, g.cout, g.win_h, g.win_w), dtype=x.dtype, device=x.device,
                    memory_format=fmt)
    if y.numel() == 0:
        return y
    if not g.num_taps or g.cin == 0:
        # Every tap hidden (a 1x1 mask A with one colour group): the output is the bias.
        y.copy_((bias if bias is not None else y.new_zeros(g.cout)).view(1, -1, 1, 1).expand_as(y))
        return y
    channels_last = fmt == torch.channels_last
    _launch_gather(y, _in_storage_order(x, channels_last), g.packed_weight(weight),
                   None if bias is None else bias.contiguous(), g.tap_args(),
                   (g.win_h, g.win_w), (g.row0, g.col0), (0, 0), False, channels_last)
    return y


def _grad_input(dy, x, weight, g, channels_last):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    rows, cols = g.read_rows[1] - g.read_rows[0], g.read_cols[1] - g.read_cols[0]
    whole = (rows, cols) == (g.height, g.width)
    gx = (torch.empty_like if whole else torch.zeros_like)(x, memory_format=fmt)
    if gx.numel() == 0 or not g.num_taps or g.cout == 0 or g.win_h == 0 or g.win_w == 0 \
            or rows <= 0 or cols <= 0:
        return gx.zero_()
    # Image pixel (r, c) reads grad_y at window position (r - row0, c - col0) through the
    # centre tap, and the mirrored shift of the others.
    _launch_gather(gx, dy, g.packed_weight(weight), None, g.tap_args(mirrored=True),
                   (rows, cols), (g.read_rows[0] - g.row0, g.read_cols[0] - g.col0),
                   (g.read_rows[0], g.read_cols[0]), True, channels_last)
    return gx


def _grad_weight(dy, x, weight, g, channels_last):
    acc = acc_dtype(x.dtype)
    gw = torch.zeros(weight.shape, dtype=acc, device=weight.device)
    num_pixels = g.batch * g.win_h * g.win_w
    if num_pixels > 0 and g.num_taps and g.cin > 0 and g.cout > 0:
        variant = variant_key(x.dtype)
        block_m, block_ci, block_co, warps, stages = \
            WEIGHT_BLOCKS[capability_key(x.device)][variant]
        ci_blocks, co_blocks = triton.cdiv(g.cin, block_ci), triton.cdiv(g.cout, block_co)
        base = g.num_taps * ci_blocks * co_blocks
        splits = 1
        if x.is_cuda:
            target = _WEIGHT_PROGRAMS_PER_SM * multiprocessors(x.device)
            splits = max(1, min(triton.cdiv(num_pixels, block_m), target // base, 65535))
        partial = torch.empty((splits, g.num_taps, g.cin, g.cout), dtype=acc, device=x.device)
        with _device_guard(x):
            _grad_weight_kernel[(g.num_taps * ci_blocks, co_blocks, splits)](
                partial, _in_storage_order(x, channels_last), dy, g.num_taps, g.kw, g.cy, g.cx,
                g.dilation, num_pixels, g.win_h, g.win_w, g.height, g.width, g.row0, g.col0,
                g.cin, g.cout, CHANNELS_LAST=channels_last, **_dot_settings(variant),
                BLOCK_M=block_m, BLOCK_CI=block_ci, BLOCK_CO=block_co, num_warps=warps,
                num_stages=stages)
        # Splits summed in a fixed order: the result does not depend on scheduling.
        packed = partial.sum(0) if splits > 1 else partial[0]  # [T, Cin, Cout]
        if g.has_centre:
            packed[-1] *= centre_mask(g.layer, packed.device, acc)
        gw.view(g.cout, g.cin, g.kh * g.kw)[:, :, :g.num_taps] = packed.permute(2, 1, 0)
    return gw.to(weight.dtype)


def masked_conv2d_backward(grad_y, x, weight, mask_type, data_channels, dilation, window,
                           output_mask):
    """(grad_x, grad_weight, grad_bias) of genfast::masked_conv2d; an empty (0,) tensor for each
    gradient output_mask does not ask for. grad_x is in x's suggested memory format."""
    g = Geometry(x, weight, mask_type, data_channels, dilation, window)
    if tuple(grad_y.shape) != (g.batch, g.cout, g.win_h, g.win_w):
        raise RuntimeError(f"genfast: grad_y must have the output's shape "
                           f"{[g.batch, g.cout, g.win_h, g.win_w]}, got {list(grad_y.shape)}")
    channels_last = suggest_memory_format(x) == torch.channels_last
    dy = _in_storage_order(grad_y.to(x.dtype), channels_last) \
        if output_mask[0] or output_mask[1] else None
    gx = _grad_input(dy, x, weight, g, channels_last) if output_mask[0] else x.new_empty(0)
    gw = _grad_weight(dy, x, weight, g, channels_last) if output_mask[1] \
        else weight.new_empty(0)
    gb = (grad_y.sum((0, 2, 3), dtype=acc_dtype(x.dtype)).to(x.dtype) if output_mask[2]
          else x.new_empty(0))
    return gx, gw, gb


# ----------------------------------------------------------------------------- AOT variants

def _aot_specs() -> list[AotSpec]:
    """Every (kernel, variant, storage order) the launchers above run, per target.

    Triton's launcher also specializes on channel counts divisible by 16 (which lets it
    vectorize the channel-contiguous loads and stores of NHWC), so the NHWC variants are listed
    both ways; NCHW ones, contiguous along pixels, are listed once.
    """
    specs = []
    for cap in CAPABILITIES:
        for variant in GATHER_BLOCKS[cap]:
            specs += _variant_specs(cap, variant)
    return specs


_VARIANT_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "tf32": torch.float32,
                   "ieee": torch.float32, "fp64": torch.float64}


def _variant_specs(cap: int, variant: str) -> list[AotSpec]:
    dtype = _VARIANT_DTYPES[variant]
    t, a = triton_type(dtype), triton_type(acc_dtype(dtype))
    dot = {"PRECISION": "tf32" if variant == "tf32" else "ieee", "DOT_IN_FP32": False}
    gather = {"out_ptr": t, "src_ptr": t, "w_ptr": t, "bias_ptr": t}
    gather.update({name: "i32" for name in _gather_conv_kernel.arg_names[4:]
                   if not name.isupper()})
    weight = {"partial_ptr": a, "x_ptr": t, "dy_ptr": t}
    weight.update({name: "i32" for name in _grad_weight_kernel.arg_names[3:]
                   if not name.isupper()})
    bm, bn, bk, warps, stages = GATHER_BLOCKS[cap][variant]
    wm, wci, wco, wwarps, wstages = WEIGHT_BLOCKS[cap][variant]
    specs = []
    for channels_last in (False, True):
        layout = "nhwc" if channels_last else "nchw"
        for hint in (((), ("k_channels", "n_channels")) if channels_last else ((),)):
            tag = f"{variant}-{layout}" + ("-c16" if hint else "")
            for transposed in (False, True):
                specs.append(AotSpec(
                    _gather_conv_kernel, gather,
                    {"CHANNELS_LAST": channels_last, "W_TRANSPOSED": transposed,
                     "HAS_BIAS": not transposed, **dot,
                     "BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk},
                    num_warps=warps, num_stages=stages, capabilities=(cap,),
                    divisible_by_16=("out_ptr", "src_ptr", "w_ptr", "bias_ptr") + hint,
                    tag=f"{'grad_input' if transposed else 'forward'}-{tag}"))
            whint = ("in_channels", "out_channels") if hint else ()
            specs.append(AotSpec(
                _grad_weight_kernel, weight,
                {"CHANNELS_LAST": channels_last, **dot,
                 "BLOCK_M": wm, "BLOCK_CI": wci, "BLOCK_CO": wco},
                num_warps=wwarps, num_stages=wstages, capabilities=(cap,),
                divisible_by_16=("partial_ptr", "x_ptr", "dy_ptr") + whint, tag=tag))
    return specs


AOT_SPECS = _aot_specs()
