"""Triton kernels of genfast::masked_conv2d: a PixelCNN masked convolution (van den Oord et al.
2016, "Pixel Recurrent Neural Networks", section 3.4) that spends no work on the taps its mask
hides, with the semantics of the C++ CPU kernels (csrc/masked_conv.cpp).

Every pass is an implicit GEMM over the visible taps only (24 of 49 for a 7x7 mask A). The host
lists them in raster order (the centre tap ((kh-1)//2, (kw-1)//2) sits on the output pixel, as
'same' padding places it) and packs their weights as [tap, k, n] with the centre's colour mask
already applied, so the kernels never test a mask. Mask V (the Gated PixelCNN's vertical stack)
is the same with every tap of the centre row and above visible and no colour rule. As on the
CPU, the activations are read from zero-bordered pixel-major copies: P holds the window's
receptive field of x, Q holds grad_y with a border wide enough for every mirrored tap. A tap is
then one constant element offset into P or Q (an int64 table the host fills), with no bounds
test per tap, and a tile's channels are contiguous in memory.

- forward: y[pixel, co] = bias[co] + sum over taps t and input channels ci of
  P[pixel + offset_t, ci] * W_t[ci, co]. M = output pixels, N = output channels, K = visible
  taps x input channels, walked tap by tap in BLOCK_K channel chunks.
- grad-input: the same gather kernel with the taps mirrored and the packed weights transposed,
  dx[pixel, ci] = sum over t, co of Q[pixel - offset_t, co] * W_t[ci, co]. Each dx element has
  one owner, so there are no atomics; only the window's receptive field is computed, the rest of
  dx is zero.
- grad-weight: dW_t[ci, co] = sum over output pixels of P[pixel + offset_t, ci] * dy[pixel, co].
  One program per (tap, ci block, co block, split of the pixels) reduces with tl.dot; the splits'
  partial sums are added on the host in a fixed order, so the result is deterministic. The host
  scatters the packed result into [Cout, Cin, kh, kw], zero at the hidden taps and at the centre
  pairs the colour rule hides.

Accumulation is in float32 (float64 for float64 inputs); float32 products use IEEE precision
rather than TF32, so results match the float32 reference. Index arithmetic is int64, which also
keeps Triton's interpreter from checking every int32 operation for overflow.
"""
from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl
from torch._prims_common import suggest_memory_format

from ._aot import AotSpec, triton_type
from ._host import cached_table, zeros

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# Launch settings per dtype, read by the launchers and AOT_SPECS alike, chosen so that no variant
# spills on sm_80 or sm_90 (ptxas -v). tl.dot needs every block dimension >= 16. float16 and
# bfloat16 products run on tensor cores; float32 ones in IEEE precision run as FMAs, with each
# thread holding rows of A and columns of B, hence the short K blocks; float64 ones use DMMA
# with a float64 accumulator (twice the registers of float32).
GATHER_BLOCKS = {  # (BLOCK_M pixels, BLOCK_N channels out, BLOCK_K channels in, num_warps)
    torch.float16: (64, 64, 32, 8),
    torch.bfloat16: (64, 64, 32, 8),
    torch.float32: (64, 64, 16, 8),
    torch.float64: (64, 32, 16, 8),
}
WEIGHT_BLOCKS = {  # (BLOCK_M pixels, BLOCK_CI, BLOCK_CO, num_warps)
    torch.float16: (32, 64, 64, 8),
    torch.bfloat16: (32, 64, 64, 8),
    torch.float32: (16, 32, 32, 4),
    torch.float64: (32, 32, 32, 4),
}
# On a GPU, grad-weight splits the pixels over more programs until there are about this many.
# The interpreter runs programs one after another, so there a split would only add work.
_TARGET_PROGRAMS = 512


