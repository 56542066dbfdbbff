"""The CUDA kernels of genfast::gaussian_sample_kl: built and registered (checked without a GPU),
and, on a GPU, the paths the small shapes of test_reparam.py do not reach: the grid-stride loop,
a deterministic summed KL, unaligned storage and the in-kernel noise against the CPU kernel."""
import pytest
import torch

import genfast
from genfast import _ext
from genfast.ops.reparam import KL_ELEMENTWISE, KL_SUM, gaussian_kl_ref, reparameterize_ref
from conftest import requires_cuda

OPS = ("gaussian_sample_kl", "gaussian_sample_kl_backward")


@pytest.mark.skipif(_ext.LOAD_ERROR is not None, reason="genfast._C did not load")
def test_cuda_build_registers_the_kernels():
    built_with_cuda = _ext.BUILD_INFO is not None and _ext.BUILD_INFO.WITH_CUDA
    for op in OPS:
        assert _ext.has_kernel(op, "CUDA") == built_with_cuda, op
    if built_with_cuda and not torch.cuda.is_available():
        assert genfast.backends()["cuda"].reason == "no CUDA device is visible"


@requires_cuda
def test_summed_kl_is_deterministic_past_the_grid_cap():
    # More chunks of 4 than 8192 blocks x 256 threads, and a ragged tail.
    numel = 8192 * 256 * 4 * 2 + 5
    mu = torch.randn(numel, device="cuda")
    logvar = 0.5 * torch.randn(numel, device="cuda")
    first = genfast.gaussian_kl(mu, logvar, backend="cuda")
    again = genfast.gaussian_kl(mu, logvar, backend="cuda")
    assert torch.equal(first, again)
    expected = gaussian_kl_ref(mu.double(), logvar.double())
    torch.testing.assert_close(first.double(), expected, rtol=1e-6, atol=0)
    elementwise = genfast.gaussian_kl(mu, logvar, reduction="none", backend="cuda")
    torch.testing.assert_close(elementwise, gaussian_kl_ref(mu, logvar, reduction="none"))


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64], ids=str)
def test_unaligned_storage(dtype):
    # Views one element into their storage: the kernels must fall back to scalar accesses.
    mu = torch.randn(1 + 4 * 300, device="cuda", dtype=dtype)[1:]
    logvar = torch.randn(1 + 4 * 300, device="cuda", dtype=dtype)[1:]
    eps = torch.randn(1 + 2 * 4 * 300, device="cuda", dtype=dtype)[1:].view(2, -1)
    z, kl = genfast.reparameterize_kl(mu, logvar, eps=eps, num_samples=2, reduction="none",
                                      backend="cuda")
    tol = dict(rtol=1e-2, atol=1e-2) if dtype == torch.float16 else {}
    torch.testing.assert_close(z, reparameterize_ref(mu, logvar, eps, num_samples=2), **tol)
    torch.testing.assert_close(kl, gaussian_kl_ref(mu, logvar, reduction="none"), **tol)


@requires_cuda
@pytest.mark.parametrize("shape", [(7,), (5, 13), (3, 1031)], ids=str)
@pytest.mark.parametrize("num_samples", [0, 3])
@pytest.mark.parametrize("kl_mode", [KL_ELEMENTWISE, KL_SUM])
def test_in_kernel_noise_matches_the_cpu_kernel(shape, num_samples, kl_mode):
    """Forward and fused backward with in-kernel noise: numel % 4 != 0 puts samples after the
    first across philox blocks, and backward must regenerate the noise forward drew."""
    op = torch.ops.genfast.gaussian_sample_kl_backward
    seed = torch.tensor([0x1234_5678_9ABC, 2**40 - 3], dtype=torch.int64)
    mu, logvar = torch.randn(shape), 0.5 * torch.randn(shape)
    z_shape = (num_samples, *shape) if num_samples else shape
    grad_z = torch.randn(z_shape)
    grad_kl = torch.randn(shape if kl_mode == KL_ELEMENTWISE else ())
    outs = {}
    for device in ("cpu", "cuda"):
        args = [t.to(device) for t in (mu, logvar)]
        z, kl = torch.ops.genfast.gaussian_sample_kl(*args, None, seed, num_samples, True, kl_mode)
        grads = op(grad_z.to(device), grad_kl.to(device), *args, None, seed, num_samples, True,
                   kl_mode)
        outs[device] = [t.cpu() for t in (z, kl, *grads)]
    for got, want in zip(outs["cuda"], outs["cpu"]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
