"""Triton kernels of genfast::gaussian_sample_kl: reparameterized sampling fused with the KL.

z = mu + exp(logvar / 2) * eps (Kingma & Welling 2014, "Auto-Encoding Variational Bayes",
eq. 10) and KL(N(mu, exp(logvar)) || N(0, I)) = 0.5 * (mu^2 + exp(logvar) - 1 - logvar)
(appendix B), with the semantics of the C++ CPU kernel (csrc/reparam.cpp).

eps comes from genfast's Philox stream (genfast/ops/philox.py): stream element
e = s * numel + i takes output e % 4 of Philox4x32-10 with counter offset + e // 4 and the
64-bit key. That is the layout of ``tl.randn4x(key, counter)``: it splits the int64 key into
its low and high words as the Philox key, and the int64 counter into words c0 (low) and c1
(high), with c2 = c3 = 0; int64 addition wraps, which is the uint64 arithmetic of the spec.
key and offset arrive as the int64 bit patterns of the uint64s (Triton types a small one as
i32; sign extension keeps the same bit pattern).

Each program owns a tile of BLOCK latent elements, viewed as [BLOCK // 4, 4], and loops over
samples, so mu, logvar and exp(logvar / 2) are loaded and computed once per tile. When a
tile's first stream element is a multiple of 4, row r of the tile is exactly philox block
first // 4 + r (NOISE_PHILOX). Otherwise (numel % 4 != 0 with several samples) each row
straddles two blocks, and both are computed (NOISE_PHILOX_ANY). The backward regenerates eps
from the seed rather than storing it.
"""
from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

from ._aot import AotSpec, triton_type

# Latent elements per program, a power of two (and so a multiple of a philox block's 4), and
# warps per program: one 4-element row per thread, which keeps the registers live around the
# philox rounds and the sin/cos slow path low enough that ptxas does not spill (with 4 warps it
# did). The launchers and AOT_SPECS both read these.
BLOCK = 1024
NUM_WARPS = 8
# Where eps comes from; a constexpr, so each kernel compiles only the path it runs.
NOISE_EPS, NOISE_PHILOX, NOISE_PHILOX_ANY = 0, 1, 2
# The forward splits the samples over more programs until there are about this many, so a
# small latent with many samples still fills the GPU.
_TARGET_PROGRAMS = 512

KL_NONE, KL_ELEMENTWISE, KL_SUM = 0, 1, 2
_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@triton.jit
def _stream_normals(key, offset, first, rows, lanes, NOISE: tl.constexpr):
    """float32 normals of stream elements first + 4 * rows + lanes, as a [rows, 4] tile."""
    counter = offset + first // 4 + rows
    if NOISE == 1:
        # first % 4 == 0: row r is the whole philox block first // 4 + r, in lane order.
        n0, n1, n2, n3 = tl.randn4x(key, counter)
        normals = tl.where(lanes == 0, n0[:, None],
                           tl.where(lanes == 1, n1[:, None],
                                    tl.where(lanes == 2, n2[:, None], n3[:, None])))
    else:
        # Element (r, j) is output slot = first % 4 + j of block first // 4 + r, or output
        # slot - 4 of the next block when slot > 3. Pick the two words of its Box-Muller pair,
        # then transform: cos for even outputs, sin for odd ones, as tl.randn4x does.
        a0, a1, a2, a3 = tl.randint4x(key, counter)
        b0, b1, b2, b3 = tl.randint4x(key, counter + 1)
        slot = lanes + (first % 4).to(tl.int32)
        next_block = slot >= 4
        lane = tl.where(next_block, slot - 4, slot)
        first_pair = lane < 2
        w0 = tl.where(next_block, b0[:, None], a0[:, None])
        w1 = tl.where(next_block, b1[:, None], a1[:, None])
        w2 = tl.where(next_block, b2[:, None], a2[:, None])
        w3 = tl.where(next_block, b3[:, None], a3[:, None])
        u1 = tl.uint_to_uniform_float(tl.where(first_pair, w0, w2))
        u2 = tl.uint_to_uniform_float(tl.where(first_pair, w1, w3))
        cos_part, sin_part = tl.pair_uniform_to_normal(u1, u2)
        normals = tl.where(lane % 2 == 0, cos_part, sin_part)
    return normals


