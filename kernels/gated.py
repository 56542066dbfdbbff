"""Triton kernels of genfast::gated_activation: the Gated PixelCNN's gate tanh(a) * sigmoid(b),
(a, b) = x.chunk(2, dim) (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN
Decoders", eq. 2), with the semantics of the C++ CPU kernel (csrc/gated.cpp).

x is walked in its memory order (channels-last stays channels-last) as [outer, 2, inner]: row o
holds a_o then b_o, each ``inner`` contiguous elements, and y is [outer, inner]. A program owns a
[ROWS, COLS] tile of y's columns and loops over row blocks, so no element needs an index
division. COLS is picked per launch from a few widths so that narrow rows (channels-last
with few channels) do not leave most lanes idle.

tanh and sigmoid are built from exponentials of non-positive arguments, which never overflow:
t = exp(-2|a|) gives tanh(|a|) = 1 - 2t / (1 + t) and 1 - tanh^2 = 4t / (1 + t)^2; e = exp(-|b|)
gives sigmoid(b) = 1 / (1 + e) (b >= 0) or e / (1 + e), and sigmoid' = e / (1 + e)^2. For
|a| < 0.625, where 1 - 2t / (1 + t) cancels, float32 uses a + a^3 P(a^2) (the polynomial of
csrc/gated.cpp) and float64 an accurate expm1(-2|a|) from exp and log (Kahan's trick).
"""
from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl
from torch._prims_common import suggest_memory_format

from ._aot import AotSpec, triton_type

# Elements of y per tile, and the column widths a tile can have (ROWS = TILE // COLS).
TILE = 1024
COLS_CHOICES = (1024, 64, 16)
# 8 warps: 4 elements per thread. With 4 warps (8 each) the backward took up to 128 registers
# in float16 and about 200 in float64, too many for a memory-bound kernel's occupancy.
NUM_WARPS = 8
# Cap on the grid's row-block axis (CUDA allows 65535); larger inputs loop over row blocks.
_MAX_ROW_PROGRAMS = 65535
_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@triton.jit
def _tanh(a, F64: tl.constexpr):
    """tanh(a) and 1 - tanh(a)^2, in a's dtype (float32 or float64)."""
    abs_a = tl.abs(a)
    t = tl.exp(-2.0 * abs_a)
    r = 1.0 / (1.0 + t)
    sech2 = 4.0 * t * r * r
    if F64:
        # tanh(|a|) = -m / (2 + m) with m = expm1(-2|a|). For t < 1/2, m = t - 1 is exact
        # enough; closer to 1, (t - 1) * x / log(t) cancels the rounding of t.
        x = -2.0 * abs_a
        safe_t = tl.where((t < 0.5) | (t == 1.0), 0.75, t)  # keeps log() off 0 and 1
        kahan = (safe_t - 1.0) * x / tl.log(safe_t)
        m = tl.where(t < 0.5, t - 1.0, tl.where(t == 1.0, x, kahan))
        tanh_abs = -m / (2.0 + m)
    else:
        s = tl.minimum(abs_a, 0.625)  # the polynomial's range: no inf - inf where unused
        z = s * s
        p = -5.7049848004e-3 * z + 2.0639085375e-2
        p = p * z - 5.3739714545e-2
        p = p * z + 1.3331442192e-1
        p = p * z - 3.3333281942e-1
        tanh_abs = tl.where(abs_a < 0.625, s + s * z * p, 1.0 - 2.0 * t * r)
    # a < 0 is false for NaN, which tanh_abs already carries.
    return tl.where(a < 0.0, -tanh_abs, tanh_abs), sech2


@triton.jit
def _sigmoid(b):
    """sigmoid(b) and sigmoid(b) * (1 - sigmoid(b))."""
    e = tl.exp(-tl.abs(b))
    q = 1.0 / (1.0 + e)
    return tl.where(b >= 0.0, q, e * q), e * q * q


@triton.jit
def _tile_offsets(r0, cols, outer, inner, ROWS: tl.constexpr):
    """Offsets in x of a (rows r0 .. r0 + ROWS, columns cols), offsets in y, and the mask."""
    rows = tl.arange(0, ROWS).to(tl.int64) + r0  # int64 before any sum or product
    mask = (rows < outer)[:, None] & (cols < inner)[None, :]
    x_offs = rows[:, None] * inner * 2 + cols[None, :]
    y_offs = rows[:, None] * inner + cols[None, :]
    return x_offs, y_offs, mask


