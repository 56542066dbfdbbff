"""PixelCNN masked convolution: every fast backend against the reference, and causality."""
import zlib

import pytest
import torch
from torch import nn

import genfast
from genfast.ops.masked_conv import IMPLEMENTED, masked_conv2d_ref
from conftest import LOW_PRECISION, assert_close, check_compiled_training

# (batch, in, out, height, width, kh, kw, mask, data_channels, dilation): batch 1, 1-pixel-wide
# and non-square images, channel counts off multiples of 8 and of 3, kernels 1 to 7, even and
# rectangular kernels, dilation 2, RGB groups that do not split evenly.
CASES = [
    (2, 5, 7, 6, 9, 3, 3, "A", 1, 1),
    (1, 3, 13, 5, 4, 7, 7, "A", 3, 1),
    (3, 17, 33, 8, 1, 5, 5, "B", 1, 2),
    (2, 11, 10, 1, 6, 3, 3, "B", 3, 1),
    (1, 64, 64, 7, 7, 7, 7, "A", 1, 1),
    (2, 6, 9, 4, 6, 2, 4, "B", 3, 1),
    (2, 70, 40, 5, 8, 3, 3, "B", 1, 1),
    (2, 4, 4, 5, 5, 1, 1, "B", 1, 1),
    (1, 9, 20, 6, 5, 1, 3, "A", 3, 1),
    (2, 8, 5, 9, 7, 5, 3, "A", 1, 2),
    (2, 5, 6, 5, 7, 3, 3, "V", 1, 1),
    (1, 4, 9, 6, 3, 5, 5, "V", 1, 2),
]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def _seed(*key):
    torch.manual_seed(zlib.crc32(repr(key).encode()))


def _skip_unimplemented(name):
    if name not in IMPLEMENTED:
        pytest.skip(f"masked_conv2d has no {name} backend yet")


def _inputs(case, device, dtype=torch.float64):
    b, cin, cout, h, w, kh, kw, *_ = case
    x = torch.randn(b, cin, h, w, dtype=dtype, device=device)
    weight = torch.randn(cout, cin, kh, kw, dtype=dtype, device=device) / (cin * kh * kw) ** 0.5
    bias = torch.randn(cout, dtype=dtype, device=device)
    return x, weight, bias


def _forward_backward(fn, x, weight, bias, grad_y, dtype, **kwargs):
    x, weight, bias = (t.detach().to(dtype).requires_grad_() for t in (x, weight, bias))
    y = fn(x, weight, bias, **kwargs)
    y.backward(grad_y.to(y.dtype))
    return y.detach(), x.grad, weight.grad, bias.grad


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_matches_reference(backend, case, dtype):
    name, device = backend
    _skip_unimplemented(name)
    _seed(case, str(dtype))
    x, weight, bias = _inputs(case, device)
    kw = dict(mask_type=case[7], data_channels=case[8], dilation=case[9])
    grad_y = torch.randn(x.shape[0], weight.shape[0], *x.shape[2:], dtype=torch.float64,
                         device=device)
    fast = _forward_backward(genfast.masked_conv2d, x, weight, bias, grad_y, dtype,
                             backend=name, **kw)
    if dtype in LOW_PRECISION and device == "cpu":
        # CPU convolutions have no float16 kernels to hold the kernel to; compare with the
        # reference in float32, whose error is far below the low-precision rounding.
        ref = _forward_backward(masked_conv2d_ref, x, weight, bias, grad_y, torch.float32, **kw)
        ref = [t.to(dtype) for t in ref]
    else:
        ref = _forward_backward(masked_conv2d_ref, x, weight, bias, grad_y, dtype, **kw)
    # The float64 oracle sees the inputs rounded to dtype, as the low-precision run does.
    rounded = [t.to(dtype).double() for t in (x, weight, bias, grad_y)]
    ref64 = _forward_backward(masked_conv2d_ref, *rounded, torch.float64, **kw)
    for got, want, want64 in zip(fast, ref, ref64):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert_close(got, want, want64)


@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_channels_last_and_non_contiguous(backend, mask_type):
    name, device = backend
    _skip_unimplemented(name)
    _seed("channels_last", mask_type)
    x, weight, bias = _inputs((2, 6, 10, 7, 5, 3, 3), device, torch.float32)
    for x_in in (x.to(memory_format=torch.channels_last), x.transpose(2, 3).contiguous().transpose(2, 3),
                 x[:, ::2]):
        w_in = weight[:, ::2] if x_in.shape[1] != x.shape[1] else weight
        x_in = x_in.detach().requires_grad_()
        y = genfast.masked_conv2d(x_in, w_in, bias, mask_type, backend=name)
        y_ref = masked_conv2d_ref(x_in, w_in, bias, mask_type)
        assert_close(y, y_ref)
        g = torch.randn_like(y)
        (gx,) = torch.autograd.grad(y, x_in, g)
        (gx_ref,) = torch.autograd.grad(y_ref, x_in, g)
        assert_close(gx, gx_ref)