@triton.jit(do_not_specialize=["key", "offset", "num_samples", "kl_mode"])
def _forward_kernel(
    z_ptr,        # out [S, numel] samples in mu's dtype; untouched when num_samples == 0
    kl_ptr,       # out [numel] elementwise KL in the compute dtype (kl_mode 1 only)
    partial_ptr,  # out [tiles] each tile's KL sum in the compute dtype (kl_mode 2 only)
    mu_ptr,       # in [numel] means
    logvar_ptr,   # in [numel] log-variances
    eps_ptr,      # in [S, numel] the given noise (NOISE == 0 only)
    key,          # philox key: the uint64 seed's bit pattern as an int64
    offset,       # philox counter of stream element 0, an int64 bit pattern
    numel,        # elements of mu
    num_samples,  # samples to draw; 0 computes only the KL
    kl_mode,      # 0 none, 1 elementwise, 2 per-tile partial sums
    BLOCK: tl.constexpr,  # latent elements per tile, a multiple of 4
    NOISE: tl.constexpr,  # NOISE_EPS, NOISE_PHILOX or NOISE_PHILOX_ANY
):
    tile = tl.program_id(0)
    split = tl.program_id(1)  # this program draws samples split, split + splits, ...
    splits = tl.num_programs(1)
    tile_start = tile.to(tl.int64) * BLOCK
    rows = tl.arange(0, BLOCK // 4)
    lanes = tl.arange(0, 4)[None, :]
    local = rows[:, None] * 4 + lanes
    mask = local < numel - tile_start
    acc_ty = kl_ptr.dtype.element_ty  # the compute dtype
    mu = tl.load(mu_ptr + tile_start + local, mask=mask, other=0.0).to(acc_ty)
    logvar = tl.load(logvar_ptr + tile_start + local, mask=mask, other=0.0).to(acc_ty)
    std = tl.exp(0.5 * logvar)
    if split == 0:
        if kl_mode != 0:
            kl = 0.5 * (mu * mu + std * std - 1.0 - logvar)
            if kl_mode == 1:
                tl.store(kl_ptr + tile_start + local, kl, mask=mask)
            else:
                tl.store(partial_ptr + tile, tl.sum(tl.where(mask, kl, 0.0)))
    for s in range(split, num_samples, splits):
        first = tl.cast(s, tl.int64) * numel + tile_start  # stream index of the tile's element 0
        if NOISE == 0:
            noise = tl.load(eps_ptr + first + local, mask=mask, other=0.0).to(acc_ty)
        else:
            noise = _stream_normals(key, offset, first, rows, lanes, NOISE).to(acc_ty)
        z = mu + std * noise
        tl.store(z_ptr + first + local, z.to(z_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["key", "offset", "num_samples", "kl_mode"])
def _backward_kernel(
    grad_mu_ptr,      # out [numel] dL/dmu in mu's dtype
    grad_logvar_ptr,  # out [numel] dL/dlogvar in mu's dtype
    grad_z_ptr,       # in [S, numel] dL/dz in mu's dtype (num_samples > 0 only)
    grad_kl_ptr,      # in dL/dKL in the compute dtype: [numel] (kl_mode 1) or [1] (kl_mode 2)
    mu_ptr,           # in [numel] means
    logvar_ptr,       # in [numel] log-variances
    eps_ptr,          # in [S, numel] the forward's given noise (NOISE == 0 only)
    key,              # philox key, as in the forward
    offset,           # philox counter of stream element 0, as in the forward
    numel,            # elements of mu
    num_samples,      # samples z holds; 0 when z was not computed
    kl_mode,          # 0 none, 1 elementwise, 2 summed
    BLOCK: tl.constexpr,  # latent elements per tile, a multiple of 4
    NOISE: tl.constexpr,  # NOISE_EPS, NOISE_PHILOX or NOISE_PHILOX_ANY, as in the forward
):
    tile = tl.program_id(0)
    tile_start = tile.to(tl.int64) * BLOCK
    rows = tl.arange(0, BLOCK // 4)
    lanes = tl.arange(0, 4)[None, :]
    local = rows[:, None] * 4 + lanes
    mask = local < numel - tile_start
    # All backward needs from the samples: sum_s dL/dz_s and sum_s dL/dz_s * eps_s. mu and
    # logvar are loaded after this loop, so they hold no registers while philox runs.
    acc_ty = grad_kl_ptr.dtype.element_ty  # the compute dtype
    sum_g = tl.zeros([BLOCK // 4, 4], acc_ty)
    sum_g_eps = tl.zeros([BLOCK // 4, 4], acc_ty)
    for s in range(0, num_samples):
        first = tl.cast(s, tl.int64) * numel + tile_start
        grad_z = tl.load(grad_z_ptr + first + local, mask=mask, other=0.0).to(acc_ty)
        if NOISE == 0:
            noise = tl.load(eps_ptr + first + local, mask=mask, other=0.0).to(acc_ty)
        else:
            noise = _stream_normals(key, offset, first, rows, lanes, NOISE).to(acc_ty)
        sum_g += grad_z
        sum_g_eps += grad_z * noise
    if kl_mode == 1:
        grad_kl = tl.load(grad_kl_ptr + tile_start + local, mask=mask, other=0.0)
    elif kl_mode == 2:
        grad_kl = tl.zeros_like(sum_g) + tl.load(grad_kl_ptr)
    else:
        grad_kl = tl.zeros_like(sum_g)
    out_ty = grad_mu_ptr.dtype.element_ty
    # dz/dmu = 1 and dKL/dmu = mu; dz/dlogvar = std * eps / 2 and dKL/dlogvar = (std^2 - 1) / 2.
    # grad_mu is stored before logvar is read, which keeps fewer values live around exp.
    mu = tl.load(mu_ptr + tile_start + local, mask=mask, other=0.0).to(acc_ty)
    tl.store(grad_mu_ptr + tile_start + local, (sum_g + grad_kl * mu).to(out_ty), mask=mask)
    logvar = tl.load(logvar_ptr + tile_start + local, mask=mask, other=0.0).to(acc_ty)
    std = tl.exp(0.5 * logvar)
    grad_logvar = 0.5 * (std * sum_g_eps + grad_kl * (std * std - 1.0))
    tl.store(grad_logvar_ptr + tile_start + local, grad_logvar.to(out_ty), mask=mask)


# ----------------------------------------------------------------------------- launchers

def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _noise_mode(has_eps: bool, numel: int, samples: int) -> int:
    """Tiles start on philox blocks when every sample starts on one, or there is one sample."""
    if has_eps or samples == 0:
        return NOISE_EPS
    return NOISE_PHILOX if numel % 4 == 0 or samples == 1 else NOISE_PHILOX_ANY


def _device_guard(t: torch.Tensor):
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def gaussian_sample_kl(mu, logvar, eps, key, offset, num_samples, compute_z, kl_mode):
    """(z, kl) of genfast::gaussian_sample_kl (schema in csrc/registration.cpp).

    mu, logvar: [*]; eps: None or z's shape; key, offset: the int64 seed pair; num_samples: 0
    for z shaped like mu, S for [S, *]; compute_z: False gives an empty (0,) z; kl_mode: 0 (an
    empty (0,) kl), 1 (elementwise, [*]) or 2 (summed, 0-d). kl is float64 for float64 inputs
    and float32 otherwise.
    """
    acc = _compute_dtype(mu.dtype)
    z_shape = (num_samples, *mu.shape) if num_samples > 0 else tuple(mu.shape)
    z = torch.empty(z_shape if compute_z else (0,), dtype=mu.dtype, device=mu.device)
    kl_shape = {KL_SUM: (), KL_ELEMENTWISE: tuple(mu.shape)}.get(kl_mode, (0,))
    kl = torch.empty(kl_shape, dtype=acc, device=mu.device)
    numel = mu.numel()
    samples = max(num_samples, 1) if compute_z else 0
    if numel == 0 or (samples == 0 and kl_mode == KL_NONE):
        if kl_mode == KL_SUM:
            kl.zero_()
        return z, kl
    mu_c, logvar_c = mu.contiguous(), logvar.contiguous()
    noise = _noise_mode(eps is not None, numel, samples)
    eps_c = eps.contiguous() if eps is not None and samples > 0 else mu_c
    tiles = triton.cdiv(numel, BLOCK)
    splits = max(1, min(samples, _TARGET_PROGRAMS // tiles))
    partials = torch.empty(tiles if kl_mode == KL_SUM else 0, dtype=acc, device=mu.device)
    with _device_guard(mu):
        _forward_kernel[(tiles, splits)](
            z, kl, partials, mu_c, logvar_c, eps_c, key, offset, numel, samples, kl_mode,
            BLOCK=BLOCK, NOISE=noise, num_warps=NUM_WARPS)
    if kl_mode == KL_SUM:
        # Tile partials summed in a fixed order: the result does not depend on scheduling.
        kl.copy_(partials.sum(dtype=torch.float64))
    return z, kl


def gaussian_sample_kl_backward(grad_z, grad_kl, mu, logvar, eps, key, offset, num_samples,
                                compute_z, kl_mode):
    """(grad_mu, grad_logvar) of genfast::gaussian_sample_kl, eps regenerated from the seed.

    grad_z: z's shape (ignored unless compute_z); grad_kl: kl's shape (ignored for kl_mode 0).
    Both gradients have mu's shape and dtype.
    """
    acc = _compute_dtype(mu.dtype)
    grad_mu = torch.empty(mu.shape, dtype=mu.dtype, device=mu.device)
    grad_logvar = torch.empty(mu.shape, dtype=mu.dtype, device=mu.device)
    numel = mu.numel()
    if numel == 0:
        return grad_mu, grad_logvar
    samples = max(num_samples, 1) if compute_z else 0
    mu_c, logvar_c = mu.contiguous(), logvar.contiguous()
    grad_z_c = grad_z.to(mu.dtype).contiguous() if samples > 0 else mu_c
    grad_kl_c = (grad_kl.to(acc).contiguous() if kl_mode != KL_NONE
                 else torch.empty(0, dtype=acc, device=mu.device))
    noise = _noise_mode(eps is not None, numel, samples)
    eps_c = eps.contiguous() if eps is not None and samples > 0 else mu_c
    with _device_guard(mu):
        _backward_kernel[(triton.cdiv(numel, BLOCK),)](
            grad_mu, grad_logvar, grad_z_c, grad_kl_c, mu_c, logvar_c, eps_c, key, offset, numel,
            samples, kl_mode, BLOCK=BLOCK, NOISE=noise, num_warps=NUM_WARPS)
    return grad_mu, grad_logvar


# ----------------------------------------------------------------------------- AOT variants

def _aot_specs() -> list[AotSpec]:
    """Every (kernel, dtype, NOISE) the launchers above run, with their launch settings.

    Triton's launcher also specializes on numel % 16 == 0 (which lets it vectorize the masked
    loads and stores), so the variants that can see such a numel are listed both ways; tiles
    that straddle philox blocks (NOISE_PHILOX_ANY) only occur when numel % 4 != 0.
    """
    specs = []
    scalars = {"key": "i64", "offset": "i64", "numel": "i32", "num_samples": "i32",
               "kl_mode": "i32"}
    for dtype in _DTYPES:
        t, a = triton_type(dtype), triton_type(_compute_dtype(dtype))
        forward = {"z_ptr": t, "kl_ptr": a, "partial_ptr": a, "mu_ptr": t, "logvar_ptr": t,
                   "eps_ptr": t, **scalars}
        backward = {"grad_mu_ptr": t, "grad_logvar_ptr": t, "grad_z_ptr": t, "grad_kl_ptr": a,
                    "mu_ptr": t, "logvar_ptr": t, "eps_ptr": t, **scalars}
        for fn, signature in ((_forward_kernel, forward), (_backward_kernel, backward)):
            pointers = tuple(name for name, ty in signature.items() if ty.startswith("*"))
            for noise in (NOISE_EPS, NOISE_PHILOX, NOISE_PHILOX_ANY):
                numel_hints = ((), ("numel",)) if noise != NOISE_PHILOX_ANY else ((),)
                for hint in numel_hints:
                    specs.append(AotSpec(
                        fn, signature, {"BLOCK": BLOCK, "NOISE": noise}, num_warps=NUM_WARPS,
                        divisible_by_16=pointers + hint,
                        tag=f"{t[1:]}-noise{noise}" + ("-numel16" if hint else "")))
    return specs


AOT_SPECS = _aot_specs()
