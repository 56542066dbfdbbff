"""Triton kernels of genfast::logistic_mixture_nll and its backward: PixelCNN++'s discretized
logistic mixture likelihood (Salimans et al. 2017, eq. 2 and section 2.2), with the semantics
of the C++ CPU kernel (csrc/logistic_mixture.cpp, maths in csrc/logistic_mixture_maths.h).

Each program owns BLOCK pixels of one image (grid: pixel blocks x images) and loops over the
mixture components, so no [B, C, M, H, W] temporary exists: the forward keeps running
log-sum-exps over the components and writes one partial sum per program; the backward makes one
pass for the log-sum-exps, then a second that recomputes each component to write its gradient
(the component's responsibility is known only after its channels are done, so the channels are
computed once for the total and once more for the derivatives). One kernel template runs both,
and both at once for a training step (genfast::logistic_mixture_nll_with_grad).

Grid: (H * W / BLOCK, B), one pixel per thread: 8 x 16 = 128 programs of 4 warps at the
benchmark shape (16 x 3 x 32 x 32), about one per SM on an H100. ptxas -v (kernels/_aot.py,
RGB, sm_80 / sm_90): forward 48 / 40 registers in float32, backward 72 / 64 in float32 and
128 / 137 in float64 with four channels; no spills.
"""
from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

from ._aot import AotSpec, triton_type

# Pixels per program and warps per program (one pixel per thread at 4 warps).
BLOCK = 128
NUM_WARPS = 4
LOG_SCALE_MIN = tl.constexpr(-7.0)
TINY_BIN_PROBABILITY = tl.constexpr(1e-5)
# torch's softplus(y) is y above this, and so is the reference's (exp(-20) shows in float64).
SOFTPLUS_THRESHOLD = tl.constexpr(20.0)


@triton.jit
def _sigmoid_pair(x, e):
    """sigmoid(x) and sigmoid(-x) from e = exp(-|x|), without cancellation."""
    inv = 1.0 / (1.0 + e)
    return tl.where(x >= 0, inv, e * inv), tl.where(x >= 0, e * inv, inv)


@triton.jit
def _bin_terms(x, level, mean, raw_log_scale, half_bin, log_half_levels, last_level,
               GRAD: tl.constexpr):
    """log P(bin) under one logistic and, with GRAD, d/dmean and d/d(raw log scale)."""
    log_scale = tl.maximum(raw_log_scale, LOG_SCALE_MIN)
    inv_scale = tl.exp(-log_scale)
    centred = x - mean
    plus = inv_scale * (centred + half_bin)
    minus = inv_scale * (centred - half_bin)
    mid = inv_scale * centred
    e_plus = tl.exp(-tl.abs(plus))
    e_minus = tl.exp(-tl.abs(minus))
    e_mid = tl.exp(-tl.abs(mid))
    sig_plus, sig_neg_plus = _sigmoid_pair(plus, e_plus)
    sig_minus, sig_neg_minus = _sigmoid_pair(minus, e_minus)
    # F(plus) - F(minus) from the small side of the logistic: no cancellation in the tails.
    delta = tl.where(minus > 0, sig_neg_minus - sig_neg_plus, sig_plus - sig_minus)
    first = level == 0
    last = level == last_level
    not_edge = (first | last) == 0
    tiny = not_edge & ((delta > TINY_BIN_PROBABILITY) == 0)  # NaN takes the tiny branch
    middle = not_edge & (tiny == 0)
    # One log for every branch: log sigmoid(plus), log(1 - sigmoid(minus)), log delta, or the
    # softplus(mid) of the log density at the centre.
    softplus_in = tl.where(first, plus, tl.where(last, minus, mid))
    saturated = (middle == 0) & (softplus_in > SOFTPLUS_THRESHOLD)  # softplus(y) = y exactly
    argument = tl.where(first, 1.0 + e_plus,
                        tl.where(last, 1.0 + e_minus,
                                 tl.where(tiny, 1.0 + e_mid, tl.maximum(delta, 1e-12))))
    argument = tl.where(saturated, 1.0, argument)
    log_arg = tl.log(argument)
    log_prob = tl.where(
        first, -tl.maximum(-plus, 0.0) - log_arg,
        tl.where(last, -tl.maximum(minus, 0.0) - log_arg,
                 tl.where(tiny, mid - log_scale - 2.0 * (tl.maximum(mid, 0.0) + log_arg)
                          - log_half_levels, log_arg)))
    d_mean = tl.zeros_like(log_prob)
    d_log_scale = tl.zeros_like(log_prob)
    if GRAD:
        inv_delta = 1.0 / tl.where(middle, delta, 1.0)
        d_plus = tl.where(first, tl.where(saturated, 0.0, sig_neg_plus),
                          tl.where(middle, sig_plus * sig_neg_plus * inv_delta, 0.0))
        d_minus = tl.where(last, tl.where(saturated, -1.0, -sig_minus),
                           tl.where(middle, -sig_minus * sig_neg_minus * inv_delta, 0.0))
        sig_mid, sig_neg_mid = _sigmoid_pair(mid, e_mid)
        d_mid = tl.where(tiny, tl.where(saturated, -1.0, sig_neg_mid - sig_mid), 0.0)
        d_mean = -inv_scale * (d_plus + d_minus + d_mid)
        d_log_scale = -(plus * d_plus + minus * d_minus + mid * d_mid) - tl.where(tiny, 1.0, 0.0)
        d_log_scale = tl.where(raw_log_scale >= LOG_SCALE_MIN, d_log_scale, 0.0)
    return log_prob, d_mean, d_log_scale


