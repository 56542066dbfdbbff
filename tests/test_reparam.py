"""Fused reparameterized sampling + KL: every fast backend against the reference."""
import zlib

import pytest
import torch

import genfast
from genfast.ops.philox import gaussian_noise_ref
from genfast.ops.reparam import reparameterize_kl_ref
from conftest import LOW_PRECISION, assert_close, requires_cuda

# Odd shapes on purpose: batch 1, primes, non-powers of two, a 3-d latent.
SHAPES = [(1,), (7,), (1, 33), (5, 13), (3, 5, 7), (2, 257)]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def _inputs(shape, dtype, device, num_samples=None):
    mu = torch.randn(shape, dtype=torch.float64, device=device)
    logvar = 0.5 * torch.randn(shape, dtype=torch.float64, device=device)
    z_shape = shape if num_samples is None else (num_samples, *shape)
    eps = torch.randn(z_shape, dtype=torch.float64, device=device)
    return mu, logvar, eps


def _run(fn, mu64, logvar64, eps64, dtype, grad_z64, grad_kl, **kwargs):
    """Forward and backward of fn on copies of the float64 inputs cast to dtype."""
    mu = mu64.to(dtype).requires_grad_()
    logvar = logvar64.to(dtype).requires_grad_()
    z, kl = fn(mu, logvar, eps=eps64.to(dtype), **kwargs)
    torch.autograd.backward([z, kl], [grad_z64.to(z.dtype), grad_kl.to(kl.dtype)])
    return z.detach(), kl.detach(), mu.grad, logvar.grad


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("num_samples", [None, 3])
@pytest.mark.parametrize("reduction", ["sum", "none", "batchmean"])
def test_matches_reference_given_eps(backend, shape, dtype, num_samples, reduction):
    name, device = backend
    if name == "triton" and device == "cpu" and dtype in LOW_PRECISION:
        pytest.skip("the Triton CPU interpreter has no float16/bfloat16 maths")
    torch.manual_seed(zlib.crc32(repr((shape, str(dtype), num_samples, reduction)).encode()))
    mu, logvar, eps = _inputs(shape, torch.float64, device, num_samples)
    grad_z = torch.randn(eps.shape, dtype=torch.float64, device=device)
    kl_shape = shape if reduction == "none" else ()
    grad_kl = torch.randn(kl_shape, dtype=torch.float64, device=device)
    args = (mu, logvar, eps, dtype, grad_z, grad_kl)
    kw = dict(num_samples=num_samples, reduction=reduction)

    fast = _run(genfast.reparameterize_kl, *args, backend=name, **kw)
    ref = _run(reparameterize_kl_ref, *args, **kw)
    # The float64 oracle sees the inputs as the low-precision run does (rounded to dtype), so
    # the comparison measures the op's rounding, not the inputs'.
    kl_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    rounded = [t.to(dtype).double() for t in (mu, logvar, eps, grad_z)]
    ref64 = _run(reparameterize_kl_ref, *rounded[:3], torch.float64, rounded[3],
                 grad_kl.to(kl_dtype).double(), **kw)
    for got, want, want64 in zip(fast, ref, ref64):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert_close(got, want, want64)


def test_non_contiguous_inputs(backend):
    name, device = backend
    base = torch.randn(6, 10, dtype=torch.float32, device=device)
    mu, logvar = base[:, ::2], base.t()[::2, :6].t()[:, :5]
    eps = torch.randn(5, 6, device=device).t()
    assert not (mu.is_contiguous() or logvar.is_contiguous() or eps.is_contiguous())
    z, kl = genfast.reparameterize_kl(mu, logvar, eps=eps, backend=name)
    z_ref, kl_ref = reparameterize_kl_ref(mu, logvar, eps=eps)
    assert_close(z, z_ref)
    assert_close(kl, kl_ref)


