"""The emulated CUDA kernels (torch.ops.genfast_cuda_emu) against genfast's references, forward
and backward through autograd, one function per op family. Used by tests/test_cuda_emulated.py
and by the coverage test of tests/test_cuda_emulator.py.

Each check draws fresh random inputs in float64, runs the emulated op on them cast to ``dtype``
and holds the results to the same rules as the backend tests (conftest.assert_close: the dtype's
tolerance, and for float16/bfloat16 at most twice the reference's own error against a float64
result).
"""
from __future__ import annotations

import functools
import zlib

import torch

from cuda_emu import load
from conftest import LOW_PRECISION, assert_all_close, assert_close
from genfast.ops import categorical_head, gated, logistic_mixture, lstm_row, masked_conv, reparam
from genfast.ops.categorical_head import categorical_head_nll_ref
from genfast.ops.gated import gated_activation_ref
from genfast.ops.logistic_mixture import logistic_mixture_nll_ref, params_per_mixture
from genfast.ops.lstm_row import lstm_rows_ref
from genfast.ops.masked_conv import MASK_TYPES, masked_conv2d_ref
from genfast.ops.reparam import KL_ELEMENTWISE, KL_NONE, KL_SUM, reparameterize_kl_ref


@functools.cache
def emulated_ops():
    """torch.ops.genfast_cuda_emu, with each op family's fake kernels and autograd registered as
    for its genfast twin, so autograd, opcheck and gradcheck reach the emulated backward."""
    ops = load()
    for module, forward, backward in (
            (masked_conv, "masked_conv2d", "masked_conv2d_backward"),
            (lstm_row, "lstm_rows", "lstm_rows_backward"),
            (reparam, "gaussian_sample_kl", "gaussian_sample_kl_backward"),
            (gated, "gated_activation", "gated_activation_backward"),
            (logistic_mixture, "logistic_mixture_nll", "logistic_mixture_nll_backward")):
        module._register(f"genfast_cuda_emu::{forward}", f"genfast_cuda_emu::{backward}")
    categorical_head._register("genfast_cuda_emu::categorical_head_nll")  # no backward op
    return ops


def seed(*key) -> None:
    torch.manual_seed(zlib.crc32(repr(key).encode()))


def _rounded(tensors, dtype):
    """The float64 oracle's inputs: each tensor rounded to dtype, as the low-precision run sees
    it."""
    return [None if t is None else t.to(dtype).double() for t in tensors]


def _leaves(tensors, dtype):
    return [None if t is None else t.detach().to(dtype).requires_grad_() for t in tensors]


# ----------------------------------------------------------------------------- masked conv

def emulated_masked_conv2d(x, weight, bias, mask_type, data_channels=1, dilation=1, window=None):
    return emulated_ops().masked_conv2d(x, weight, bias, MASK_TYPES[mask_type], data_channels,
                                        dilation, list(window or ()))


def _conv_forward_backward(fn, tensors, grad_y, dtype, layout, **kw):
    x, weight, bias = _leaves(tensors, dtype)
    y = fn(layout(x), layout(weight), bias, **kw)
    y.backward(grad_y.to(y.dtype))
    return [y.detach(), x.grad, weight.grad, bias.grad]


def check_masked_conv(case, dtype, window=None, channels_last=False):
    """case = (batch, in, out, height, width, kh, kw, mask, data_channels, dilation)."""
    b, cin, cout, h, w, kh, kw_, mask, data_channels, dilation = case
    x = torch.randn(b, cin, h, w, dtype=torch.float64)
    weight = torch.randn(cout, cin, kh, kw_, dtype=torch.float64) / (cin * kh * kw_) ** 0.5
    bias = torch.randn(cout, dtype=torch.float64)
    rows = window[1] - window[0] if window else h
    cols = window[3] - window[2] if window else w
    grad_y = torch.randn(b, cout, rows, cols, dtype=torch.float64)
    kw = dict(mask_type=mask, data_channels=data_channels, dilation=dilation, window=window)
    # channels_last applies to the weight too: the weight packing reads any strides.
    layout = (lambda t: t.to(memory_format=torch.channels_last) if t.dim() == 4 else t) \
        if channels_last else (lambda t: t)
    fast = _conv_forward_backward(emulated_masked_conv2d, (x, weight, bias), grad_y, dtype,
                                  layout, **kw)
    # CPU convolutions have no float16 kernels: the low-precision reference runs in float32 and
    # is rounded, an error far below the low-precision rounding.
    ref_dtype = torch.float32 if dtype in LOW_PRECISION else dtype
    ref = [t.to(dtype) for t in _conv_forward_backward(masked_conv2d_ref, (x, weight, bias),
                                                       grad_y, ref_dtype, layout, **kw)]
    ref64 = _conv_forward_backward(masked_conv2d_ref, _rounded((x, weight, bias), dtype),
                                   grad_y.to(dtype).double(), torch.float64, layout, **kw)
    for got, want, want64 in zip(fast, ref, ref64):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert_close(got, want, want64)
    if channels_last and cin > 1:
        assert fast[0].is_contiguous(memory_format=torch.channels_last)


