"""Shared fixtures: which backends run here, on which device, and the tolerance table.

Without a GPU, Triton kernels run under the CPU interpreter; TRITON_INTERPRET must be set before
anything imports triton, so it is set here, before genfast is imported.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import genfast  # noqa: E402

HAS_CUDA = torch.cuda.is_available()
# The tests that run on a CUDA device carry this marker: skipped without one (see
# pytest_collection_modifyitems), and what `pytest -m requires_cuda` (.ci/gpu_check.py) selects.
requires_cuda = pytest.mark.requires_cuda

if HAS_CUDA:
    # PyTorch may run float32 convolutions (cuDNN's default) and matmuls on TF32 tensor cores,
    # with a 10-bit mantissa: a kernel held to such a "float32" reference at float32 tolerances
    # fails for the wrong reason. The references of the tests run in IEEE float32; genfast's own
    # kernels compute IEEE float32 whatever these flags say, but Triton's masked convolution,
    # which follows the convolution flag as the reference does (README, "Building on a GPU
    # machine"; tests/test_tensor_cores.py).
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("requires_cuda") is not None:
            item.add_marker(skip)


def _backend_param(name: str, device: str, cpu_isa: str | None = None):
    info = genfast.backends()[name]
    marks = [requires_cuda] if device == "cuda" else []
    if name == "triton" and device == "cpu":
        marks.append(pytest.mark.slow)  # Triton's CPU interpreter runs a kernel in Python
    if not info.available:
        marks.append(pytest.mark.skip(reason=f"{name} unavailable: {info.reason}"))
    if cpu_isa is not None:
        marks.append(pytest.mark.cpu_isa(cpu_isa))  # _cpu_isa_level sets it for the test
    suffix = f"-{cpu_isa}" if cpu_isa else ""
    return pytest.param((name, device), id=f"{name}-{device}{suffix}", marks=marks)


def _lower_cpu_isas() -> list[str]:
    """The CPU kernels' ISA levels below the one in use that this CPU can run (csrc/cpu/isa.h):
    every cpu-backend test runs at each of them too."""
    try:
        levels = genfast.cpu_isa_levels()
        return levels[: levels.index(genfast.cpu_isa())]
    except RuntimeError:  # no extension: the cpu backend params skip anyway
        return []


# Every fast backend with the device it is tested on here; the triton kernels run on the
# interpreter without a GPU, and compiled on a GPU machine. The cpu backend runs at the best ISA
# level of this CPU (id cpu-cpu) and at each lower one (id cpu-cpu-avx2, ...).
FAST_BACKENDS = [
    _backend_param("cpu", "cpu"),
    *[_backend_param("cpu", "cpu", level) for level in _lower_cpu_isas()],
    _backend_param("triton", "cuda" if HAS_CUDA else "cpu"),
    _backend_param("cuda", "cuda"),
]

# (rtol, atol) for comparing a kernel with the reference computed in the same dtype.
TOLERANCES = {
    torch.float64: (1e-12, 1e-12),
    torch.float32: (1e-5, 1e-5),
}
LOW_PRECISION = (torch.float16, torch.bfloat16)


def _assert_near_float64(actual, expected, reference64, context=""):
    """The kernel's error against the float64 result is at most twice the reference's own, plus
    one rounding at the output's magnitude."""
    kernel_err = (actual.double() - reference64).abs().max().item()
    ref_err = (expected.double() - reference64).abs().max().item()
    one_rounding = torch.finfo(actual.dtype).eps * reference64.abs().max().item()
    assert kernel_err <= 2 * ref_err + one_rounding, (
        f"{context}error {kernel_err} against float64 > 2 x the reference's {ref_err} + "
        f"{one_rounding}")


def assert_close(actual, expected, reference64=None):
    """Kernel against reference: the dtype's tolerance, or for float16/bfloat16 the
    flash-attention rule: the kernel's error against a float64 reference is at most twice the
    error of the reference itself run in that low precision, plus one rounding at the output's
    magnitude (with a handful of elements the reference can be exact by luck). A float32 result
    given a float64 reference passes either test."""
    if actual.dtype in LOW_PRECISION:
        assert reference64 is not None, "low-precision checks need a float64 reference"
        _assert_near_float64(actual, expected, reference64)
        return
    rtol, atol = TOLERANCES[actual.dtype]
    if reference64 is not None and not torch.allclose(actual, expected, rtol=rtol, atol=atol):
        # A long float32 sum (a weight's gradient over every pixel) rounds differently in the
        # kernel and in the reference, each off the exact result by more than the tolerance:
        # the kernel must then be as near the float64 result as the reference is.
        _assert_near_float64(actual, expected, reference64,
                             f"not within rtol {rtol}, atol {atol} of the reference, and its ")
    else:
        torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)


def assert_all_close(fast, ref, ref64, dtype):
    """assert_close on matching lists of results (None where an input had no gradient), each
    with its dtype and shape; the low-precision rule for float16/bfloat16 runs, including for
    their float32 results (a cell state and its gradient), and float32 runs may fall back on it
    (see assert_close)."""
    for got, want, want64 in zip(fast, ref, ref64):
        if want is None:
            assert got is None
            continue
        assert got.dtype == want.dtype and got.shape == want.shape
        if dtype in LOW_PRECISION:
            assert_close(got.to(dtype), want.to(dtype), want64)
        else:
            assert_close(got, want, want64 if dtype == torch.float32 else None)


@pytest.fixture(params=FAST_BACKENDS)
def backend(request):
    """(backend name, device) for each fast backend, skipped where it cannot run; the cpu
    backend at each ISA level this CPU has."""
    return request.param


@pytest.fixture(autouse=True)
def _cpu_isa_level(request):
    """Runs a test marked cpu_isa(level) (FAST_BACKENDS' lower-level cpu params, however a
    module parametrizes them) with the CPU kernels at that level."""
    marker = request.node.get_closest_marker("cpu_isa")
    if marker is None:
        yield
    else:
        with genfast.use_cpu_isa(marker.args[0]):
            yield


def check_compiled_training(model, reference, x, lr, steps):
    """``model.loss`` under torch.compile(fullgraph=True) against ``reference.loss`` (the same
    weights on the reference backend): loss and every gradient agree, and ``steps`` Adam steps
    through the compiled loss lower it."""
    reference.load_state_dict(model.state_dict())
    torch._dynamo.reset()
    compiled = torch.compile(model.loss, fullgraph=True)
    loss = compiled(x)
    loss.backward()
    loss_ref = reference.loss(x)
    loss_ref.backward()
    assert_close(loss.detach(), loss_ref.detach())
    for p, p_ref in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-4, atol=1e-5)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        step_loss = compiled(x)
        step_loss.backward()
        optimizer.step()
        losses.append(step_loss.item())
    assert losses[-1] < losses[0]