@pytest.mark.parametrize("key,offset", [(0, 0), (123456789, 5), (-(2**63) + 17, 2**40 - 3),
                                        (-1, 2**64 - 3 - 2**63)])
@pytest.mark.parametrize("num_samples", [0, 2])
def test_in_kernel_noise_follows_the_stream(backend, key, offset, num_samples):
    """With mu = 0 and logvar = 0, z is the noise itself: it must be genfast's Philox stream."""
    name, device = backend
    shape = (3, 37)
    mu = torch.zeros(shape, device=device)
    seed = torch.tensor([key, offset], dtype=torch.int64)
    op = genfast.ops.reparam._FORWARD_OPS[name]
    z, _ = op(mu, torch.zeros_like(mu), None, seed, num_samples, True, 0)
    expected = gaussian_noise_ref(key % 2**64, offset % 2**64, z.numel()).view(z.shape)
    torch.testing.assert_close(z.cpu(), expected, rtol=0, atol=1e-5)


def test_backward_regenerates_the_same_noise(backend):
    name, device = backend
    torch.manual_seed(0)
    mu = torch.randn(4, 33, device=device, requires_grad=True)
    logvar = torch.randn(4, 33, device=device, requires_grad=True)
    grad_z = torch.randn(2, 4, 33, device=device)
    z, kl = genfast.reparameterize_kl(mu, logvar, num_samples=2, backend=name)
    torch.autograd.backward([z, kl], [grad_z, torch.tensor(0.7, device=device)])
    # The noise the forward used, recovered from z, then pushed through the reference.
    eps = ((z - mu) / torch.exp(0.5 * logvar)).detach()
    mu_ref, logvar_ref = mu.detach().clone().requires_grad_(), logvar.detach().clone().requires_grad_()
    z_ref, kl_ref = reparameterize_kl_ref(mu_ref, logvar_ref, eps=eps)
    torch.autograd.backward([z_ref, kl_ref], [grad_z, torch.tensor(0.7, device=device)])
    torch.testing.assert_close(mu.grad, mu_ref.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logvar.grad, logvar_ref.grad, rtol=1e-4, atol=1e-4)


def test_seeding(backend):
    name, device = backend
    mu, logvar = torch.randn(2, 50, device=device), torch.randn(2, 50, device=device)
    torch.manual_seed(7)
    a = genfast.reparameterize(mu, logvar, backend=name)
    torch.manual_seed(7)
    b = genfast.reparameterize(mu, logvar, backend=name)
    c = genfast.reparameterize(mu, logvar, backend=name)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    d = genfast.reparameterize(mu, logvar, generator=g1, backend=name)
    e = genfast.reparameterize(mu, logvar, generator=g2, backend=name)
    assert torch.equal(a, b) and torch.equal(d, e)
    assert not torch.equal(a, c) and not torch.equal(a, d)


def test_fast_backends_agree_on_the_noise(backend):
    """One seed gives the same z on every fast backend (all follow one Philox stream)."""
    name, device = backend
    mu, logvar = torch.randn(3, 41), torch.randn(3, 41)
    torch.manual_seed(11)
    z = genfast.reparameterize(mu.to(device), logvar.to(device), num_samples=2, backend=name)
    torch.manual_seed(11)
    z_cpu = genfast.reparameterize(mu, logvar, num_samples=2, backend="cpu")
    torch.testing.assert_close(z.cpu(), z_cpu, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(0,), (0, 4), (3, 0)], ids=str)
def test_empty_tensors(backend, shape):
    name, device = backend
    mu = torch.randn(shape, device=device, requires_grad=True)
    logvar = torch.randn(shape, device=device, requires_grad=True)
    z, kl = genfast.reparameterize_kl(mu, logvar, num_samples=2, backend=name)
    assert z.shape == (2, *shape) and kl.shape == () and kl.item() == 0.0
    (z.sum() + kl).backward()
    assert mu.grad.shape == shape and logvar.grad.shape == shape
    assert genfast.gaussian_kl(mu, logvar, reduction="none", backend=name).shape == shape