# ----------------------------------------------------------------------------- lstm_rows

def emulated_lstm_rows(gates_in, weight, bias=None, h0=None, c0=None, pad_left=None):
    """lstm_rows' defaults (zero states, float32 cell for float16/bfloat16), then the op."""
    h0, c0 = lstm_row.initial_states(gates_in, gates_in.shape[1] // 4, h0, c0)
    h, c, _ = emulated_ops().lstm_rows(gates_in, weight, bias, h0, c0, pad_left)
    return h, c


def _rows_forward_backward(fn, inputs, grads, dtype, pad_left, transform):
    leaves = _leaves(inputs, dtype)
    gates_in, *rest = leaves
    h, c = fn(transform(gates_in), *rest, pad_left=pad_left)
    wanted = [t for t in leaves if t is not None]
    got = iter(torch.autograd.grad((h, c), wanted, (grads[0].to(h.dtype), grads[1].to(c.dtype))))
    return [h.detach(), c.detach()] + [None if t is None else next(got) for t in leaves]


def check_lstm_rows(case, dtype, states=True, transform=lambda gates_in: gates_in, scale=1.0):
    """case = (batch, hidden, rows, length, k, pad_left); ``transform`` maps gates_in before the
    recurrence (a skewed map's zero padding, say); ``scale`` multiplies gates_in (large values
    saturate the gates)."""
    b, d, r, length, k, pad_left = case
    f64 = dict(dtype=torch.float64)
    inputs = [scale * torch.randn(b, 4 * d, r, length, **f64),
              torch.randn(4 * d, d, k, **f64) / (d * k) ** 0.5,
              0.5 * torch.randn(4 * d, **f64),
              torch.randn(b, d, length, **f64).tanh() if states else None,
              torch.randn(b, d, length, **f64) if states else None]
    grads = [torch.randn(b, d, r, length, **f64) for _ in range(2)]
    fast = _rows_forward_backward(emulated_lstm_rows, inputs, grads, dtype, pad_left, transform)
    ref = _rows_forward_backward(lstm_rows_ref, inputs, grads, dtype, pad_left, transform)
    ref64 = _rows_forward_backward(lstm_rows_ref, _rounded(inputs, dtype),
                                   [g.to(dtype).double() for g in grads], torch.float64,
                                   pad_left, transform)
    assert fast[0].dtype == dtype
    assert_all_close(fast, ref, ref64, dtype)


# ----------------------------------------------------------------------------- reparameterize

KL_REDUCTION = {KL_NONE: None, KL_ELEMENTWISE: "none", KL_SUM: "sum"}


def emulated_sample_kl(mu, logvar, eps, seed_tensor, num_samples, compute_z, kl_mode):
    return emulated_ops().gaussian_sample_kl(mu, logvar, eps, seed_tensor, num_samples, compute_z,
                                             kl_mode)


def _sample_forward_backward(fn, tensors, grads, dtype, num_samples, kl_mode, view):
    mu, logvar, eps = _leaves(tensors, dtype)
    eps = None if tensors[2] is None else view(eps.detach())
    z, kl = fn(view(mu), view(logvar), eps, num_samples, kl_mode)
    outs = [t for t in (z, kl) if t is not None]
    torch.autograd.backward(outs, [g.to(t.dtype) for g, t in zip(grads, (z, kl)) if t is not None])
    return [t.detach() for t in outs] + [mu.grad, logvar.grad]


def _emulated_given_eps(mu, logvar, eps, num_samples, kl_mode):
    z, kl = emulated_sample_kl(mu, logvar, eps, reparam._NO_SEED, num_samples, True, kl_mode)
    return z, (kl if kl_mode != KL_NONE else None)


def _reference_given_eps(mu, logvar, eps, num_samples, kl_mode):
    z, kl = reparameterize_kl_ref(mu, logvar, eps=eps, num_samples=num_samples or None,
                                  reduction=KL_REDUCTION[kl_mode] or "sum")
    return z, (kl if kl_mode != KL_NONE else None)


def check_reparam_given_eps(shape, dtype, num_samples, kl_mode, unaligned=False):
    """z and the KL with explicit noise; ``unaligned`` passes views one element into their
    storage, which the kernels must read without vector accesses."""
    z_shape = (num_samples, *shape) if num_samples else shape
    f64 = dict(dtype=torch.float64)
    tensors = [torch.randn(shape, **f64), 0.5 * torch.randn(shape, **f64),
               torch.randn(z_shape, **f64)]
    kl_shape = shape if kl_mode == KL_ELEMENTWISE else ()
    grads = [torch.randn(z_shape, **f64), torch.randn(kl_shape, **f64)]

    def view(t):
        if not unaligned:
            return t
        padded = t.new_empty(t.numel() + 1)
        padded[1:] = t.reshape(-1)
        return padded[1:].view(t.shape)

    args = (num_samples, kl_mode, view)
    fast = _sample_forward_backward(_emulated_given_eps, tensors, grads, dtype, *args)
    ref = _sample_forward_backward(_reference_given_eps, tensors, grads, dtype, *args)
    kl_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    grads64 = [grads[0].to(dtype).double(), grads[1].to(kl_dtype).double()]
    ref64 = _sample_forward_backward(_reference_given_eps, _rounded(tensors, dtype), grads64,
                                     torch.float64, *args)
    for got, want, want64 in zip(fast, ref, ref64):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert_close(got, want, want64)


def check_reparam_noise(shape, num_samples, kl_mode, compute_z=True):
    """In-kernel noise, forward and the backward that regenerates it, against the cpu backend's
    kernel with the same seed (the same Philox stream; the device maths rounds differently)."""
    seed_tensor = torch.tensor([0x1234_5678_9ABC, 2**40 - 3], dtype=torch.int64)
    mu, logvar = torch.randn(shape), 0.5 * torch.randn(shape)
    z_shape = (num_samples, *shape) if num_samples else shape
    grad_z = torch.randn(z_shape) if compute_z else torch.empty(0)
    grad_kl = torch.randn(shape if kl_mode == KL_ELEMENTWISE else ())
    results = []
    for forward, backward in ((emulated_ops().gaussian_sample_kl,
                               emulated_ops().gaussian_sample_kl_backward),
                              (torch.ops.genfast.gaussian_sample_kl,
                               torch.ops.genfast.gaussian_sample_kl_backward)):
        z, kl = forward(mu, logvar, None, seed_tensor, num_samples, compute_z, kl_mode)
        grads = backward(grad_z, grad_kl, mu, logvar, None, seed_tensor, num_samples, compute_z,
                         kl_mode)
        results.append([z, kl, *grads])
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- gated

def check_gated(shape, dim, dtype, channels_last=False):
    x64 = torch.randn(shape, dtype=torch.float64)
    grad64 = torch.randn(gated_activation_ref(x64, dim).shape, dtype=torch.float64)

    def run(fn, x, run_dtype):
        x = x.detach().to(run_dtype)
        x = (x.to(memory_format=torch.channels_last) if channels_last else x).requires_grad_()
        y = fn(x, dim)
        (grad_x,) = torch.autograd.grad(y, x, grad64.to(run_dtype))
        return [y.detach(), grad_x]

    fast = run(emulated_ops().gated_activation, x64, dtype)
    ref = run(gated_activation_ref, x64, dtype)
    ref64 = run(gated_activation_ref, x64.to(dtype).double(), torch.float64)
    for got, want, want64 in zip(fast, ref, ref64):
        assert got.dtype == dtype and got.shape == want.shape
        assert_close(got, want, want64)
    # The kernels keep x's memory format: channels_last in, channels_last out.
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    assert all(t.is_contiguous(memory_format=memory_format) for t in fast)


# ----------------------------------------------------------------------------- logistic mixture

def logistic_mixture_inputs(batch, channels, mixtures, height, width, levels, tails=False):
    """Integer images (a third at the edge bins) and float64 params near them, or with
    ``tails`` far from them at the smallest scale (the tiny-probability branch)."""
    images = torch.randint(0, levels, (batch, channels, height, width))
    edge = torch.rand(images.shape) < 0.3
    images = torch.where(edge, (levels - 1) * torch.randint_like(images, 0, 2), images)
    params = torch.randn(batch, params_per_mixture(channels) * mixtures, height, width,
                         dtype=torch.float64)
    m, cm = mixtures, channels * mixtures
    params[:, m + cm:m + 2 * cm] = params[:, m + cm:m + 2 * cm] * 0.7 - 2.5
    if tails:
        x = images.double() * (2.0 / (levels - 1)) - 1.0
        params[:, m:m + cm] = x.repeat_interleave(mixtures, dim=1) + 0.4
        params[:, m + cm:m + 2 * cm] = -6.9 + 0.3 * torch.randn(batch, cm, height, width)
        params[:, m + 2 * cm:] = 0.0
    return images, params


def check_logistic_mixture(case, dtype, tails=False):
    """case = (batch, channels, mixtures, height, width, levels): NLL and dL/dparams."""
    levels = case[-1]
    images, params64 = logistic_mixture_inputs(*case, tails=tails)
    grad64 = torch.rand(case[0], dtype=torch.float64) + 0.5

    def run(fn, params, run_dtype):
        leaf = params.detach().to(run_dtype).requires_grad_()
        nll = fn(images, leaf, levels)
        (grad,) = torch.autograd.grad(nll, leaf, grad64.to(nll.dtype))
        return [nll.detach(), grad]

    fast = run(emulated_ops().logistic_mixture_nll, params64, dtype)
    ref = run(logistic_mixture_nll_ref, params64, dtype)
    ref64 = run(logistic_mixture_nll_ref, params64.to(dtype).double(), torch.float64)
    for got, want, want64 in zip(fast, ref, ref64):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert torch.isfinite(got).all()
        if dtype == torch.float64:
            # The reference's float64 F(plus) - F(minus) cancels near the tiny-branch threshold
            # (relative error up to 1e-11); the kernels take it from the logistic's small side.
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
        else:
            assert_close(got, want, want64)


def check_logistic_mixture_with_grad(case, dtype):
    """genfast::logistic_mixture_nll_with_grad: the forward's NLL and the backward's gradient
    for ones, in one launch."""
    images, params64 = logistic_mixture_inputs(*case)
    params = params64.to(dtype)
    ops = emulated_ops()
    nll, grad = ops.logistic_mixture_nll_with_grad(images, params, case[-1])
    assert torch.equal(nll, ops.logistic_mixture_nll(images, params, case[-1]))
    ones = torch.ones(case[0], dtype=nll.dtype)
    torch.testing.assert_close(
        grad, ops.logistic_mixture_nll_backward(ones, images, params, case[-1]), rtol=0, atol=0)


def check_categorical_head(case, dtype):
    """The fused categorical head's NLL and its gradients in features, weight and bias
    (through the op's autograd formula) against the reference; case = (batch, features,
    colours, levels, height, width, colour layout)."""
    b, cin, colours, levels, h, w, layout = case
    features64 = torch.randn(b, cin, h, w, dtype=torch.float64).relu()
    weight64 = torch.randn(colours * levels, cin, dtype=torch.float64) / cin**0.5
    bias64 = 0.3 * torch.randn(colours * levels, dtype=torch.float64)
    images = torch.randint(0, levels, (b, colours, h, w))
    grad64 = torch.randn(b, dtype=torch.float64)
    op = emulated_ops().categorical_head_nll

    def fast(features, weight, bias):
        return op(features, weight, bias, images, levels, layout == "interleaved",
                  [True, True, True])[0]

    def ref(features, weight, bias):
        return categorical_head_nll_ref(features, weight, bias, images, levels, colours, layout)

    def run(fn, tensors, run_dtype):
        leaves = [t.detach().to(run_dtype).requires_grad_() for t in tensors]
        nll = fn(*leaves)
        grads = torch.autograd.grad(nll, leaves, grad64.to(nll.dtype))
        return [nll.detach(), *grads]

    tensors = (features64, weight64, bias64)
    got = run(fast, tensors, dtype)
    want = run(ref, tensors, dtype)
    want64 = run(ref, _rounded(tensors, dtype), torch.float64)
    for g, r, r64 in zip(got, want, want64):
        assert g.dtype == dtype and g.shape == r.shape
        assert_close(g, r, r64)