@triton.jit
def _load_x(images_ptr, image_base, pixels, offs, mask, c, scale, ACC: tl.constexpr):
    """The level of channel c at each pixel (as ACC) and its value x in [-1, 1]."""
    level = tl.load(images_ptr + image_base + c * pixels + offs, mask=mask, other=0).to(ACC)
    return level, level * scale - 1.0


@triton.jit
def _param(params_ptr, base, pixels, offs, mask, plane, ACC: tl.constexpr):
    return tl.load(params_ptr + base + plane * pixels + offs, mask=mask, other=0.0).to(ACC)


@triton.jit
def _component_total(params_ptr, base, pixels, offs, mask, m, M, logit, lv0, x0, lv1, x1, lv2,
                     x2, lv3, x3, half_bin, log_half_levels, last_level, C: tl.constexpr,
                     ACC: tl.constexpr):
    """logit_m + sum_c log P_c(bin) for component m."""
    total = logit
    for c in tl.static_range(C):
        lv = lv0 if c == 0 else (lv1 if c == 1 else (lv2 if c == 2 else lv3))
        x = x0 if c == 0 else (x1 if c == 1 else (x2 if c == 2 else x3))
        mean = _param(params_ptr, base, pixels, offs, mask, M + c * M + m, ACC)
        for e in tl.static_range(c):
            xe = x0 if e == 0 else (x1 if e == 1 else x2)
            k = c * (c - 1) // 2 + e
            coeff = _param(params_ptr, base, pixels, offs, mask, M + 2 * C * M + k * M + m, ACC)
            mean += _tanh(coeff) * xe
        raw_ls = _param(params_ptr, base, pixels, offs, mask, M + (C + c) * M + m, ACC)
        log_prob, _, _ = _bin_terms(x, lv, mean, raw_ls, half_bin, log_half_levels, last_level,
                                    False)
        total += log_prob
    return total


@triton.jit
def _tanh(x):
    # tanh(x) = sign(x) (1 - t) / (1 + t), t = exp(-2|x|): no overflow (Triton has no tl.tanh
    # on every version and interpreter). Loses relative accuracy only for |x| < ~1e-4, where
    # the absolute error stays ~1e-8 against coefficients that multiply x in [-1, 1].
    t = tl.exp(-2.0 * tl.abs(x))
    r = (1.0 - t) / (1.0 + t)
    return tl.where(x < 0, -r, r)


