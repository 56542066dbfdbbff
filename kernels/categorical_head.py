"""Triton kernel of genfast::categorical_head_nll: the last 1x1 mask-B layer of a categorical
output head, the log-softmax over the levels and the NLL of the images, with each image's
gradients computed in the same pass (genfast/ops/categorical_head.py has the maths; the C++ CPU
kernel csrc/categorical_head.cpp has the same semantics).

A program owns BLOCK_P pixels of one image. For each colour c it walks the levels in chunks of
BLOCK_L <= 64, forming each chunk's logits tile [BLOCK_P, BLOCK_L] = X [BLOCK_P, Cin] @ W_c^T as
a sum of outer products over the input channels (the hidden inputs of mask B read as zeros).
Pass 1 keeps per pixel the running max and sum of exponentials (an online log-sum-exp) and the
target's logit, which give the NLL. Pass 2 forms G = softmax - onehot chunk by chunk and pushes
it back one input channel at a time: grad_features += G W_c (its own pixels, no race),
grad_weight[b] += G^T X and grad_bias[b] += sum G with atomic adds (the pixel blocks of an
image share them). With more than one chunk, pass 2 recomputes each chunk's logits: holding a
[BLOCK_P, 256] tile whole spills registers, so the GEMM is done twice instead. With one chunk
(at most 64 levels) pass 2 reuses pass 1's tile. No tl.dot: float32 wants IEEE products, which
Triton computes with FMAs anyway, and its FMA dot keeps a whole K slice of both operands in each
thread's registers, which spilled for these tiles (float64 gives up DMMA for the same reason).

Grid: (B, ceil(H * W / BLOCK_P)): 16 x 13 = 208 programs at the benchmark shape (batch 16,
28x28, BLOCK_P = 64), of 8 warps for 64 or more levels (2 for 16, 4 for 32), over 132 SMs on
an H100.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._aot import AotSpec, triton_type

MAX_LEVELS = 256  # levels are padded to the next power of two, walked in chunks of BLOCK_L
MAX_CHUNK = 64    # largest BLOCK_L: wider logits tiles spill registers
_PADDED_LEVELS = tuple(2**i for i in range(4, 9))  # 16 ... 256


def chunk(padded_levels: int) -> tuple[int, int]:
    """(BLOCK_L, CHUNKS): the levels' chunk width and how many chunks cover them."""
    block_l = min(MAX_CHUNK, padded_levels)
    return block_l, padded_levels // block_l


