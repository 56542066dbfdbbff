"""Every op of the cuda backend, run by the CUDA kernels of csrc/cuda under the test suite's CUDA
emulator (tests/cuda_emu) on the CPU, against the references: forward and backward, every dtype
the CUDA path takes, small odd shapes that reach each tiling and split path, with the threads in
forward, reverse and random order (a missing barrier gives a wrong answer in some order). Plus
gradcheck and opcheck through the emulated ops.

The emulator shows what the kernels compute; it says nothing of their speed, register use or
code generation (tests/test_triton_aot.py and nvcc in CI cover compiling for the real targets).
"""
import sys
import zlib

import pytest
import torch

from cuda_emu import ORDERS, checks, schedule
from genfast.ops.lstm_row_conv import skewed_extent
from genfast.ops.masked_conv import conv_mask, masked_conv2d_ref
from genfast.ops.reparam import KL_ELEMENTWISE, KL_NONE, KL_SUM

pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="the CUDA emulator runs its threads as Linux ucontext fibers")

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


@pytest.fixture(params=ORDERS)
def order(request):
    """Each test runs with the threads of every block, and the blocks, in this order (random:
    seeded by the test's name, so a failure repeats)."""
    with schedule(request.param, zlib.crc32(request.node.nodeid.encode())):
        yield request.param


# ----------------------------------------------------------------------------- masked conv

# (batch, in, out, height, width, kh, kw, mask, data_channels, dilation)
CONV_CASES = [
    (2, 5, 7, 6, 9, 3, 3, "A", 1, 1),    # 108 pixels: two pixel tiles; 20-long reduction: 2 chunks
    (1, 3, 13, 5, 4, 7, 7, "A", 3, 1),   # RGB groups that do not split the channels evenly
    (3, 17, 70, 4, 3, 5, 5, "B", 1, 2),  # dilation 2; 70 output channels: two channel tiles
    (2, 11, 10, 1, 6, 3, 3, "B", 3, 1),  # a one-row image
    (2, 6, 9, 4, 6, 2, 4, "B", 3, 1),    # an even, rectangular kernel
    (3, 4, 6, 13, 11, 3, 3, "B", 1, 1),  # 429 pixels: grad-weight's pixel sum split in 3 parts
    (2, 5, 6, 5, 7, 3, 3, "V", 1, 1),    # the vertical stack
    (1, 4, 9, 6, 3, 5, 5, "V", 1, 2),
    (3, 2, 5, 2, 3, 1, 3, "A", 1, 1),    # 6-pixel images: a 16-pixel chunk spans images
    (1, 70, 3, 3, 1, 3, 3, "B", 1, 1),   # one pixel wide; grad-input has 70 channels: two tiles
]


