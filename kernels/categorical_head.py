"""Triton kernel of genfast::categorical_head_nll: the last 1x1 mask-B layer of a categorical
output head, the log-softmax over the levels and the NLL of the images, with each image's
gradients computed in the same pass (genfast/ops/categorical_head.py has the maths; the C++ CPU
kernel csrc/categorical_head.cpp has the same semantics).

A program owns BLOCK_P pixels of one image. For each colour c it forms the logits tile
[BLOCK_P, BLOCK_L] = X [BLOCK_P, Cin] @ W_c^T (tl.dot over BLOCK_K input channels at a time,
the hidden inputs of mask B loaded as zeros), its log-sum-exp and the NLL of the targets, then
G = softmax - onehot, and pushes G back: grad_features += G W_c (its own pixels, no race),
grad_weight[b] += G^T X and grad_bias[b] += sum G with atomic adds (the pixel blocks of an
image share them). The logits exist only as that tile.

Grid: (B, ceil(H * W / BLOCK_P)): 16 x 13 = 208 programs at the benchmark shape (batch 16,
28x28, BLOCK_P = 64 for up to 64 levels, 16 for 256), over 132 SMs on an H100.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._aot import AotSpec, triton_type

MAX_LEVELS = 256  # BLOCK_L is the next power of two of the levels, a register tile
BLOCK_K = 16
_BLOCK_L_CHOICES = tuple(2**i for i in range(4, 9))  # 16 ... 256


def block_p(block_l: int) -> int:
    """Pixels per program: a [BLOCK_P, BLOCK_L] float tile of at most 4096 elements."""
    return max(16, min(64, 4096 // block_l))


def num_warps(block_l: int) -> int:
    """Warps per program, more for wider tiles: a thread holds a few tile elements, so that
    ptxas does not spill (tests/test_triton_aot.py)."""
    return 4 if block_l <= 64 else 16


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
    BLOCK_K: tl.constexpr,  # input channels per tl.dot
    BLOCK_L: tl.constexpr,  # levels, padded to a power of two >= 16
    F64: tl.constexpr,      # float64 inputs (else float32)
):
    image = tl.program_id(0)
    blk = tl.program_id(1)
    offs_p = blk * BLOCK_P + tl.arange(0, BLOCK_P)
    p_ok = offs_p < hw
    offs_l = tl.arange(0, BLOCK_L)
    l_ok = offs_l < levels
    offs_k = tl.arange(0, BLOCK_K)
    outputs = colours * levels
    x_base = x_ptr + image.to(tl.int64) * cin * hw
    gx_base = grad_x_ptr + image.to(tl.int64) * cin * hw
    gw_base = grad_w_ptr + image.to(tl.int64) * outputs * cin
    for c in range(colours):
        rows = tl.where(interleaved != 0, offs_l * colours + c, c * levels + offs_l)
        if F64:
            z = tl.zeros([BLOCK_P, BLOCK_L], dtype=tl.float64)
        else:
            z = tl.zeros([BLOCK_P, BLOCK_L], dtype=tl.float32)
        for k0 in range(0, cin, BLOCK_K):
            k = k0 + offs_k
            group = tl.where(interleaved != 0, k % colours, (k * colours) // cin)
            k_ok = (k < cin) & (group <= c)  # mask B: colour c sees input groups <= c
            x = tl.load(x_base + k[None, :] * hw + offs_p[:, None],
                        mask=p_ok[:, None] & (k < cin)[None, :], other=0.0)
            w = tl.load(w_ptr + rows[None, :] * cin + k[:, None],
                        mask=k_ok[:, None] & l_ok[None, :], other=0.0)
            if F64:
                z += tl.dot(x, w)
            else:
                z += tl.dot(x, w, input_precision="ieee")
        if has_bias != 0:
            z += tl.load(b_ptr + rows, mask=l_ok, other=0.0)[None, :]
        z = tl.where(l_ok[None, :], z, -float("inf"))
        m = tl.max(z, 1)
        e = tl.exp(z - m[:, None])
        s = tl.sum(e, 1)
        target = tl.load(img_ptr + (image.to(tl.int64) * colours + c) * hw + offs_p, mask=p_ok,
                         other=0)
        hit = offs_l[None, :] == target[:, None]
        picked = tl.sum(tl.where(hit, z, 0.0), 1)
        nll = tl.where(p_ok, m + tl.log(s) - picked, 0.0)
        tl.store(nll_part_ptr + (image * blocks + blk) * colours + c, tl.sum(nll, 0))
        if want_x + want_w + want_b != 0:
            g = e / s[:, None] - tl.where(hit, 1.0, 0.0)
            g = tl.where(p_ok[:, None] & l_ok[None, :], g, 0.0)
            if want_b != 0:
                tl.atomic_add(grad_b_ptr + image.to(tl.int64) * outputs + rows, tl.sum(g, 0),
                              mask=l_ok)
            for k0 in range(0, cin, BLOCK_K):
                k = k0 + offs_k
                group = tl.where(interleaved != 0, k % colours, (k * colours) // cin)
                k_ok = (k < cin) & (group <= c)
                if want_x != 0:
                    w = tl.load(w_ptr + rows[None, :] * cin + k[:, None],
                                mask=k_ok[:, None] & l_ok[None, :], other=0.0)
                    if F64:
                        gx = tl.dot(g, tl.trans(w))
                    else:
                        gx = tl.dot(g, tl.trans(w), input_precision="ieee")
                    ptrs = gx_base + k[None, :] * hw + offs_p[:, None]
                    ok = p_ok[:, None] & (k < cin)[None, :]
                    tl.store(ptrs, tl.load(ptrs, mask=ok, other=0.0) + gx, mask=ok)
                if want_w != 0:
                    x = tl.load(x_base + k[None, :] * hw + offs_p[:, None],
                                mask=p_ok[:, None] & (k < cin)[None, :], other=0.0)
                    if F64:
                        gw = tl.dot(tl.trans(g), x)
                    else:
                        gw = tl.dot(tl.trans(g), x, input_precision="ieee")
                    tl.atomic_add(gw_base + rows[:, None] * cin + k[None, :], gw,
                                  mask=l_ok[:, None] & k_ok[None, :])


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
    block_l = max(16, triton.next_power_of_2(levels))
    bp = block_p(block_l)
    blocks = triton.cdiv(hw, bp)
    parts = new((batch, blocks, colours), dtype=acc)
    if batch and hw:
        _head_kernel[(batch, blocks)](
            parts, gx, gw, gb, x, wt, bs, img, cin, hw, levels, colours, blocks,
            int(interleaved), int(bias is not None), *map(int, want),
            BLOCK_P=bp, BLOCK_K=BLOCK_K, BLOCK_L=block_l, F64=acc == torch.float64,
            num_warps=num_warps(block_l))
    nll = parts.sum((1, 2)).to(features.dtype)
    return nll, gx, gw, gb


# ----------------------------------------------------------------------------- AOT variants

def _aot_specs() -> list[AotSpec]:
    """Every (dtype, BLOCK_L) the launcher runs; the flags are runtime arguments."""
    specs = []
    for dtype in (torch.float32, torch.float64):
        t = triton_type(dtype)
        signature = {"nll_part_ptr": t, "grad_x_ptr": t, "grad_w_ptr": t, "grad_b_ptr": t,
                     "x_ptr": t, "w_ptr": t, "b_ptr": t, "img_ptr": triton_type(torch.int64),
                     **{name: "i32" for name in ("cin", "hw", "levels", "colours", "blocks",
                                                 "interleaved", "has_bias", "want_x",
                                                 "want_w", "want_b")}}
        pointers = tuple(name for name in signature if name.endswith("_ptr"))
        for block_l in _BLOCK_L_CHOICES:
            specs.append(AotSpec(
                _head_kernel, signature,
                {"BLOCK_P": block_p(block_l), "BLOCK_K": BLOCK_K, "BLOCK_L": block_l,
                 "F64": dtype == torch.float64},
                num_warps=num_warps(block_l), divisible_by_16=pointers,
                tag=f"{t[1:]}-l{block_l}"))
    return specs


AOT_SPECS = _aot_specs()