@triton.jit
def _load_pixels(images_ptr, b, pixels, offs, mask, levels, C: tl.constexpr, ACC: tl.constexpr):
    last_level = (levels - 1).to(ACC)
    scale = 2.0 / last_level
    image_base = b.to(tl.int64) * C * pixels
    lv0, x0 = _load_x(images_ptr, image_base, pixels, offs, mask, 0, scale, ACC)
    lv1, x1, lv2, x2, lv3, x3 = lv0, x0, lv0, x0, lv0, x0
    if C > 1:
        lv1, x1 = _load_x(images_ptr, image_base, pixels, offs, mask, 1, scale, ACC)
    if C > 2:
        lv2, x2 = _load_x(images_ptr, image_base, pixels, offs, mask, 2, scale, ACC)
    if C > 3:
        lv3, x3 = _load_x(images_ptr, image_base, pixels, offs, mask, 3, scale, ACC)
    return last_level, lv0, x0, lv1, x1, lv2, x2, lv3, x3


@triton.jit
def _log_sum_exps(params_ptr, base, pixels, offs, mask, M, lv0, x0, lv1, x1, lv2, x2, lv3, x3,
                  half_bin, log_half_levels, last_level, C: tl.constexpr, ACC: tl.constexpr,
                  BLOCK: tl.constexpr):
    """Each pixel's log-sum-exp over the components of its totals (logit + sum of the channels'
    log-probabilities) and of its logits, kept running over the components."""
    top_t = tl.full([BLOCK], float("-inf"), ACC)
    sum_t = tl.zeros([BLOCK], ACC)
    top_l = tl.full([BLOCK], float("-inf"), ACC)
    sum_l = tl.zeros([BLOCK], ACC)
    for m in range(M):
        logit = _param(params_ptr, base, pixels, offs, mask, m, ACC)
        total = _component_total(params_ptr, base, pixels, offs, mask, m, M, logit, lv0, x0,
                                 lv1, x1, lv2, x2, lv3, x3, half_bin, log_half_levels,
                                 last_level, C, ACC)
        new_top = tl.maximum(top_t, total)
        sum_t = sum_t * tl.exp(top_t - new_top) + tl.exp(total - new_top)
        top_t = new_top
        new_top = tl.maximum(top_l, logit)
        sum_l = sum_l * tl.exp(top_l - new_top) + tl.exp(logit - new_top)
        top_l = new_top
    return top_t + tl.log(sum_t), top_l + tl.log(sum_l)