@pytest.mark.parametrize("case", CONV_CASES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_masked_conv(order, case, dtype):
    checks.seed("masked_conv", case, str(dtype))
    checks.check_masked_conv(case, dtype)


@pytest.mark.parametrize("window", [(0, 1, 0, 9), (3, 4, 2, 3), (2, 5, 0, 9), (5, 6, 8, 9)],
                         ids=str)
@pytest.mark.parametrize("case", [CONV_CASES[0], CONV_CASES[4]], ids=str)
def test_masked_conv_window(order, case, window):
    """A window of the output: forward, grad-input over its receptive field, grad-weight."""
    _, _, _, h, w, *_ = case
    window = (min(window[0], h - 1), min(window[1], h), min(window[2], w - 1), min(window[3], w))
    checks.seed("masked_conv_window", case, window)
    checks.check_masked_conv(case, torch.float64, window=window)


@pytest.mark.parametrize("case", [CONV_CASES[0], CONV_CASES[1], CONV_CASES[3]], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_masked_conv_channels_last(order, case, dtype):
    """channels_last input and weight: pixel-major stores, strided weight packing."""
    checks.seed("masked_conv_channels_last", case, str(dtype))
    checks.check_masked_conv(case, dtype, channels_last=True)


# ----------------------------------------------------------------------------- lstm_rows

# (batch, hidden, rows, length, k, pad_left)
ROW_CASES = [
    (2, 5, 3, 7, 3, 1),
    (1, 13, 4, 1, 2, 0),    # one-position rows
    (3, 8, 5, 2, 3, 2),     # causal padding, pad_left = k - 1
    (2, 3, 1, 6, 5, 4),     # a single row
    (1, 4, 6, 9, 1, 0),
    (2, 33, 3, 35, 3, 1),   # two tiles of channels and of positions; 7 reduction chunks
    (2, 5, 8, 17, 2, 1),    # 272 (image, row, position) triples: grad-weight in 2 parts
]


@pytest.mark.parametrize("case", ROW_CASES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_lstm_rows(order, case, dtype):
    checks.seed("lstm_rows", case, str(dtype))
    checks.check_lstm_rows(case, dtype)


@pytest.mark.parametrize("case", [ROW_CASES[0], ROW_CASES[6]], ids=str)
def test_lstm_rows_zero_states(order, case):
    checks.seed("lstm_rows_zero_states", case)
    checks.check_lstm_rows(case, torch.float32, states=False)


@pytest.mark.parametrize("length, width", [(5, 4), (7, 1), (3, 6)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_lstm_rows_skewed_map(order, length, width, dtype):
    """The Diagonal BiLSTM's recurrence on CUDA: k = 2, pad_left = 1, over the L + W - 1
    diagonals of a skewed map whose padding is zero."""
    rows = length + width - 1
    live, _ = skewed_extent(rows, length, width)
    checks.seed("lstm_rows_skewed", length, width, str(dtype))
    checks.check_lstm_rows((2, 6, rows, length, 2, 1), dtype, states=False,
                           transform=lambda gates_in: gates_in * live.to(gates_in.dtype))


# ----------------------------------------------------------------------------- reparameterize

REPARAM_SHAPES = [(1,), (7,), (5, 13), (3, 1031)]  # (3, 1031): 4 blocks, a ragged last chunk
KL_MODES = [KL_NONE, KL_ELEMENTWISE, KL_SUM]


@pytest.mark.parametrize("shape", REPARAM_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("num_samples", [0, 3])
@pytest.mark.parametrize("kl_mode", KL_MODES)
def test_reparam_given_eps(order, shape, dtype, num_samples, kl_mode):
    checks.seed("reparam", shape, str(dtype), num_samples, kl_mode)
    checks.check_reparam_given_eps(shape, dtype, num_samples, kl_mode)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64], ids=str)
def test_reparam_unaligned_storage(order, dtype):
    """Views one element into their storage: the kernels fall back to scalar accesses."""
    checks.seed("reparam_unaligned", str(dtype))
    checks.check_reparam_given_eps((4, 300), dtype, 2, KL_ELEMENTWISE, unaligned=True)


@pytest.mark.parametrize("shape", [(7,), (5, 13), (3, 1031)], ids=str)
@pytest.mark.parametrize("num_samples", [0, 3])
@pytest.mark.parametrize("kl_mode", [KL_ELEMENTWISE, KL_SUM])
def test_reparam_noise_matches_the_cpu_kernel(order, shape, num_samples, kl_mode):
    """In-kernel Philox noise: numel % 4 != 0 puts the samples after the first across philox
    blocks, and the backward must regenerate the noise the forward drew."""
    checks.seed("reparam_noise", shape, num_samples, kl_mode)
    checks.check_reparam_noise(shape, num_samples, kl_mode)


@pytest.mark.slow
def test_reparam_past_the_grid_cap():
    """More chunks of 4 than the 8192 x 256 threads of the capped grid: the grid-stride loops of
    the forward and backward kernels (about 2 million emulated threads each way)."""
    checks.seed("reparam_grid_cap")
    checks.check_reparam_noise((8192 * 256 * 4 + 4 * 1000 + 3,), 0, KL_ELEMENTWISE)


def test_kl_alone_matches_the_cpu_kernel(order):
    checks.seed("kl_alone")
    checks.check_reparam_noise((3, 1031), 0, KL_SUM, compute_z=False)


# ----------------------------------------------------------------------------- gated

GATED_CASES = [((1, 2, 1, 1), 1), ((2, 6, 5, 7), 1), ((5, 22), -1), ((8, 3), 0),
               ((2, 3, 2, 5, 6), -1), ((2, 130, 3, 3), 1)]


@pytest.mark.parametrize("shape, dim", GATED_CASES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_gated(order, shape, dim, dtype):
    checks.seed("gated", shape, dim, str(dtype))
    checks.check_gated(shape, dim, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_gated_channels_last(order, dtype):
    checks.seed("gated_channels_last", str(dtype))
    checks.check_gated((2, 10, 3, 5), 1, dtype, channels_last=True)


# ----------------------------------------------------------------------------- logistic mixture

# (batch, channels, mixtures, height, width, levels): 300 pixels span three 128-thread blocks.
MIXTURE_CASES = [
    (2, 3, 5, 3, 7, 256),
    (1, 1, 10, 15, 20, 17),
    (3, 3, 1, 2, 2, 2),
]


@pytest.mark.parametrize("case", MIXTURE_CASES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_logistic_mixture(order, case, dtype):
    checks.seed("logistic_mixture", case, str(dtype))
    checks.check_logistic_mixture(case, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_logistic_mixture_tails(order, dtype):
    """Every component far from the data: the tiny-probability branch and the edge bins."""
    checks.seed("logistic_mixture_tails", str(dtype))
    checks.check_logistic_mixture((2, 3, 3, 4, 5, 256), dtype, tails=True)


@pytest.mark.parametrize("case", MIXTURE_CASES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_logistic_mixture_with_grad(order, case, dtype):
    checks.seed("logistic_mixture_with_grad", case, str(dtype))
    checks.check_logistic_mixture_with_grad(case, dtype)


# ----------------------------------------------------------------------------- categorical head

# (batch, features, colours, levels, height, width, colour layout): levels below, at and above
# a warp's 32 lanes, both layouts, batch 1, prime sides.
HEAD_CASES = [
    (1, 5, 1, 2, 3, 4, "contiguous"),
    (2, 6, 3, 17, 3, 5, "contiguous"),
    (2, 9, 3, 33, 2, 3, "interleaved"),
    (3, 7, 1, 40, 5, 1, "contiguous"),
]


@pytest.mark.parametrize("case", HEAD_CASES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_categorical_head(order, case, dtype):
    checks.seed("categorical_head", case, str(dtype))
    checks.check_categorical_head(case, dtype)


# ----------------------------------------------------------------------------- edge cases

def test_empty_and_tapless(order):
    """Empty batches and latents, an empty output window, and a 1x1 mask A (every tap hidden:
    the output is the bias): no launch of an empty grid, the reference's results."""
    checks.seed("empty")
    checks.check_masked_conv((0, 3, 4, 5, 6, 3, 3, "B", 1, 1), torch.float32)
    checks.check_masked_conv((2, 0, 4, 5, 6, 3, 3, "B", 1, 1), torch.float32)
    checks.check_masked_conv((2, 3, 4, 5, 6, 3, 3, "B", 1, 1), torch.float32, window=(1, 1, 0, 6))
    checks.check_masked_conv((2, 3, 4, 3, 6, 1, 1, "A", 1, 1), torch.float32)
    checks.check_masked_conv((2, 3, 6, 3, 6, 1, 1, "A", 3, 1), torch.float32)
    checks.check_lstm_rows((0, 3, 2, 4, 3, 1), torch.float32)
    checks.check_reparam_given_eps((0,), torch.float32, 2, KL_SUM)
    checks.check_reparam_given_eps((3, 0), torch.float32, 0, KL_ELEMENTWISE)
    checks.check_reparam_noise((0,), 2, KL_SUM)
    checks.check_gated((0, 4, 3), 1, torch.float32)
    checks.check_gated((2, 4, 0), 1, torch.float32)


@pytest.mark.parametrize("mask, data_channels, k", [("A", 3, 7), ("B", 3, 3), ("V", 1, 3),
                                                    ("A", 1, 5)])
def test_hidden_weights_never_leak(order, mask, data_channels, k):
    """NaN in every tap the mask hides: the kernels never read them (the output and dL/dx are
    those of the masked weight) and give them zero gradient."""
    checks.seed("hidden_weights", mask, data_channels, k)
    cin, cout = 2 * data_channels, 3 * data_channels
    x = torch.randn(2, cin, 6, 5, dtype=torch.float64, requires_grad=True)
    visible = conv_mask(cout, cin, k, k, mask, data_channels).bool()
    weight = torch.randn(cout, cin, k, k, dtype=torch.float64)
    poisoned = torch.where(visible, weight, float("nan")).requires_grad_()
    y = checks.emulated_masked_conv2d(x, poisoned, None, mask, data_channels)
    grad_y = torch.randn_like(y)
    grad_x, grad_w = torch.autograd.grad(y, (x, poisoned), grad_y)
    clean = (weight * visible).requires_grad_()
    x_ref = x.detach().requires_grad_()
    y_ref = masked_conv2d_ref(x_ref, clean, None, mask, data_channels)
    grad_x_ref, grad_w_ref = torch.autograd.grad(y_ref, (x_ref, clean), grad_y)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(grad_x, grad_x_ref)
    torch.testing.assert_close(grad_w, grad_w_ref * visible)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_lstm_rows_saturated_gates(order, dtype):
    checks.seed("lstm_saturated", str(dtype))
    checks.check_lstm_rows((2, 5, 4, 7, 3, 1), dtype, scale=30.0)


# ----------------------------------------------------------------------------- through autograd

def test_gradcheck_float64():
    """float64 gradcheck through each emulated op's autograd registration."""
    checks.seed("gradcheck")
    f64 = dict(dtype=torch.float64, requires_grad=True)
    x, w, b = torch.randn(1, 3, 4, 5, **f64), torch.randn(4, 3, 3, 3, **f64), torch.randn(4, **f64)
    assert torch.autograd.gradcheck(
        lambda *t: checks.emulated_masked_conv2d(*t, "B", data_channels=1), (x, w, b))
    gates, weight = torch.randn(2, 8, 3, 4, **f64), torch.randn(8, 2, 3, **f64)
    assert torch.autograd.gradcheck(lambda g, w: checks.emulated_lstm_rows(g, w, pad_left=1),
                                    (gates, weight))
    mu, logvar, eps = torch.randn(2, 7, **f64), torch.randn(2, 7, **f64), torch.randn(2, 7)
    no_seed = torch.zeros(2, dtype=torch.long)
    assert torch.autograd.gradcheck(
        lambda m, lv: checks.emulated_sample_kl(m, lv, eps.double(), no_seed, 0, True, KL_SUM),
        (mu, logvar))
    assert torch.autograd.gradcheck(lambda t: checks.emulated_ops().gated_activation(t, 1),
                                    (torch.randn(2, 6, 3, **f64),))
    images, params = checks.logistic_mixture_inputs(2, 3, 2, 2, 3, 256)
    assert torch.autograd.gradcheck(
        lambda p: checks.emulated_ops().logistic_mixture_nll(images, p, 256),
        (params.requires_grad_(),))


def test_opcheck():
    """torch.library.opcheck of each emulated op: schema, fake kernel and autograd agree."""
    ops = checks.emulated_ops()
    checks.seed("opcheck")
    x, w, b = torch.randn(1, 3, 4, 5), torch.randn(4, 3, 3, 3), torch.randn(4)
    seed = torch.tensor([3, 5], dtype=torch.long)
    gates, weight, h0, c0 = (torch.randn(2, 8, 3, 4), torch.randn(8, 2, 3), torch.randn(2, 2, 4),
                             torch.randn(2, 2, 4))
    cases = [
        (ops.masked_conv2d, (x.requires_grad_(), w.requires_grad_(), b, 0, 1, 1, [])),
        (ops.lstm_rows, (gates.requires_grad_(), weight.requires_grad_(), None, h0, c0, 1)),
        (ops.gaussian_sample_kl, (torch.randn(3, 5).requires_grad_(), torch.randn(3, 5), None,
                                  seed, 2, True, KL_ELEMENTWISE)),
        (ops.gated_activation, (torch.randn(2, 6, 3).requires_grad_(), 1)),
        (ops.logistic_mixture_nll, (torch.randint(0, 17, (2, 3, 2, 3)),
                                    torch.randn(2, 20, 2, 3).requires_grad_(), 17)),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args)