@triton.jit
def _gather_conv_kernel(
    out_ptr,       # out [B, N, out_h, out_w] in x's dtype, NHWC (OUT_CL) or NCHW storage
    in_ptr,        # in [B, in_h, in_w, K] zero-bordered NHWC activations: P or Q
    w_ptr,         # in [T, K, N] packed weights of the visible taps, x's dtype
    bias_ptr,      # in [N] bias in the accumulator dtype (zeros for grad-input)
    taps_ptr,      # in [T] int64 element offset of each tap in `in`, from the pixel's base
    num_taps,      # T, visible taps (>= 1)
    num_pixels,    # M = B * region_h * region_w, the output pixels this launch computes
    region_h,      # rows of the computed region
    region_w,      # columns of the computed region
    in_h,          # rows of `in`
    in_w,          # columns of `in`
    in_row0,       # row of `in` at which region row 0 has its base
    in_col0,       # column of `in` at which region column 0 has its base
    out_h,         # rows of the output tensor
    out_w,         # columns of the output tensor
    out_row0,      # output row of region row 0
    out_col0,      # output column of region column 0
    k_channels,    # K, input channels
    n_channels,    # N, output channels
    OUT_CL: tl.constexpr,   # whether out is stored channels-last (NHWC) rather than NCHW
    BLOCK_M: tl.constexpr,  # pixels per program
    BLOCK_N: tl.constexpr,  # output channels per program
    BLOCK_K: tl.constexpr,  # input channels per tl.dot
):
    acc_ty = bias_ptr.dtype.element_ty
    offs_m = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = offs_m < num_pixels
    q = offs_m % region_w
    p = (offs_m // region_w) % region_h
    b = offs_m // (region_w * region_h)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < n_channels
    offs_k = tl.arange(0, BLOCK_K)
    base = ((b * in_h + p + in_row0) * in_w + q + in_col0) * k_channels
    a_ptrs = in_ptr + (base[:, None] + offs_k[None, :])
    w_ptrs = w_ptr + (offs_k[:, None] * n_channels + offs_n[None, :])
    acc = tl.zeros([BLOCK_M, BLOCK_N], acc_ty)
    for tap in range(0, num_taps):
        offset = tl.load(taps_ptr + tap)
        for k0 in range(0, k_channels, BLOCK_K):
            k_ok = offs_k < k_channels - k0
            a = tl.load(a_ptrs + (offset + k0), mask=m_ok[:, None] & k_ok[None, :], other=0.0)
            w = tl.load(w_ptrs + (tap * k_channels + k0) * n_channels,
                        mask=k_ok[:, None] & n_ok[None, :], other=0.0)
            acc = tl.dot(a, w, acc, input_precision="ieee")
    acc += tl.load(bias_ptr + offs_n, mask=n_ok, other=0.0)[None, :]
    orow = p + out_row0
    ocol = q + out_col0
    if OUT_CL:
        dst = ((b * out_h + orow) * out_w + ocol)[:, None] * n_channels + offs_n[None, :]
    else:
        dst = ((b[:, None] * n_channels + offs_n[None, :]) * out_h + orow[:, None]) * out_w \
            + ocol[:, None]
    tl.store(out_ptr + dst, acc.to(out_ptr.dtype.element_ty),
             mask=m_ok[:, None] & n_ok[None, :])


@triton.jit
def _grad_weight_kernel(
    partial_ptr,   # out [S, T, Cin, Cout] each split's sums in the accumulator dtype
    p_ptr,         # in [B, p_h, p_w, Cin] P: the window's receptive field of x, NHWC
    q_ptr,         # in [B, q_h, q_w, Cout] Q: grad_y, NHWC with a zero border
    taps_ptr,      # in [T] int64 element offset of each tap in P, from the pixel's base
    num_taps,      # T
    num_pixels,    # M = B * win_h * win_w
    win_h,         # rows of the output window
    win_w,         # columns of the output window
    p_h,           # rows of P
    p_w,           # columns of P
    q_h,           # rows of Q
    q_w,           # columns of Q
    q_row0,        # row of Q that holds grad_y row 0
    q_col0,        # column of Q that holds grad_y column 0
    in_channels,   # Cin
    out_channels,  # Cout
    BLOCK_M: tl.constexpr,   # pixels per tl.dot
    BLOCK_CI: tl.constexpr,  # input channels per program
    BLOCK_CO: tl.constexpr,  # output channels per program
):
    ci_blocks = tl.cdiv(in_channels, BLOCK_CI)
    tap = tl.program_id(0) // ci_blocks
    offs_ci = (tl.program_id(0) % ci_blocks) * BLOCK_CI + tl.arange(0, BLOCK_CI)
    offs_co = tl.program_id(1) * BLOCK_CO + tl.arange(0, BLOCK_CO)
    split = tl.program_id(2)
    splits = tl.num_programs(2)
    ci_ok = offs_ci < in_channels
    co_ok = offs_co < out_channels
    offset = tl.load(taps_ptr + tap)
    acc = tl.zeros([BLOCK_CI, BLOCK_CO], partial_ptr.dtype.element_ty)
    for m0 in range(split * BLOCK_M, num_pixels, splits * BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M).to(tl.int64)
        m_ok = offs_m < num_pixels
        oj = offs_m % win_w
        oi = (offs_m // win_w) % win_h
        b = offs_m // (win_w * win_h)
        x_base = ((b * p_h + oi) * p_w + oj) * in_channels + offset
        g_base = ((b * q_h + oi + q_row0) * q_w + oj + q_col0) * out_channels
        xt = tl.load(p_ptr + (x_base[None, :] + offs_ci[:, None]),
                     mask=ci_ok[:, None] & m_ok[None, :], other=0.0)
        g = tl.load(q_ptr + (g_base[:, None] + offs_co[None, :]),
                    mask=m_ok[:, None] & co_ok[None, :], other=0.0)
        acc = tl.dot(xt, g, acc, input_precision="ieee")
    row = (split * num_taps + tap).to(tl.int64) * in_channels + offs_ci
    tl.store(partial_ptr + (row[:, None] * out_channels + offs_co[None, :]), acc,
             mask=ci_ok[:, None] & co_ok[None, :])


# ----------------------------------------------------------------------------- host side

def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _device_guard(t: torch.Tensor):
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


@cached_table(maxsize=256)
def _visible_taps(cin, cout, kh, kw, mask_type, data_channels):
    """(taps, has_centre) of a layer shape: the visible taps (ty, tx) in raster order, the
    centre last when the colour rule applies to it, and whether it does for some channel pair."""
    cy, cx = (kh - 1) // 2, (kw - 1) // 2
    if mask_type == 2:
        # Mask V (the Gated PixelCNN's vertical stack): the centre row and the rows above, with
        # no colour rule: the centre is an ordinary tap.
        return tuple((ty, tx) for ty in range(cy + 1) for tx in range(kw)), False
    taps = [(ty, tx) for ty in range(cy) for tx in range(kw)]
    taps += [(cy, tx) for tx in range(cx)]
    has_centre = bool(_allowed(cin, cout, mask_type, data_channels).any())
    if has_centre:
        taps.append((cy, cx))
    return tuple(taps), has_centre


def _allowed(cin, cout, mask_type, data_channels) -> torch.Tensor:
    """[Cout, Cin] bool on the CPU: the centre tap carries input channel ci to output co."""
    group_in = torch.arange(cin) * data_channels // max(cin, 1)
    group_out = torch.arange(cout) * data_channels // max(cout, 1)
    if mask_type == 0:
        return group_in[None, :] < group_out[:, None]
    return group_in[None, :] <= group_out[:, None]


@cached_table()
def _centre_mask(layer, device, dtype) -> torch.Tensor:
    """[Cin, Cout] 0/1 of the centre tap's colour rule for ``layer`` = (cin, cout, kh, kw,
    mask_type, data_channels), in the packed weights' layout."""
    cin, cout, _, _, mask_type, data_channels = layer
    return _allowed(cin, cout, mask_type, data_channels).t().to(device=device, dtype=dtype)


@cached_table()
def _tap_offsets(layer, dilation, width, channels, sign, device) -> torch.Tensor:
    """[T] int64 element offsets sign * (ty * d * width + tx * d) * channels of the visible
    taps in an NHWC buffer ``width`` columns wide."""
    d = dilation
    taps, _ = _visible_taps(*layer)
    offsets = [sign * (ty * d * width + tx * d) * channels for ty, tx in taps]
    return torch.tensor(offsets, dtype=torch.int64).to(device)


@cached_table()
def _tap_index(layer, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The visible taps' rows and columns as two [T] int64 tensors, for indexing a weight."""
    taps, _ = _visible_taps(*layer)
    return (torch.tensor([t[0] for t in taps], dtype=torch.long, device=device),
            torch.tensor([t[1] for t in taps], dtype=torch.long, device=device))


class _Geometry:
    """Visible taps, colour rule, window and the P / Q layouts of one call, with the meaning
    of csrc/masked_conv_common.cpp and csrc/masked_conv.cpp. Only integer arithmetic runs per
    call; the taps and every device table come from the caches above."""

    def __init__(self, x, weight, mask_type, data_channels, dilation, window):
        if x.dim() != 4 or weight.dim() != 4 or x.shape[1] != weight.shape[1]:
            raise RuntimeError(f"genfast: masked_conv2d expects x [B, C, H, W] and weight "
                               f"[out, C, kh, kw], got {tuple(x.shape)} and {tuple(weight.shape)}")
        if mask_type not in (0, 1, 2) or dilation < 1:
            raise RuntimeError(f"genfast: bad mask_type {mask_type} or dilation {dilation}")
        self.batch, self.cin, self.height, self.width = x.shape
        self.cout, _, kh, kw = weight.shape
        d = self.dilation = dilation
        cy, cx = (kh - 1) // 2, (kw - 1) // 2
        if window:
            if len(window) != 4 or not (0 <= window[0] <= window[1] <= self.height
                                        and 0 <= window[2] <= window[3] <= self.width):
                raise RuntimeError(f"genfast: window {list(window)} is not inside the "
                                   f"{self.height}x{self.width} output")
            self.row0, self.row1, self.col0, self.col1 = (int(v) for v in window)
        else:
            self.row0, self.row1, self.col0, self.col1 = 0, self.height, 0, self.width
        self.win_h, self.win_w = self.row1 - self.row0, self.col1 - self.col0
        self.layer = (self.cin, self.cout, kh, kw, mask_type, data_channels)
        self.taps, self.has_centre = _visible_taps(*self.layer)
        # P covers image rows [row0 - cy*d, row1) and columns [col0 - cx*d, col1 + (kw-1-cx)*d):
        # tap (ty, tx) of window pixel (i, j) reads P(i + ty*d, j + tx*d).
        self.p_h, self.p_w = self.win_h + cy * d, self.win_w + (kw - 1) * d
        self.p_row0, self.p_col0 = self.row0 - cy * d, self.col0 - cx * d  # image coords of P(0, 0)
        # P's rows and columns that lie inside the image: [pr_lo, pr_hi) x [pc_lo, pc_hi).
        self.pr_lo, self.pr_hi = max(0, -self.p_row0), min(self.p_h, self.height - self.p_row0)
        self.pc_lo, self.pc_hi = max(0, -self.p_col0), min(self.p_w, self.width - self.p_col0)
        # Q holds grad_y(i, j) at Q(i + q_row0, j + q_col0), zeros around it, so that P position
        # (pr, pc) reads grad_y(pr - ty*d, pc - tx*d) through tap (ty, tx) without a bounds test.
        self.q_row0, self.q_col0 = cy * d, (kw - 1) * d
        self.q_h, self.q_w = self.win_h + 2 * self.q_row0, self.win_w + 2 * self.q_col0

    def tap_offsets(self, device, mirrored=False) -> torch.Tensor:
        """[T] int64 element offsets of the taps in P (forward) or, mirrored, in Q."""
        if mirrored:
            return _tap_offsets(self.layer, self.dilation, self.q_w, self.cout, -1, device)
        return _tap_offsets(self.layer, self.dilation, self.p_w, self.cin, 1, device)

    def tap_index(self, device):
        return _tap_index(self.layer, device)

    def centre_mask(self, device, dtype) -> torch.Tensor:
        return _centre_mask(self.layer, device, dtype)

    def packed_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """[T, Cin, Cout]: the visible taps' weights, the centre with its colour mask applied."""
        packed = weight[(slice(None), slice(None), *self.tap_index(weight.device))]
        packed = packed.permute(2, 1, 0).contiguous()
        if self.has_centre:
            packed[-1] *= self.centre_mask(weight.device, weight.dtype)
        return packed

    def pack_input(self, x: torch.Tensor) -> torch.Tensor:
        """P: [B, p_h, p_w, Cin], the window's receptive field of x with zeros outside the image."""
        p = x.new_zeros((self.batch, self.p_h, self.p_w, self.cin))
        if self.pr_hi > self.pr_lo and self.pc_hi > self.pc_lo:
            rows = slice(self.p_row0 + self.pr_lo, self.p_row0 + self.pr_hi)
            cols = slice(self.p_col0 + self.pc_lo, self.p_col0 + self.pc_hi)
            p[:, self.pr_lo:self.pr_hi, self.pc_lo:self.pc_hi] = \
                x[:, :, rows, cols].permute(0, 2, 3, 1)
        return p

    def pack_grad_output(self, grad_y: torch.Tensor) -> torch.Tensor:
        """Q: [B, q_h, q_w, Cout], grad_y with its zero border."""
        q = grad_y.new_zeros((self.batch, self.q_h, self.q_w, self.cout))
        q[:, self.q_row0:self.q_row0 + self.win_h, self.q_col0:self.q_col0 + self.win_w] = \
            grad_y.permute(0, 2, 3, 1)
        return q


def _launch_gather(out, src, packed, bias, taps, region, src_hw, src_origin, out_origin):
    """out[region] = bias + the gather convolution of the NHWC src with the packed weights."""
    block_m, block_n, block_k, warps = GATHER_BLOCKS[out.dtype]
    k_channels, n_channels = packed.shape[1], packed.shape[2]
    num_pixels = out.shape[0] * region[0] * region[1]
    grid = (triton.cdiv(num_pixels, block_m), triton.cdiv(n_channels, block_n))
    out_cl = not out.is_contiguous()  # freshly allocated: dense NCHW, else dense NHWC
    with _device_guard(out):
        _gather_conv_kernel[grid](
            out, src, packed, bias, taps, taps.shape[0], num_pixels, region[0], region[1],
            src_hw[0], src_hw[1], src_origin[0], src_origin[1], out.shape[2], out.shape[3],
            out_origin[0], out_origin[1], k_channels, n_channels,
            OUT_CL=out_cl, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
            num_warps=warps)


def masked_conv2d_forward(x, weight, bias, mask_type, data_channels, dilation, window):
    """y of genfast::masked_conv2d (schema in csrc/registration.cpp).

    x: [B, Cin, H, W]; weight: [Cout, Cin, kh, kw]; bias: [Cout] or None; mask_type 0 (A),
    1 (B) or 2 (V); window: [] or [row0, row1, col0, col1]. Returns [B, Cout, win_h, win_w] in x's
    suggested memory format.
    """
    g = _Geometry(x, weight, mask_type, data_channels, dilation, window)
    y = torch.empty((g.batch, g.cout, g.win_h, g.win_w), dtype=x.dtype, device=x.device,
                    memory_format=suggest_memory_format(x))
    if y.numel() == 0:
        return y
    if not g.taps or g.cin == 0:
        # Every tap hidden (a 1x1 mask A with one colour group): the output is the bias.
        y.copy_((bias if bias is not None else y.new_zeros(g.cout)).view(1, -1, 1, 1).expand_as(y))
        return y
    acc = _acc_dtype(x.dtype)
    bias_acc = bias.to(acc).contiguous() if bias is not None else zeros(g.cout, acc, x.device)
    _launch_gather(y, g.pack_input(x), g.packed_weight(weight), bias_acc,
                   g.tap_offsets(x.device), (g.win_h, g.win_w), (g.p_h, g.p_w), (0, 0), (0, 0))
    return y


def _grad_input(q, x, weight, g):
    fmt = suggest_memory_format(x)
    full = (g.row0, g.row1, g.col0, g.col1) == (0, g.height, 0, g.width)
    gx = (torch.empty_like if full else torch.zeros_like)(x, memory_format=fmt)
    rows, cols = g.pr_hi - g.pr_lo, g.pc_hi - g.pc_lo
    if gx.numel() == 0 or not g.taps or g.cout == 0 or g.win_h == 0 or g.win_w == 0 \
            or rows <= 0 or cols <= 0:
        return gx.zero_()
    packed_t = g.packed_weight(weight).transpose(1, 2).contiguous()  # [T, Cout, Cin]
    # The region is P's part inside the image; P position (pr, pc) has its base at
    # Q(pr + q_row0, pc + q_col0) and is image pixel (p_row0 + pr, p_col0 + pc).
    no_bias = zeros(g.cin, _acc_dtype(x.dtype), x.device)
    _launch_gather(gx, q, packed_t, no_bias, g.tap_offsets(x.device, mirrored=True),
                   (rows, cols), (g.q_h, g.q_w), (g.pr_lo + g.q_row0, g.pc_lo + g.q_col0),
                   (g.p_row0 + g.pr_lo, g.p_col0 + g.pc_lo))
    return gx


def _grad_weight(q, x, weight, g):
    acc = _acc_dtype(x.dtype)
    gw = torch.zeros(weight.shape, dtype=acc, device=weight.device)
    num_pixels = g.batch * g.win_h * g.win_w
    if num_pixels > 0 and g.taps and g.cin > 0 and g.cout > 0:
        block_m, block_ci, block_co, warps = WEIGHT_BLOCKS[x.dtype]
        num_taps = len(g.taps)
        ci_blocks, co_blocks = triton.cdiv(g.cin, block_ci), triton.cdiv(g.cout, block_co)
        base = num_taps * ci_blocks * co_blocks
        splits = max(1, min(triton.cdiv(num_pixels, block_m), _TARGET_PROGRAMS // base, 65535))
        if not x.is_cuda:
            splits = 1
        partial = torch.empty((splits, num_taps, g.cin, g.cout), dtype=acc, device=x.device)
        with _device_guard(x):
            _grad_weight_kernel[(num_taps * ci_blocks, co_blocks, splits)](
                partial, g.pack_input(x), q, g.tap_offsets(x.device), num_taps, num_pixels,
                g.win_h, g.win_w, g.p_h, g.p_w, g.q_h, g.q_w, g.q_row0, g.q_col0, g.cin, g.cout,
                BLOCK_M=block_m, BLOCK_CI=block_ci, BLOCK_CO=block_co, num_warps=warps)
        # Splits summed in a fixed order: the result does not depend on scheduling.
        packed = partial.sum(0) if splits > 1 else partial[0]  # [T, Cin, Cout]
        if g.has_centre:
            packed[-1] *= g.centre_mask(packed.device, acc)
        gw[(slice(None), slice(None), *g.tap_index(gw.device))] = packed.permute(2, 1, 0)
    return gw.to(weight.dtype)


def masked_conv2d_backward(grad_y, x, weight, mask_type, data_channels, dilation, window,
                           output_mask):
    """(grad_x, grad_weight, grad_bias) of genfast::masked_conv2d; an empty (0,) tensor for each
    gradient output_mask does not ask for. grad_x is in x's suggested memory format."""
    g = _Geometry(x, weight, mask_type, data_channels, dilation, window)
    if tuple(grad_y.shape) != (g.batch, g.cout, g.win_h, g.win_w):
        raise RuntimeError(f"genfast: grad_y must have the output's shape "
                           f"{[g.batch, g.cout, g.win_h, g.win_w]}, got {list(grad_y.shape)}")
    q = g.pack_grad_output(grad_y.to(x.dtype)) if output_mask[0] or output_mask[1] else None
    gx = _grad_input(q, x, weight, g) if output_mask[0] else x.new_empty(0)
    gw = _grad_weight(q, x, weight, g) if output_mask[1] else weight.new_empty(0)
    gb = (grad_y.sum((0, 2, 3), dtype=_acc_dtype(x.dtype)).to(x.dtype) if output_mask[2]
          else x.new_empty(0))
    return gx, gw, gb


# ----------------------------------------------------------------------------- AOT variants

def _aot_specs() -> list[AotSpec]:
    """Every (kernel, dtype, output layout) the launchers above run, with their launch settings.

    Triton's launcher also specializes on channel counts divisible by 16 (which lets it
    vectorize the channel-contiguous loads and stores), so each variant is listed both ways.
    """
    specs = []
    for dtype in _DTYPES:
        t, a = triton_type(dtype), triton_type(_acc_dtype(dtype))
        gather = {"out_ptr": t, "in_ptr": t, "w_ptr": t, "bias_ptr": a, "taps_ptr": "*i64"}
        gather.update({name: "i32" for name in (
            "num_taps", "num_pixels", "region_h", "region_w", "in_h", "in_w", "in_row0",
            "in_col0", "out_h", "out_w", "out_row0", "out_col0", "k_channels", "n_channels")})
        weight = {"partial_ptr": a, "p_ptr": t, "q_ptr": t, "taps_ptr": "*i64"}
        weight.update({name: "i32" for name in (
            "num_taps", "num_pixels", "win_h", "win_w", "p_h", "p_w", "q_h", "q_w", "q_row0",
            "q_col0", "in_channels", "out_channels")})
        bm, bn, bk, warps = GATHER_BLOCKS[dtype]
        wm, wci, wco, wwarps = WEIGHT_BLOCKS[dtype]
        gather_pointers = tuple(n for n, ty in gather.items() if ty.startswith("*"))
        weight_pointers = tuple(n for n, ty in weight.items() if ty.startswith("*"))
        for hint in ((), ("k_channels", "n_channels")):
            for out_cl in (False, True):
                specs.append(AotSpec(
                    _gather_conv_kernel, gather,
                    {"OUT_CL": out_cl, "BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk},
                    num_warps=warps, divisible_by_16=gather_pointers + hint,
                    tag=f"{t[1:]}-{'nhwc' if out_cl else 'nchw'}" + ("-c16" if hint else "")))
        for hint in ((), ("in_channels", "out_channels")):
            specs.append(AotSpec(
                _grad_weight_kernel, weight,
                {"BLOCK_M": wm, "BLOCK_CI": wci, "BLOCK_CO": wco}, num_warps=wwarps,
                divisible_by_16=weight_pointers + hint, tag=t[1:] + ("-c16" if hint else "")))
    return specs


AOT_SPECS = _aot_specs()