@triton.jit
def _mixture_kernel(
    grad_ptr,      # out [B, P, H * W] (GRADIENT) d(sum_b g_b nll[b]) / d params, params' dtype
    grad_nll_ptr,  # in [B] (SCALED) g_b, the cotangent of each image's NLL (ACC); else g_b = 1
    partial_ptr,   # out [B, programs per image] (PARTIAL) each program's log-likelihood sum
    images_ptr,    # in [B, C, H * W] integer levels
    params_ptr,    # in [B, P, H * W] mixture parameters
    pixels,        # H * W
    levels,        # L
    M,             # mixture components
    C: tl.constexpr,         # colour channels, 1 to 4
    ACC: tl.constexpr,       # the compute dtype: float64 for float64 params, else float32
    BLOCK: tl.constexpr,     # pixels per program
    GRADIENT: tl.constexpr,  # write the gradient (the backward, and with_grad)
    SCALED: tl.constexpr,    # scale it by grad_nll (the backward)
    PARTIAL: tl.constexpr,   # write the log-likelihood sums (the forward, and with_grad)
):
    """The forward (PARTIAL), the backward (GRADIENT, SCALED) or both at once for g = 1
    (GRADIENT, PARTIAL: genfast::logistic_mixture_nll_with_grad); the pointers a variant does
    not use are not read."""
    block = tl.program_id(0)
    b = tl.program_id(1)
    offs = block * BLOCK + tl.arange(0, BLOCK)
    mask = offs < pixels
    last_level, lv0, x0, lv1, x1, lv2, x2, lv3, x3 = _load_pixels(
        images_ptr, b, pixels, offs, mask, levels, C, ACC)
    half_bin = 1.0 / last_level
    log_half_levels = tl.log(last_level * 0.5)
    P = M * (1 + 2 * C + C * (C - 1) // 2)
    base = b.to(tl.int64) * P * pixels
    lse_total, lse_logits = _log_sum_exps(params_ptr, base, pixels, offs, mask, M, lv0, x0, lv1,
                                          x1, lv2, x2, lv3, x3, half_bin, log_half_levels,
                                          last_level, C, ACC, BLOCK)
    if PARTIAL:
        log_lik = lse_total - lse_logits
        tl.store(partial_ptr + b * tl.num_programs(0) + block,
                 tl.sum(tl.where(mask, log_lik, 0.0)))
    if GRADIENT:
        if SCALED:
            g_out = tl.load(grad_nll_ptr + b).to(ACC)
        else:
            g_out = tl.full([], 1.0, ACC)
        _write_gradient(grad_ptr, params_ptr, base, pixels, offs, mask, M, lv0, x0, lv1, x1,
                        lv2, x2, lv3, x3, half_bin, log_half_levels, last_level, lse_total,
                        lse_logits, g_out, C, ACC)


@triton.jit
def _write_gradient(grad_ptr, params_ptr, base, pixels, offs, mask, M, lv0, x0, lv1, x1, lv2,
                    x2, lv3, x3, half_bin, log_half_levels, last_level, lse_total, lse_logits,
                    g_out, C: tl.constexpr, ACC: tl.constexpr):
    """Recomputes each component, its responsibility now known, and writes its gradient."""
    out_ty = grad_ptr.dtype.element_ty
    for m in range(M):
        logit = _param(params_ptr, base, pixels, offs, mask, m, ACC)
        total = _component_total(params_ptr, base, pixels, offs, mask, m, M, logit, lv0, x0,
                                 lv1, x1, lv2, x2, lv3, x3, half_bin, log_half_levels,
                                 last_level, C, ACC)
        # NLL = lse(logits) - lse(totals): d/dlogit_m = prior_m - w_m, d/dtotal_m = -w_m.
        w = tl.exp(total - lse_total)
        prior = tl.exp(logit - lse_logits)
        tl.store(grad_ptr + base + m * pixels + offs, (g_out * (prior - w)).to(out_ty), mask=mask)
        scale = -g_out * w
        for c in tl.static_range(C):
            lv = lv0 if c == 0 else (lv1 if c == 1 else (lv2 if c == 2 else lv3))
            x = x0 if c == 0 else (x1 if c == 1 else (x2 if c == 2 else x3))
            mean = _param(params_ptr, base, pixels, offs, mask, M + c * M + m, ACC)
            for e in tl.static_range(c):
                xe = x0 if e == 0 else (x1 if e == 1 else x2)
                k = c * (c - 1) // 2 + e
                coeff = _param(params_ptr, base, pixels, offs, mask, M + 2 * C * M + k * M + m,
                               ACC)
                mean += _tanh(coeff) * xe
            ls_plane = M + (C + c) * M + m
            raw_ls = _param(params_ptr, base, pixels, offs, mask, ls_plane, ACC)
            _, d_mean, d_ls = _bin_terms(x, lv, mean, raw_ls, half_bin, log_half_levels,
                                         last_level, True)
            d_mean = scale * d_mean
            tl.store(grad_ptr + base + (M + c * M + m) * pixels + offs, d_mean.to(out_ty),
                     mask=mask)
            tl.store(grad_ptr + base + ls_plane * pixels + offs, (scale * d_ls).to(out_ty),
                     mask=mask)
            for e in tl.static_range(c):
                xe = x0 if e == 0 else (x1 if e == 1 else x2)
                coeff_plane = M + 2 * C * M + (c * (c - 1) // 2 + e) * M + m
                t = _tanh(_param(params_ptr, base, pixels, offs, mask, coeff_plane, ACC))
                tl.store(grad_ptr + base + coeff_plane * pixels + offs,
                         (d_mean * xe * (1.0 - t * t)).to(out_ty), mask=mask)


# ----------------------------------------------------------------------------- launchers

def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _device_guard(t: torch.Tensor):
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _images_int64(images):
    """The kernels read int64 levels (one compiled variant); other integer dtypes are widened."""
    return images.contiguous() if images.dtype == torch.int64 else images.long().contiguous()


def _shape(images, params):
    batch, channels, height, width = images.shape
    per = 1 + 2 * channels + channels * (channels - 1) // 2
    return batch, channels, params.shape[1] // per, height * width


def logistic_mixture_nll(images, params, levels):
    """Each image's NLL [B] (float64 for float64 params, else float32); arguments as
    genfast.ops.logistic_mixture.logistic_mixture_nll, checked by it."""
    batch, channels, mixtures, pixels = _shape(images, params)
    acc = _compute_dtype(params.dtype)
    blocks = triton.cdiv(pixels, BLOCK)
    if batch == 0 or blocks == 0:
        return torch.zeros(batch, dtype=acc, device=params.device)
    partial = torch.empty(batch, blocks, dtype=acc, device=params.device)
    with _device_guard(params):
        _mixture_kernel[(blocks, batch)](
            partial, partial, partial, _images_int64(images), params.contiguous(), pixels,
            levels, mixtures, C=channels, ACC=_acc(params.dtype), BLOCK=BLOCK, GRADIENT=False,
            SCALED=False, PARTIAL=True, num_warps=NUM_WARPS)
    return _nll_of(partial, acc)


def _nll_of(partial, acc):
    # Partials summed in a fixed order: the result does not depend on scheduling.
    return -partial.sum(dim=1, dtype=torch.float64).to(acc)


def logistic_mixture_nll_backward(grad_nll, images, params, levels):
    """d(sum_b grad_nll[b] nll[b]) / d params, shaped and typed like params."""
    batch, channels, mixtures, pixels = _shape(images, params)
    grad = torch.empty(params.shape, dtype=params.dtype, device=params.device)
    blocks = triton.cdiv(pixels, BLOCK)
    if grad.numel() == 0:
        return grad
    with _device_guard(params):
        _mixture_kernel[(blocks, batch)](
            grad, grad_nll.to(_compute_dtype(params.dtype)).contiguous(), grad,
            _images_int64(images), params.contiguous(), pixels, levels, mixtures, C=channels,
            ACC=_acc(params.dtype), BLOCK=BLOCK, GRADIENT=True, SCALED=True, PARTIAL=False,
            num_warps=NUM_WARPS)
    return grad


def logistic_mixture_nll_with_grad(images, params, levels):
    """(each image's NLL, its gradient for grad_nll = 1) in one launch."""
    batch, channels, mixtures, pixels = _shape(images, params)
    acc = _compute_dtype(params.dtype)
    grad = torch.empty(params.shape, dtype=params.dtype, device=params.device)
    blocks = triton.cdiv(pixels, BLOCK)
    if batch == 0 or blocks == 0:
        return torch.zeros(batch, dtype=acc, device=params.device), grad
    partial = torch.empty(batch, blocks, dtype=acc, device=params.device)
    with _device_guard(params):
        _mixture_kernel[(blocks, batch)](
            grad, partial, partial, _images_int64(images), params.contiguous(), pixels, levels,
            mixtures, C=channels, ACC=_acc(params.dtype), BLOCK=BLOCK, GRADIENT=True,
            SCALED=False, PARTIAL=True, num_warps=NUM_WARPS)
    return _nll_of(partial, acc), grad


# ----------------------------------------------------------------------------- AOT variants

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _aot_specs() -> list[AotSpec]:
    """Every (kernel, params dtype, channels) the launchers above run, pointers aligned."""
    specs = []
    scalars = {"pixels": "i32", "levels": "i32", "M": "i32"}
    for dtype in _DTYPES:
        t, a = triton_type(dtype), triton_type(_compute_dtype(dtype))
        # The forward passes partial as its unused grad pointers (a, not t).
        forward = {"grad_ptr": a, "grad_nll_ptr": a, "partial_ptr": a, "images_ptr": "*i64",
                   "params_ptr": t, **scalars}
        backward = {**forward, "grad_ptr": t, "partial_ptr": t}
        with_grad = {**forward, "grad_ptr": t}
        for kind, signature, flags in (("forward", forward, (False, False, True)),
                                       ("backward", backward, (True, True, False)),
                                       ("with_grad", with_grad, (True, False, True))):
            pointers = tuple(name for name, ty in signature.items() if ty.startswith("*"))
            constexprs = dict(zip(("GRADIENT", "SCALED", "PARTIAL"), flags))
            for channels in (1, 2, 3, 4):
                specs.append(AotSpec(
                    _mixture_kernel, signature,
                    {"C": channels, "ACC": _acc(dtype), "BLOCK": BLOCK, **constexprs},
                    num_warps=NUM_WARPS, divisible_by_16=pointers,
                    tag=f"{kind}-{t[1:]}-c{channels}"))
    return specs


AOT_SPECS = _aot_specs()