@triton.jit(do_not_specialize=["outer"])
def _forward_kernel(
    y_ptr,  # out [outer, inner] tanh(a) * sigmoid(b) in x's dtype
    x_ptr,  # in [outer, 2, inner]: row o is a_o, then b_o
    outer,  # rows
    inner,  # elements in each half of a row
    ROWS: tl.constexpr,  # rows per tile
    COLS: tl.constexpr,  # columns per tile
    F64: tl.constexpr,   # compute in float64 (x is float64) rather than float32
):
    cols = tl.program_id(0).to(tl.int64) * COLS + tl.arange(0, COLS)
    for r0 in range(tl.program_id(1) * ROWS, outer, tl.num_programs(1) * ROWS):
        x_offs, y_offs, mask = _tile_offsets(r0, cols, outer, inner, ROWS)
        a = tl.load(x_ptr + x_offs, mask=mask, other=0.0)
        b = tl.load(x_ptr + x_offs + inner, mask=mask, other=0.0)
        if not F64:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        tanh_a, _ = _tanh(a, F64)
        sig_b, _ = _sigmoid(b)
        tl.store(y_ptr + y_offs, (tanh_a * sig_b).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["outer"])
def _backward_kernel(
    grad_x_ptr,  # out [outer, 2, inner] dL/dx in x's dtype: dL/da, then dL/db, per row
    grad_y_ptr,  # in [outer, inner] dL/dy in x's dtype
    x_ptr,       # in [outer, 2, inner] the forward's input
    outer,       # rows
    inner,       # elements in each half of a row
    ROWS: tl.constexpr,  # rows per tile
    COLS: tl.constexpr,  # columns per tile
    F64: tl.constexpr,   # compute in float64 (x is float64) rather than float32
):
    cols = tl.program_id(0).to(tl.int64) * COLS + tl.arange(0, COLS)
    out_ty = grad_x_ptr.dtype.element_ty
    for r0 in range(tl.program_id(1) * ROWS, outer, tl.num_programs(1) * ROWS):
        x_offs, y_offs, mask = _tile_offsets(r0, cols, outer, inner, ROWS)
        a = tl.load(x_ptr + x_offs, mask=mask, other=0.0)
        b = tl.load(x_ptr + x_offs + inner, mask=mask, other=0.0)
        dy = tl.load(grad_y_ptr + y_offs, mask=mask, other=0.0)
        if not F64:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
            dy = dy.to(tl.float32)
        tanh_a, sech2_a = _tanh(a, F64)
        sig_b, dsig_b = _sigmoid(b)
        tl.store(grad_x_ptr + x_offs, (dy * sig_b * sech2_a).to(out_ty), mask=mask)
        tl.store(grad_x_ptr + x_offs + inner, (dy * tanh_a * dsig_b).to(out_ty), mask=mask)


# ----------------------------------------------------------------------------- launchers

def _memory_order(x: torch.Tensor) -> tuple[list[int], torch.memory_format]:
    """The permutation that puts x's dimensions in memory order, and x's memory format."""
    fmt = suggest_memory_format(x)
    order = list(range(x.dim()))
    if fmt != torch.contiguous_format:  # channels_last or channels_last_3d: N, spatial..., C
        order = [0, *range(2, x.dim()), 1]
    return order, fmt


def _tile(inner: int) -> tuple[int, int]:
    """(ROWS, COLS): the widest COLS that pads a row by at most an eighth, else the narrowest."""
    for cols in COLS_CHOICES:
        if triton.cdiv(inner, cols) * cols <= inner + inner // 8:
            return TILE // cols, cols
    return TILE // COLS_CHOICES[-1], COLS_CHOICES[-1]


def _check(x: torch.Tensor, dim: int) -> int:
    if x.dim() == 0 or not -x.dim() <= dim < x.dim():
        raise IndexError(f"genfast: dim {dim} is out of range for x of shape {tuple(x.shape)}")
    dim %= x.dim()
    if x.shape[dim] % 2:
        raise ValueError(f"genfast: gated_activation splits x in two along dim {dim}, so its "
                         f"size there must be even; x has shape {tuple(x.shape)}")
    if x.dtype not in _DTYPES:
        raise TypeError(f"genfast: x must be float16, bfloat16, float32 or float64, got {x.dtype}")
    return dim


