"""The Triton masked convolution's precision follows torch's flag for convolutions (issue 19).

float32 runs on TF32 tensor cores exactly when torch lets cuDNN use TF32 for convolutions (the
precision the reference itself runs at on a GPU), IEEE float32 otherwise. Here the launches are
watched on the interpreter (which computes tl.dot in full precision, so the results match the
reference either way); on a GPU the error against a float64 result is measured. That the TF32
variants contain TF32 MMA instructions and the IEEE ones none is checked on the compiled PTX in
tests/test_triton_aot.py.
"""
import pytest
import torch

import genfast
from genfast.ops.masked_conv import masked_conv2d_ref
from conftest import assert_close, requires_cuda

requires_triton = pytest.mark.skipif(not genfast.backends()["triton"].available,
                                     reason=f"triton unavailable: "
                                            f"{genfast.backends()['triton'].reason}")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def conv_tf32():
    """Sets torch's TF32 permission for convolutions for the test, then restores it (through
    the legacy flag, which sets conv and rnn alike, as tests/conftest.py left them)."""
    saved = torch.backends.cudnn.allow_tf32

    def set_to(allowed: bool, legacy: bool = True):
        if legacy:
            torch.backends.cudnn.allow_tf32 = allowed
        else:
            torch.backends.cudnn.conv.fp32_precision = "tf32" if allowed else "ieee"

    yield set_to
    torch.backends.cudnn.allow_tf32 = saved


@requires_triton
@pytest.mark.parametrize("legacy", [True, False], ids=["allow_tf32", "fp32_precision"])
def test_float32_precision_follows_the_conv_flag(conv_tf32, legacy):
    from genfast.kernels import _masked_conv_host as host

    for allowed in (True, False, True):
        conv_tf32(allowed, legacy)
        assert host.variant_key(torch.float32) == ("tf32" if allowed else "ieee")
    # Other dtypes are not float32: the flag does not apply to them.
    conv_tf32(False, legacy)
    assert [host.variant_key(t) for t in (torch.bfloat16, torch.float16, torch.float64)] == \
        ["bf16", "fp16", "fp64"]


@requires_triton
def test_mixed_flag_apis_do_not_raise(conv_tf32):
    """torch raises on reading allow_tf32 when conv and rnn differ; the launcher reads the conv
    flag alone."""
    from genfast.kernels import _masked_conv_host as host

    conv_tf32(True)
    torch.backends.cudnn.rnn.fp32_precision = "ieee"
    try:
        assert host.variant_key(torch.float32) == "tf32"
    finally:
        torch.backends.cudnn.rnn.fp32_precision = "tf32"


class _LaunchWatch:
    """Stands in for a Triton kernel: records each launch's PRECISION and runs the kernel."""

    def __init__(self, kernel, launches):
        self.kernel, self.launches = kernel, launches

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.launches.append(kwargs["PRECISION"])
            return self.kernel[grid](*args, **kwargs)
        return launch


@requires_triton
@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_every_pass_launches_at_the_flagged_precision(conv_tf32, monkeypatch, dtype):
    from genfast.kernels import masked_conv as kernels

    launches = []
    for name in ("_gather_conv_kernel", "_grad_weight_kernel"):
        monkeypatch.setattr(kernels, name, _LaunchWatch(getattr(kernels, name), launches))
    torch.manual_seed(0)
    x = torch.randn(2, 6, 5, 7, device=DEVICE, dtype=dtype, requires_grad=True)
    weight = torch.randn(9, 6, 3, 3, device=DEVICE, dtype=dtype, requires_grad=True)
    for allowed in (True, False):
        conv_tf32(allowed)
        launches.clear()
        y = genfast.masked_conv2d(x, weight, None, "B", data_channels=3, backend="triton")
        torch.autograd.grad(y.square().sum(), [x, weight])
        want = "tf32" if allowed and dtype == torch.float32 else "ieee"
        assert launches == [want] * 3, launches  # forward, grad-input, grad-weight


def _relative_error(got, want64):
    return ((got.double() - want64).abs().max() / want64.abs().max()).item()


@requires_cuda
@requires_triton
def test_tf32_error_is_the_references(conv_tf32):
    """On a GPU with TF32 allowed, the kernel's float32 error against float64 is about cuDNN's
    TF32 error (within 2x), and with TF32 off it is float32's."""
    torch.manual_seed(0)
    x = torch.randn(4, 64, 16, 16, device="cuda")
    weight = torch.randn(64, 64, 7, 7, device="cuda") / (64 * 49) ** 0.5
    y64 = masked_conv2d_ref(x.double(), weight.double(), None, "A")
    conv_tf32(True)
    fast_tf32 = _relative_error(genfast.masked_conv2d(x, weight, None, "A", backend="triton"),
                                y64)
    ref_tf32 = _relative_error(masked_conv2d_ref(x, weight, None, "A"), y64)
    assert fast_tf32 <= 2 * ref_tf32 + 1e-6
    conv_tf32(False)
    y = genfast.masked_conv2d(x, weight, None, "A", backend="triton")
    assert _relative_error(y, y64) < 1e-5
    assert_close(y, masked_conv2d_ref(x, weight, None, "A"), y64)