@pytest.mark.parametrize("reduction", ["none", "sum", "mean", "batchmean"])
def test_gaussian_kl_alone(backend, reduction):
    name, device = backend
    mu, logvar = torch.randn(6, 11, device=device), torch.randn(6, 11, device=device)
    got = genfast.gaussian_kl(mu, logvar, reduction, backend=name)
    want = genfast.ops.gaussian_kl_ref(mu, logvar, reduction)
    assert_close(got, want)


def test_gradcheck_float64(backend):
    name, device = backend
    torch.manual_seed(1)
    mu = torch.randn(3, 5, dtype=torch.float64, device=device, requires_grad=True)
    logvar = torch.randn(3, 5, dtype=torch.float64, device=device, requires_grad=True)
    eps = torch.randn(2, 3, 5, dtype=torch.float64, device=device, requires_grad=True)
    seed = genfast.ops.reparam.draw_seed()
    op = genfast.ops.reparam._FORWARD_OPS[name]
    for kl_mode in (0, 1, 2):
        # In-kernel noise with a fixed seed is a deterministic function of (mu, logvar).
        assert torch.autograd.gradcheck(
            lambda m, lv: op(m, lv, None, seed, 2, True, kl_mode), (mu, logvar))
        assert torch.autograd.gradcheck(
            lambda m, lv, e: op(m, lv, e, seed, 2, True, kl_mode), (mu, logvar, eps))
    assert torch.autograd.gradcheck(lambda m, lv: op(m, lv, None, seed, 0, False, 2), (mu, logvar))


def test_opcheck(backend):
    name, device = backend
    op = genfast.ops.reparam._FORWARD_OPS[name]
    mu = torch.randn(4, 9, device=device, requires_grad=True)
    logvar = torch.randn(4, 9, device=device, requires_grad=True)
    seed = torch.tensor([5, 9], dtype=torch.int64)
    eps = torch.randn(3, 4, 9, device=device)
    for args in [(mu, logvar, None, seed, 0, True, 2), (mu, logvar, eps, seed, 3, True, 1),
                 (mu, logvar, None, seed, 2, True, 0), (mu, logvar, None, seed, 0, False, 2),
                 (mu.double(), logvar.double(), None, seed, 0, True, 1)]:
        torch.library.opcheck(op, args)


class TestBadInput:
    mu = torch.randn(4, 3)

    @pytest.mark.parametrize("kwargs,error,match", [
        (dict(logvar=torch.randn(4, 4)), ValueError, "same shape"),
        (dict(logvar=torch.randn(4, 3).double()), TypeError, "same dtype"),
        (dict(logvar=torch.randint(0, 3, (4, 3))), TypeError, "must be float16"),
        (dict(logvar=torch.randn(4, 3, device="meta")), ValueError, "logvar is on meta"),
        (dict(eps=torch.randn(4, 4)), ValueError, "eps must have z's shape"),
        (dict(eps=torch.randn(4, 3), num_samples=2), ValueError, r"z's shape \(2, 4, 3\)"),
        (dict(eps=torch.randn(4, 3).double()), TypeError, "eps must have mu's dtype"),
        (dict(num_samples=0), ValueError, "num_samples"),
        (dict(num_samples=True), ValueError, "num_samples"),
        (dict(reduction="avg"), ValueError, "reduction"),
        (dict(backend="gpu"), ValueError, "unknown backend"),
        (dict(backend="cuda"), ValueError, "backend 'cuda' cannot run"),
    ])
    def test_clear_errors(self, kwargs, error, match):
        if kwargs.get("backend") == "cuda" and not genfast.backends()["cuda"].available:
            pytest.skip("needs the cuda backend to be available, to reach the device check")
        logvar = kwargs.pop("logvar", torch.randn(4, 3))
        with pytest.raises(error, match=match):
            genfast.reparameterize_kl(self.mu, logvar, **kwargs)

    def test_integer_mu_and_scalar_batchmean(self):
        with pytest.raises(TypeError, match="mu must be"):
            genfast.reparameterize(torch.ones(3, dtype=torch.long), torch.ones(3))
        with pytest.raises(ValueError, match="batchmean"):
            genfast.gaussian_kl(torch.tensor(1.0), torch.tensor(0.0), "batchmean")

    def test_the_op_itself_checks_its_arguments(self):
        op = torch.ops.genfast.gaussian_sample_kl
        with pytest.raises(RuntimeError, match="seed must be an int64 CPU tensor"):
            op(self.mu, self.mu, None, torch.zeros(3, dtype=torch.int64), 0, True, 2)
        with pytest.raises(RuntimeError, match="kl_mode"):
            op(self.mu, self.mu, None, torch.zeros(2, dtype=torch.int64), 0, True, 5)