def _rows(xp: torch.Tensor, pdim: int) -> tuple[int, int]:
    """(outer, inner) of x permuted to memory order, split along its dimension pdim."""
    outer, inner = 1, xp.shape[pdim] // 2
    for size in xp.shape[:pdim]:
        outer *= size
    for size in xp.shape[pdim + 1:]:
        inner *= size
    return outer, inner


def _grid(outer: int, inner: int, rows: int, cols: int) -> tuple[int, int]:
    return triton.cdiv(inner, cols), min(triton.cdiv(outer, rows), _MAX_ROW_PROGRAMS)


def _device_guard(t: torch.Tensor):
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def gated_activation_forward(x: torch.Tensor, dim: int) -> torch.Tensor:
    """y = tanh(a) * sigmoid(b), (a, b) = x.chunk(2, dim), in x's dtype and memory format."""
    dim = _check(x, dim)
    order, fmt = _memory_order(x)
    shape = list(x.shape)
    shape[dim] //= 2
    y = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=fmt)
    if y.numel() == 0:
        return y
    xp, yp = x.permute(order).contiguous(), y.permute(order)
    assert yp.is_contiguous()
    outer, inner = _rows(xp, order.index(dim))
    rows, cols = _tile(inner)
    with _device_guard(x):
        _forward_kernel[_grid(outer, inner, rows, cols)](
            yp, xp, outer, inner, ROWS=rows, COLS=cols, F64=x.dtype == torch.float64,
            num_warps=NUM_WARPS)
    return y


def gated_activation_backward(grad_y: torch.Tensor, x: torch.Tensor, dim: int) -> torch.Tensor:
    """dL/dx of gated_activation_forward, from dL/dy and x; shaped and laid out like x."""
    dim = _check(x, dim)
    order, fmt = _memory_order(x)
    shape = list(x.shape)
    shape[dim] //= 2
    if tuple(grad_y.shape) != tuple(shape):
        raise ValueError(f"genfast: grad_out must have the output's shape {tuple(shape)}, got "
                         f"{tuple(grad_y.shape)}")
    grad_x = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=fmt)
    if grad_x.numel() == 0:
        return grad_x
    xp, gxp = x.permute(order).contiguous(), grad_x.permute(order)
    gyp = grad_y.to(x.dtype).permute(order).contiguous()
    assert gxp.is_contiguous()
    outer, inner = _rows(xp, order.index(dim))
    rows, cols = _tile(inner)
    with _device_guard(x):
        _backward_kernel[_grid(outer, inner, rows, cols)](
            gxp, gyp, xp, outer, inner, ROWS=rows, COLS=cols, F64=x.dtype == torch.float64,
            num_warps=NUM_WARPS)
    return grad_x


# ----------------------------------------------------------------------------- AOT variants

def _aot_specs() -> list[AotSpec]:
    """Every (kernel, dtype, COLS) the launchers run. Triton's launcher also specializes on
    inner % 16 == 0 (which lets it vectorize the row accesses), so both are listed."""
    specs = []
    for dtype in _DTYPES:
        t = triton_type(dtype)
        sizes = {"outer": "i32", "inner": "i32"}
        forward = {"y_ptr": t, "x_ptr": t, **sizes}
        backward = {"grad_x_ptr": t, "grad_y_ptr": t, "x_ptr": t, **sizes}
        for fn, signature in ((_forward_kernel, forward), (_backward_kernel, backward)):
            pointers = tuple(name for name, ty in signature.items() if ty.startswith("*"))
            for cols in COLS_CHOICES:
                for hint in ((), ("inner",)):
                    specs.append(AotSpec(
                        fn, signature,
                        {"ROWS": TILE // cols, "COLS": cols, "F64": dtype == torch.float64},
                        num_warps=NUM_WARPS, divisible_by_16=pointers + hint,
                        tag=f"{t[1:]}-cols{cols}" + ("-inner16" if hint else "")))
    return specs


AOT_SPECS = _aot_specs()