def block_p(block_l: int) -> int:
    """Pixels per program: a [BLOCK_P, BLOCK_L] tile of at most 4096 elements (64 pixels for any
    chunk width; num_warps spreads the tile)."""
    return max(16, min(64, 4096 // block_l))


def num_warps(block_l: int) -> int:
    """Warps per program: a thread holds at most 16 elements of the [BLOCK_P, BLOCK_L] tile, few
    enough (with the tiles derived from it) that ptxas does not spill (tests/test_triton_aot.py)."""
    return block_p(block_l) * block_l // (16 * 32)


@triton.jit
def _logits(x_base, w_ptr, b_ptr, rows, l_ok, offs_p, p_ok, c, cin, hw, colours, interleaved,
            has_bias, BLOCK_P: tl.constexpr, BLOCK_L: tl.constexpr, F64: tl.constexpr):
    """The logits tile [BLOCK_P, BLOCK_L] of colour c at output rows `rows`, -inf past the
    levels: a sum of outer products, one input channel at a time. (tl.dot's operand layouts
    hold a whole K slice of both operands per thread and spill.)"""
    if F64:
        z = tl.zeros([BLOCK_P, BLOCK_L], dtype=tl.float64)
    else:
        z = tl.zeros([BLOCK_P, BLOCK_L], dtype=tl.float32)
    for k in range(0, cin):
        group = tl.where(interleaved != 0, k % colours, (k * colours) // cin)
        x = tl.load(x_base + k * hw + offs_p, mask=p_ok, other=0.0)
        # mask B: colour c sees input groups <= c
        w = tl.load(w_ptr + rows * cin + k, mask=l_ok & (group <= c), other=0.0)
        z += x[:, None] * w[None, :]
    if has_bias != 0:
        z += tl.load(b_ptr + rows, mask=l_ok, other=0.0)[None, :]
    return tl.where(l_ok[None, :], z, -float("inf"))


@triton.jit
def _push_grad(g, x_base, gx_base, gw_base, gb_base, w_ptr, rows, l_ok, offs_p, p_ok, c, cin,
               hw, colours, interleaved, want_x, want_w, want_b):
    """Adds the chunk G [BLOCK_P, BLOCK_L] (zero off the pixels and levels) to the gradients,
    one input channel at a time, as row and column sums of the G tile (register-light, unlike
    tl.dot with a reduction over the levels or pixels)."""
    if want_b != 0:
        tl.atomic_add(gb_base + rows, tl.sum(g, 0), mask=l_ok)
    if want_x + want_w != 0:
        for k in range(0, cin):
            group = tl.where(interleaved != 0, k % colours, (k * colours) // cin)
            k_ok = group <= c
            if k_ok:  # mask B: inputs colour c does not see get no gradient from it
                if want_x != 0:
                    w = tl.load(w_ptr + rows * cin + k, mask=l_ok, other=0.0)
                    # Read-modify-write: every chunk and colour of these pixels adds to the
                    # same row, and this program alone owns it.
                    ptrs = gx_base + k * hw + offs_p
                    gx = tl.sum(g * w[None, :], 1)
                    tl.store(ptrs, tl.load(ptrs, mask=p_ok, other=0.0) + gx, mask=p_ok)
                if want_w != 0:
                    x = tl.load(x_base + k * hw + offs_p, mask=p_ok, other=0.0)
                    tl.atomic_add(gw_base + rows * cin + k, tl.sum(g * x[:, None], 0),
                                  mask=l_ok)


@triton.jit
def _head_kernel(
    nll_part_ptr,  # [B, blocks, C]: each program's NLL sum per colour, summed by the launcher
    grad_x_ptr,    # [B, Cin, HW] zero-filled: the image's NLL gradient w.r.t. the features
    grad_w_ptr,    # [B, C * L, Cin] zero-filled: per image, summed over pixel blocks
    grad_b_ptr,    # [B, C * L] zero-filled: per image
    x_ptr,         # features [B, Cin, HW], contiguous
    w_ptr,         # weight [C * L, Cin], contiguous
    b_ptr,         # bias [C * L] (read only when has_bias)
    img_ptr,       # images, int64 [B, C, HW]
    cin, hw, levels, colours,  # sizes
    blocks,        # pixel blocks per image (the grid's second axis)
    interleaved,   # 1: colour c's logit l is output l * C + c; 0: c * L + l
    has_bias,      # 1 when bias is given
    want_x, want_w, want_b,  # 1 for each gradient to compute
    BLOCK_P: tl.constexpr,  # pixels per program
    BLOCK_L: tl.constexpr,  # levels per chunk, a power of two in [16, 64]
    CHUNKS: tl.constexpr,   # chunks: CHUNKS * BLOCK_L >= levels
    F64: tl.constexpr,      # float64 inputs (else float32)
):
    image = tl.program_id(0)
    blk = tl.program_id(1)
    offs_p = blk * BLOCK_P + tl.arange(0, BLOCK_P)
    p_ok = offs_p < hw
    outputs = colours * levels
    x_base = x_ptr + image.to(tl.int64) * cin * hw
    gx_base = grad_x_ptr + image.to(tl.int64) * cin * hw
    gw_base = grad_w_ptr + image.to(tl.int64) * outputs * cin
    gb_base = grad_b_ptr + image.to(tl.int64) * outputs
    for c in range(colours):
        target = tl.load(img_ptr + (image.to(tl.int64) * colours + c) * hw + offs_p, mask=p_ok,
                         other=0)
        if CHUNKS == 1:
            offs_l = tl.arange(0, BLOCK_L)
            l_ok = offs_l < levels
            rows = tl.where(interleaved != 0, offs_l * colours + c, c * levels + offs_l)
            z = _logits(x_base, w_ptr, b_ptr, rows, l_ok, offs_p, p_ok, c, cin, hw, colours,
                        interleaved, has_bias, BLOCK_P, BLOCK_L, F64)
            m = tl.max(z, 1)
            s = tl.sum(tl.exp(z - m[:, None]), 1)
            picked = tl.sum(tl.where(offs_l[None, :] == target[:, None], z, 0.0), 1)
        else:
            # Online log-sum-exp: every chunk has a level below `levels`, so m is finite after
            # the first chunk and the -inf start only scales s = 0.
            m = tl.full([BLOCK_P], -float("inf"), dtype=tl.float64 if F64 else tl.float32)
            s = tl.zeros([BLOCK_P], dtype=tl.float64 if F64 else tl.float32)
            picked = tl.zeros([BLOCK_P], dtype=tl.float64 if F64 else tl.float32)
            for l0 in range(0, CHUNKS * BLOCK_L, BLOCK_L):
                offs_l = l0 + tl.arange(0, BLOCK_L)
                l_ok = offs_l < levels
                rows = tl.where(interleaved != 0, offs_l * colours + c, c * levels + offs_l)
                z = _logits(x_base, w_ptr, b_ptr, rows, l_ok, offs_p, p_ok, c, cin, hw,
                            colours, interleaved, has_bias, BLOCK_P, BLOCK_L, F64)
                m_new = tl.maximum(m, tl.max(z, 1))
                s = s * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new[:, None]), 1)
                picked += tl.sum(tl.where(offs_l[None, :] == target[:, None], z, 0.0), 1)
                m = m_new
        nll = tl.where(p_ok, m + tl.log(s) - picked, 0.0)
        tl.store(nll_part_ptr + (image * blocks + blk) * colours + c, tl.sum(nll, 0))
        if want_x + want_w + want_b != 0:
            for l0 in range(0, CHUNKS * BLOCK_L, BLOCK_L):
                offs_l = l0 + tl.arange(0, BLOCK_L)
                l_ok = offs_l < levels
                rows = tl.where(interleaved != 0, offs_l * colours + c, c * levels + offs_l)
                if CHUNKS > 1:
                    z = _logits(x_base, w_ptr, b_ptr, rows, l_ok, offs_p, p_ok, c, cin, hw,
                                colours, interleaved, has_bias, BLOCK_P, BLOCK_L, F64)
                g = tl.exp(z - m[:, None]) / s[:, None]
                g -= tl.where(offs_l[None, :] == target[:, None], 1.0, 0.0)
                g = tl.where(p_ok[:, None] & l_ok[None, :], g, 0.0)
                _push_grad(g, x_base, gx_base, gw_base, gb_base, w_ptr, rows, l_ok, offs_p, p_ok,
                           c, cin, hw, colours, interleaved, want_x, want_w, want_b)


def categorical_head_nll(features, weight, bias, images, levels, interleaved, grad_mask):
    """The op's Triton implementation: (nll [B], grad_features, grad_weight, grad_bias), the
    gradients per image and in float32 (float64 for float64 inputs), empty where unasked."""
    if levels > MAX_LEVELS:
        raise ValueError(f"genfast: the triton categorical head takes at most {MAX_LEVELS} "
                         f"levels, got {levels}")
    acc = torch.float64 if features.dtype == torch.float64 else torch.float32
    batch, cin, h, w = features.shape
    colours, hw, outputs = images.shape[1], h * w, weight.shape[0]
    x = features.to(acc).contiguous()
    wt = weight.to(acc).contiguous()
    bs = bias.to(acc).contiguous() if bias is not None else wt
    img = images.contiguous()
    want = [bool(grad_mask[0]), bool(grad_mask[1]), bool(grad_mask[2]) and bias is not None]
    new = features.new_zeros
    gx = new(features.shape, dtype=acc) if want[0] else new(0, dtype=acc)
    gw = new((batch, outputs, cin), dtype=acc) if want[1] else new(0, dtype=acc)
    gb = new((batch, outputs), dtype=acc) if want[2] else new(0, dtype=acc)
    block_l, chunks = chunk(max(16, triton.next_power_of_2(levels)))
    bp = block_p(block_l)
    blocks = triton.cdiv(hw, bp)
    parts = new((batch, blocks, colours), dtype=acc)
    if batch and hw:
        _head_kernel[(batch, blocks)](
            parts, gx, gw, gb, x, wt, bs, img, cin, hw, levels, colours, blocks,
            int(interleaved), int(bias is not None), *map(int, want),
            BLOCK_P=bp, BLOCK_L=block_l, CHUNKS=chunks,
            F64=acc == torch.float64, num_warps=num_warps(block_l))
    nll = parts.sum((1, 2)).to(features.dtype)
    return nll, gx, gw, gb


# ----------------------------------------------------------------------------- AOT variants

def _aot_specs() -> list[AotSpec]:
    """Every (dtype, padded levels) the launcher runs; the flags are runtime arguments."""
    specs = []
    for dtype in (torch.float32, torch.float64):
        t = triton_type(dtype)
        signature = {"nll_part_ptr": t, "grad_x_ptr": t, "grad_w_ptr": t, "grad_b_ptr": t,
                     "x_ptr": t, "w_ptr": t, "b_ptr": t, "img_ptr": triton_type(torch.int64),
                     **{name: "i32" for name in ("cin", "hw", "levels", "colours", "blocks",
                                                 "interleaved", "has_bias", "want_x",
                                                 "want_w", "want_b")}}
        pointers = tuple(name for name in signature if name.endswith("_ptr"))
        for padded in _PADDED_LEVELS:
            block_l, chunks = chunk(padded)
            specs.append(AotSpec(
                _head_kernel, signature,
                {"BLOCK_P": block_p(block_l), "BLOCK_L": block_l,
                 "CHUNKS": chunks, "F64": dtype == torch.float64},
                num_warps=num_warps(block_l), divisible_by_16=pointers,
                tag=f"{t[1:]}-l{padded}"))
    return specs


AOT_SPECS = _aot_specs()