@pytest.mark.parametrize("window", [(0, 1, 0, 6), (3, 4, 2, 3), (2, 5, 0, 6), (4, 5, 5, 6),
                                    (1, 1, 0, 6)])
@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[5]], ids=str)
def test_window_is_part_of_the_full_output(backend, case, window):
    name, device = backend
    _skip_unimplemented(name)
    _seed("window", case, window)
    x, weight, bias = _inputs(case, device)
    h, w = x.shape[2:]
    window = (min(window[0], h), min(window[1], h), min(window[2], w), min(window[3], w))
    kw = dict(mask_type=case[7], data_channels=case[8], dilation=case[9], window=window)
    grad_y = torch.randn(x.shape[0], weight.shape[0], window[1] - window[0],
                         window[3] - window[2], dtype=torch.float64, device=device)
    fast = _forward_backward(genfast.masked_conv2d, x, weight, bias, grad_y, torch.float64,
                             backend=name, **kw)
    ref = _forward_backward(masked_conv2d_ref, x, weight, bias, grad_y, torch.float64, **kw)
    for got, want in zip(fast, ref):
        assert_close(got, want)
    x_cl = x.to(memory_format=torch.channels_last).requires_grad_()
    y = genfast.masked_conv2d(x_cl, weight, bias, backend=name, **kw)
    (gx,) = torch.autograd.grad(y, x_cl, grad_y)
    assert gx.is_contiguous(memory_format=torch.channels_last) or gx.shape[1] == 1


def _input_gradient_at(fn, x, i, j):
    """d(output[:, :, i, j]) / d(input), summed over batch and output channels of each group."""
    x = x.detach().requires_grad_()
    y = fn(x)
    (g,) = torch.autograd.grad(y[:, :, i, j].sum(), x)
    return g


@pytest.mark.parametrize("mask_type", ["A", "B"])
@pytest.mark.parametrize("kernel", [(3, 3), (5, 5), (7, 7), (2, 4)])
def test_causality_through_autograd(backend, mask_type, kernel):
    name, device = backend
    _skip_unimplemented(name)
    _seed("causal", mask_type, kernel)
    x = torch.randn(1, 4, 6, 7, dtype=torch.float64, device=device)
    weight = torch.randn(5, 4, *kernel, dtype=torch.float64, device=device)
    fn = lambda inp: genfast.masked_conv2d(inp, weight, None, mask_type, backend=name)  # noqa: E731
    h, w = x.shape[2:]
    for i in range(h):
        for j in range(w):
            seen = _input_gradient_at(fn, x, i, j).abs().sum(dim=(0, 1)) != 0  # [h, w]
            raster = torch.arange(h * w, device=device).view(h, w)
            here = i * w + j
            future = raster >= here if mask_type == "A" else raster > here
            assert not seen[future].any(), f"output ({i}, {j}) sees the future"
            if kernel[0] >= 3 and here > 0:  # a centred kernel always reaches some earlier pixel
                assert seen[raster < here].any(), f"output ({i}, {j}) sees no earlier pixel"