def test_gaussian_sample_module(backend):
    name, device = backend
    layer = genfast.nn.GaussianSample(reduction="batchmean", backend=name)
    assert layer.state_dict() == {}
    mu, logvar = torch.randn(8, 4, device=device), torch.randn(8, 4, device=device)
    eps = torch.randn(8, 4, device=device)
    z, kl = layer(mu, logvar, eps)
    z_ref, kl_ref = reparameterize_kl_ref(mu, logvar, eps=eps, reduction="batchmean")
    assert_close(z, z_ref)
    assert_close(kl, kl_ref)
    quiet = genfast.nn.GaussianSample(sample_in_eval=False, backend=name).eval()
    assert torch.equal(quiet(mu, logvar)[0], mu)


class _HostPhiloxGenerator:
    """Stands in for a CUDA generator outside graph capture (none is needed to check the
    arithmetic): philox_state reserves counters as torch documents it, on the host."""

    device = torch.device("cuda")

    def __init__(self, seed, offset):
        self.seed, self.offset, self.reserved = seed, offset, []

    def philox_state(self, increment):
        start = self.offset
        self.offset = (start + -(-increment // 4) * 4) % 2**64
        self.reserved.append((start, self.offset))
        as_int64 = start - 2**64 if start >= 2**63 else start
        return (torch.tensor([self.seed]), torch.tensor([as_int64]), torch.tensor([0]))


@pytest.mark.parametrize("offset", [0, 8, 6, 2**63 + 8])
def test_cuda_generator_seed_is_a_host_reservation(offset):
    """A CUDA generator's seed pair comes from its host-side philox state (no device copy, no
    synchronisation): each call's counters lie inside what it reserved, and calls do not
    overlap."""
    generator = _HostPhiloxGenerator(seed=-12345, offset=offset)
    counters = []
    for numel in (10, 1, 37):
        key, counter = genfast.ops.reparam.draw_seed(generator, numel).tolist()
        start, end = generator.reserved[-1]
        assert key == -12345
        assert start <= 4 * counter and 4 * (counter + -(-numel // 4)) <= end
        counters.append((counter, counter + -(-numel // 4)))
    assert all(a[1] <= b[0] for a, b in zip(counters, counters[1:]))


@requires_cuda
def test_cuda_generator_draw_does_not_synchronise():
    if not genfast.backends()["triton"].available:
        pytest.skip(f"triton unavailable: {genfast.backends()['triton'].reason}")
    generator = torch.Generator(device="cuda").manual_seed(7)
    mu, logvar = torch.zeros(4, 9, device="cuda"), torch.zeros(4, 9, device="cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        first = genfast.reparameterize(mu, logvar, generator=generator, backend="triton")
        second = genfast.reparameterize(mu, logvar, generator=generator, backend="triton")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    generator.manual_seed(7)
    again = genfast.reparameterize(mu, logvar, generator=generator, backend="triton")
    assert torch.equal(first, again) and not torch.equal(first, second)
