"""Precision on a GPU: genfast's float32 kernels compute in IEEE float32 whatever torch's TF32
flags say (tests/conftest.py turns TF32 off for the references; here it is turned on), so they
stay within float32 tolerance of a float64 result where a TF32 convolution would not. The one
exception is Triton's masked convolution, which runs TF32 exactly when the reference may
(tests/test_tensor_cores.py)."""
import pytest
import torch

import genfast
from genfast.ops.lstm_row import lstm_rows_ref
from genfast.ops.masked_conv import masked_conv2d_ref
from conftest import requires_cuda


@pytest.fixture
def tf32_allowed():
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _relative_error(got, want64):
    return ((got.double() - want64).abs().max() / want64.abs().max()).item()


@requires_cuda
@pytest.mark.parametrize("name", ["cuda"])  # Triton follows the TF32 flags (test_tensor_cores*)
def test_float32_kernels_ignore_tf32(tf32_allowed, name):
    if not genfast.backends()[name].available:
        pytest.skip(f"{name} unavailable: {genfast.backends()[name].reason}")
    torch.manual_seed(0)
    x = torch.randn(4, 64, 16, 16, device="cuda")
    weight = torch.randn(64, 64, 7, 7, device="cuda") / (64 * 49) ** 0.5
    y = genfast.masked_conv2d(x, weight, None, "A", backend=name)
    y64 = masked_conv2d_ref(x.double(), weight.double(), None, "A")
    assert _relative_error(y, y64) < 1e-5
    gates_in = torch.randn(2, 64, 5, 24, device="cuda")
    state_weight = torch.randn(64, 16, 3, device="cuda") / 48 ** 0.5
    h, _ = genfast.lstm_rows(gates_in, state_weight, backend=name)
    h64, _ = lstm_rows_ref(gates_in.double(), state_weight.double())
    assert _relative_error(h, h64) < 1e-5