@pytest.mark.parametrize("kernel", [(3, 3), (5, 5), (1, 3)])
def test_vertical_mask_sees_its_row_and_above(backend, kernel):
    name, device = backend
    _skip_unimplemented(name)
    _seed("vertical", kernel)
    x = torch.randn(1, 3, 6, 7, dtype=torch.float64, device=device)
    weight = torch.randn(4, 3, *kernel, dtype=torch.float64, device=device)
    fn = lambda inp: genfast.masked_conv2d(inp, weight, None, "V", backend=name)  # noqa: E731
    reach_x = kernel[1] // 2
    for i, j in [(0, 0), (2, 3), (5, 6), (3, 1)]:
        seen = _input_gradient_at(fn, x, i, j).abs().sum(dim=(0, 1)) != 0
        rows, cols = torch.meshgrid(torch.arange(6), torch.arange(7), indexing="ij")
        reach = (rows <= i) & (rows >= i - kernel[0] // 2) & ((cols - j).abs() <= reach_x)
        assert torch.equal(seen.cpu(), reach), f"output ({i}, {j})"


@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_colour_groups_through_autograd(backend, mask_type):
    """At the current pixel, output group g sees input groups < g (mask A) or <= g (mask B)."""
    name, device = backend
    _skip_unimplemented(name)
    _seed("colour", mask_type)
    cin, cout = 7, 8  # groups of 3, 2, 2 inputs and 3, 3, 2 outputs: uneven on purpose
    x = torch.randn(2, cin, 4, 5, dtype=torch.float64, device=device)
    weight = torch.randn(cout, cin, 3, 3, dtype=torch.float64, device=device)
    group_in = torch.arange(cin) * 3 // cin
    group_out = torch.arange(cout) * 3 // cout
    i, j = 2, 3
    for co in range(cout):
        x_req = x.detach().requires_grad_()
        y = genfast.masked_conv2d(x_req, weight, None, mask_type, data_channels=3, backend=name)
        (g,) = torch.autograd.grad(y[:, co, i, j].sum(), x_req)
        seen = g[:, :, i, j].abs().sum(0) != 0  # per input channel, at the current pixel
        allowed = group_in < group_out[co] if mask_type == "A" else group_in <= group_out[co]
        assert torch.equal(seen.cpu(), allowed), f"output channel {co}: {seen} vs {allowed}"


@pytest.mark.parametrize("mask_type", ["A", "B"])
@pytest.mark.parametrize("data_channels", [1, 3])
def test_gradcheck(backend, mask_type, data_channels):
    name, device = backend
    _skip_unimplemented(name)
    _seed("gradcheck", mask_type, data_channels)
    x, weight, bias = _inputs((2, 4, 5, 4, 5, 3, 3), device)
    inputs = tuple(t.requires_grad_() for t in (x, weight, bias))
    fn = lambda *a: genfast.masked_conv2d(*a, mask_type, data_channels, 2, backend=name)  # noqa
    # The Triton interpreter is slow: check a random projection of the Jacobian there.
    fast_mode = name == "triton" and device == "cpu"
    assert torch.autograd.gradcheck(fn, inputs, fast_mode=fast_mode)
    window = lambda *a: genfast.masked_conv2d(*a, mask_type, data_channels,  # noqa: E731
                                              window=(1, 3, 2, 5), backend=name)
    assert torch.autograd.gradcheck(window, inputs, fast_mode=fast_mode)


@pytest.mark.parametrize("window", [[], [1, 3, 0, 4]])
def test_opcheck(backend, window):
    name, device = backend
    _skip_unimplemented(name)
    _seed("opcheck", str(window))
    x, weight, bias = _inputs((2, 5, 6, 4, 4, 3, 3), device, torch.float32)
    args = (x.requires_grad_(), weight.requires_grad_(), bias.requires_grad_(), 0, 1, 1, window)
    op = genfast.ops.masked_conv._FORWARD_OPS[name]
    torch.library.opcheck(op, args)
    torch.library.opcheck(op, (x, weight, None, 1, 1, 1, window))


def test_empty_and_tapless(backend):
    name, device = backend
    _skip_unimplemented(name)
    x = torch.randn(0, 3, 4, 4, device=device)
    weight = torch.randn(5, 3, 3, 3, device=device)
    assert genfast.masked_conv2d(x, weight, None, "A", backend=name).shape == (0, 5, 4, 4)
    # A 1x1 mask A with one colour group hides every tap: the output is the bias.
    x = torch.randn(2, 3, 4, 4, device=device, requires_grad=True)
    w1 = torch.randn(5, 3, 1, 1, device=device, requires_grad=True)
    bias = torch.randn(5, device=device)
    y = genfast.masked_conv2d(x, w1, bias, "A", backend=name)
    assert torch.equal(y, bias.view(1, 5, 1, 1).expand(2, 5, 4, 4))
    y.sum().backward()
    assert torch.count_nonzero(x.grad) == 0 and torch.count_nonzero(w1.grad) == 0
    # No input channels: every output is the bias, in the reference too.
    x0, w0 = torch.randn(2, 0, 4, 4, device=device), torch.randn(5, 0, 3, 3, device=device)
    expected = bias.view(1, 5, 1, 1).expand(2, 5, 4, 4)
    assert torch.equal(genfast.masked_conv2d(x0, w0, bias, "B", backend=name), expected)
    assert torch.equal(masked_conv2d_ref(x0, w0, bias, "B"), expected)


def test_bad_input_is_a_clear_error():
    x, weight = torch.randn(2, 3, 5, 5), torch.randn(4, 3, 3, 3)
    with pytest.raises(ValueError, match="batch, channels, height, width"):
        genfast.masked_conv2d(x[0], weight)
    with pytest.raises(ValueError, match="channels but weight expects"):
        genfast.masked_conv2d(torch.randn(2, 2, 5, 5), weight)
    with pytest.raises(TypeError, match="same dtype"):
        genfast.masked_conv2d(x.double(), weight)
    with pytest.raises(TypeError, match="float16, bfloat16"):
        genfast.masked_conv2d(x.long(), weight.long())
    with pytest.raises(ValueError, match="mask_type"):
        genfast.masked_conv2d(x, weight, mask_type="C")
    with pytest.raises(ValueError, match="bias"):
        genfast.masked_conv2d(x, weight, torch.randn(3))
    with pytest.raises(ValueError, match="window"):
        genfast.masked_conv2d(x, weight, window=(0, 6, 0, 5))
    with pytest.raises(ValueError, match="data_channels"):
        genfast.masked_conv2d(x, weight, data_channels=4)
    with pytest.raises(ValueError, match="dilation"):
        genfast.masked_conv2d(x, weight, dilation=0)
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="on"):
            genfast.masked_conv2d(x.cuda(), weight)


def test_module_is_a_drop_in_for_conv2d():
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 8, 5, padding=2)
    layer = genfast.nn.MaskedConv2d(6, 8, 5, mask_type="B", padding=2)
    layer.load_state_dict(conv.state_dict())
    assert list(layer.state_dict()) == ["weight", "bias"]
    x = torch.randn(3, 6, 9, 8)
    expected = masked_conv2d_ref(x, conv.weight, conv.bias, "B")
    assert_close(layer(x), expected)
    assert layer(x, window=(2, 3, 0, 8)).shape == (3, 8, 1, 8)
    with pytest.raises(ValueError, match="stride 1"):
        genfast.nn.MaskedConv2d(6, 8, 3, stride=2)
    with pytest.raises(ValueError, match="padding"):
        genfast.nn.MaskedConv2d(6, 8, 3, padding=0)
    with pytest.raises(ValueError, match="mask_type"):
        genfast.nn.MaskedConv2d(6, 8, 3, mask_type="b")


class TinyPixelCNN(nn.Module):
    """Mask A, two mask B layers and a 1x1 head: a Bernoulli PixelCNN on binary images."""

    def __init__(self, backend, channels=8):
        super().__init__()
        self.net = nn.Sequential(
            genfast.nn.MaskedConv2d(1, channels, 5, "A", backend=backend), nn.ReLU(),
            genfast.nn.MaskedConv2d(channels, channels, 3, "B", backend=backend), nn.ReLU(),
            genfast.nn.MaskedConv2d(channels, channels, 3, "B", backend=backend), nn.ReLU(),
            nn.Conv2d(channels, 1, 1))

    def loss(self, x):
        return nn.functional.binary_cross_entropy_with_logits(self.net(x), x)


@pytest.mark.slow
def test_compiled_pixelcnn_step(backend):
    name, device = backend
    _skip_unimplemented(name)
    if name == "triton" and device == "cpu":
        pytest.skip("torch.compile does not run Triton kernels on the CPU interpreter")
    torch.manual_seed(0)
    model = TinyPixelCNN(name).to(device)
    x = (torch.rand(4, 1, 7, 6, device=device) > 0.5).float()
    check_compiled_training(model, TinyPixelCNN("reference").to(device), x, lr=0.01, steps=20)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_cpu_results_do_not_depend_on_the_thread_count(channels_last):
    """Forward and both gradients bit for bit on 1, 2 and 3 threads: grad-weight sums fixed
    parts of the rows (cpu/reduction_parts.h) whatever the threads, and reads x in place."""
    if "cpu" not in IMPLEMENTED or not genfast.backends()["cpu"].available:
        pytest.skip("the cpu backend is not built")
    _seed("threads", channels_last)
    x = torch.randn(5, 19, 9, 13)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_()
    weight = torch.randn(21, 19, 5, 5, requires_grad=True)
    bias = torch.randn(21, requires_grad=True)
    grad_y = torch.randn(5, 21, 9, 13)

    def run():
        y = genfast.masked_conv2d(x, weight, bias, "A", data_channels=3, backend="cpu")
        return [y, *torch.autograd.grad(y, (x, weight, bias), grad_y)]

    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            results.append(run())
    finally:
        torch.set_num_threads(threads)
    for many in results[1:]:
        for a, b in zip(results[0], many):
            assert torch.equal(a, b)
