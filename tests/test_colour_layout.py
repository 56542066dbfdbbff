"""colour_layout="contiguous" | "interleaved" of the masked convolution: each layout against a
plain mask written here, causality per layout on every backend, the window evaluators that
samplers use, and clear errors. The layers and models built on it are tested with their own
(tests/test_pixelrnn.py, tests/test_models_autoregressive.py); sampling from interleaved
models is tested here."""
import zlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import genfast
from genfast.models import build_model
from genfast.ops.masked_conv import IMPLEMENTED
from conftest import FAST_BACKENDS, assert_close, check_compiled_training

LAYOUTS = ["contiguous", "interleaved"]
# FAST_BACKENDS runs the cpu backend at each ISA level (conftest's cpu_isa marks).
ALL_BACKENDS = [pytest.param(("reference", "cpu"), id="reference-cpu"), *FAST_BACKENDS]
# (in, out) channels: 6 and 12 are where the layouts differ (with 3 channels they agree); 7 and
# 8 split unevenly into 3, 2, 2 and 3, 3, 2, which both layouts accept.
CHANNELS = [(6, 12), (12, 6), (12, 12), (7, 8)]


def _seed(*key):
    torch.manual_seed(zlib.crc32(repr(key).encode()))


def _skip_unimplemented(name):
    if name not in IMPLEMENTED:
        pytest.skip(f"masked_conv2d has no {name} backend yet")


def _groups(channels, layout):
    """Colour group of each channel, spelled out without genfast."""
    if layout == "interleaved":
        return [k % 3 for k in range(channels)]
    return [k * 3 // channels for k in range(channels)]


def plain_mask(out_channels, in_channels, k, mask_type, layout):
    """The PixelCNN RGB mask of a k x k kernel, written the way PixelCNN code writes it: rows
    above the centre and taps left of it open, the centre open from input group i to output
    group j when i < j (mask A) or i <= j (mask B)."""
    mask = torch.zeros(out_channels, in_channels, k, k)
    c = k // 2
    mask[:, :, :c, :] = 1
    mask[:, :, c, :c] = 1
    for o, group_out in enumerate(_groups(out_channels, layout)):
        for i, group_in in enumerate(_groups(in_channels, layout)):
            if group_in < group_out or (mask_type == "B" and group_in == group_out):
                mask[o, i, c, c] = 1
    return mask


class PlainMaskedConv2d(nn.Conv2d):
    """nn.Conv2d whose weight is multiplied by ``plain_mask`` in each forward."""

    def __init__(self, in_channels, out_channels, k, mask_type, layout):
        super().__init__(in_channels, out_channels, k, padding=k // 2)
        self.register_buffer("mask", plain_mask(out_channels, in_channels, k, mask_type, layout))

    def forward(self, x):
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


def _output_and_gradients(layer, x, grad_y):
    x = x.detach().clone().requires_grad_()
    y = layer(x)
    return (y.detach(), *torch.autograd.grad(y, (x, layer.weight, layer.bias), grad_y))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("channels", CHANNELS, ids=str)
@pytest.mark.parametrize("mask_type", ["A", "B"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_each_layout_matches_a_plain_masked_conv2d(backend, layout, mask_type, channels, dtype):
    """genfast's layer against nn.Conv2d with the mask above multiplied into its weight, same
    weights: the output and the gradients of x, the weight and the bias."""
    name, device = backend
    _skip_unimplemented(name)
    _seed("plain", layout, mask_type, channels, str(dtype))
    cin, cout = channels
    k = 5 if cout == 8 else 3
    theirs = PlainMaskedConv2d(cin, cout, k, mask_type, layout).to(device, dtype)
    with torch.no_grad():
        theirs.bias.normal_()  # nn.Conv2d's bias starts near zero
    ours = genfast.nn.MaskedConv2d(cin, cout, k, mask_type, data_channels=3, backend=name,
                                   colour_layout=layout).to(device, dtype)
    ours.load_state_dict(theirs.state_dict(), strict=True)  # their mask buffer: checked
    x = torch.randn(3, cin, 5, 7, device=device, dtype=dtype)
    grad_y = torch.randn(3, cout, 5, 7, device=device, dtype=dtype)
    got = _output_and_gradients(ours, x, grad_y)
    want = _output_and_gradients(theirs, x, grad_y)
    for g, w in zip(got, want):
        assert_close(g, w)
    assert torch.count_nonzero(got[2] * (1 - theirs.mask)) == 0  # hidden taps: no gradient


def _seen_at(fn, x, co, i, j):
    """[C_in, H, W] bool: the inputs output channel co at pixel (i, j) depends on."""
    x = x.detach().requires_grad_()
    (g,) = torch.autograd.grad(fn(x)[:, co, i, j].sum(), x)
    return g.abs().sum(0) != 0


@pytest.mark.parametrize("mask_type", ["A", "B"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_causality_per_layout(backend, layout, mask_type):
    """Output group g at pixel p depends on no later pixel and, at p, on exactly the input
    groups < g (mask A) or <= g (mask B) of this layout; it does see earlier pixels."""
    name, device = backend
    _skip_unimplemented(name)
    _seed("causal", layout, mask_type)
    cin, cout, h, w = 6, 12, 4, 5
    layer = genfast.nn.MaskedConv2d(cin, cout, 3, mask_type, data_channels=3, backend=name,
                                    colour_layout=layout).to(device, torch.float64)
    x = torch.randn(2, cin, h, w, device=device, dtype=torch.float64)
    group_in = torch.tensor(_groups(cin, layout))
    raster = torch.arange(h * w).view(h, w)
    for i, j in [(0, 0), (2, 3), (3, 0), (3, 4)]:
        here = i * w + j
        for co, g in enumerate(_groups(cout, layout)):
            seen = _seen_at(layer, x, co, i, j).cpu()
            assert not seen[:, raster > here].any(), f"({i}, {j}) channel {co} sees the future"
            allowed = group_in < g if mask_type == "A" else group_in <= g
            assert torch.equal(seen[:, i, j], allowed), f"({i}, {j}) channel {co}: {seen[:, i, j]}"
            if here > 0:
                assert seen[:, raster < here].any(), f"({i}, {j}) channel {co} sees no past"


@pytest.mark.parametrize("mask_type", ["A", "B"])
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_a_contiguous_layer_read_interleaved_leaks_and_an_interleaved_one_does_not(backend,
                                                                                   mask_type):
    """The failure the layout option exists for: a 3 -> 12 contiguous layer whose outputs are
    read as interleaved colours lets red see the current pixel's green or blue."""
    name, device = backend
    _skip_unimplemented(name)
    _seed("leak", mask_type)
    x = torch.randn(1, 3, 3, 3, device=device, dtype=torch.float64)
    leaks = {}
    for layout in LAYOUTS:
        layer = genfast.nn.MaskedConv2d(3, 12, 3, mask_type, data_channels=3, backend=name,
                                        colour_layout=layout).to(device, torch.float64)
        red = [co for co in range(12) if co % 3 == 0]  # red, read interleaved
        leaks[layout] = any(_seen_at(layer, x, co, 1, 1)[1:, 1, 1].any() for co in red)
    assert leaks == {"contiguous": True, "interleaved": False}


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_window_evaluator_is_the_full_output(backend):
    """The samplers' window calls on an interleaved layer: with autograd, under
    inference_mode (the cached grouped weight), and again after the weight changes in place."""
    name, device = backend
    _skip_unimplemented(name)
    _seed("window")
    layer = genfast.nn.MaskedConv2d(6, 9, 3, "B", data_channels=3, backend=name,
                                    colour_layout="interleaved").to(device)
    x = torch.randn(2, 6, 5, 4, device=device).to(memory_format=torch.channels_last)
    evaluate = layer.window_evaluator(x)
    for _ in range(2):
        full = layer(x)
        with torch.inference_mode():
            pixel = evaluate(x, 2, 3, 1, 2)
            row = evaluate(x, 4, 5, 0, 4)
        assert_close(pixel, full[:, :, 2:3, 1:2].detach())
        assert_close(row, full[:, :, 4:5].detach())
        trained = evaluate(x, 1, 3, 0, 4)
        (g,) = torch.autograd.grad(trained.sum(), layer.weight)
        (g_full,) = torch.autograd.grad(full[:, :, 1:3].sum(), layer.weight)
        assert_close(g, g_full)
        with torch.no_grad():
            layer.weight.mul_(-2.0)  # the next step must see the new weight


class TinyInterleavedPixelCNN(nn.Module):
    """RGB mask A 3 -> 6 and mask B 6 -> 6 -> 3, interleaved: a Bernoulli per colour."""

    def __init__(self, backend):
        super().__init__()
        layers = [("A", 3, 6, 3), ("B", 6, 6, 3), ("B", 6, 3, 1)]
        self.convs = nn.ModuleList(
            genfast.nn.MaskedConv2d(cin, cout, k, mask_type, 3, backend=backend,
                                    colour_layout="interleaved")
            for mask_type, cin, cout, k in layers)

    def loss(self, x):
        y = x
        for conv in self.convs[:-1]:
            y = torch.relu(conv(y))
        return F.binary_cross_entropy_with_logits(self.convs[-1](y), x)


@pytest.mark.slow
def test_compiled_interleaved_step(backend):
    """torch.compile(fullgraph=True) through the permutations of the interleaved layout."""
    name, device = backend
    _skip_unimplemented(name)
    if name == "triton" and device == "cpu":
        pytest.skip("torch.compile does not run Triton kernels on the CPU interpreter")
    torch.manual_seed(0)
    model = TinyInterleavedPixelCNN(name).to(device)
    x = (torch.rand(2, 3, 5, 4, device=device) > 0.5).float()
    check_compiled_training(model, TinyInterleavedPixelCNN("reference").to(device), x, lr=0.02,
                            steps=5)


def test_bad_layouts_are_clear_errors():
    x, weight = torch.randn(1, 6, 4, 4), torch.randn(6, 6, 3, 3)
    choices = "colour_layout must be 'contiguous' or 'interleaved', got 'rgb'"
    with pytest.raises(ValueError, match=choices):
        genfast.masked_conv2d(x, weight, None, "A", 3, colour_layout="rgb")
    with pytest.raises(ValueError, match=choices):
        genfast.nn.MaskedConv2d(6, 6, 3, "A", 3, colour_layout="rgb")
    with pytest.raises(ValueError, match=choices):
        genfast.nn.RowLSTM(3, 6, 3, "A", 3, colour_layout="rgb")
    with pytest.raises(ValueError, match=choices):
        genfast.nn.DiagonalBiLSTM(3, 6, "A", 3, colour_layout="rgb")
    for model in ("pixelcnn", "gated_pixelcnn", "pixelrnn"):
        with pytest.raises(ValueError, match=choices):
            build_model(model, image_shape=(3, 4, 4), levels=4, colour_layout="rgb")
    # Interleaved groups the kernels cannot take: 6 channels in 4 groups are 2, 2, 1, 1
    # interleaved but 2, 1, 2, 1 in contiguous blocks.
    with pytest.raises(ValueError, match="cannot split 6 input channels into 4 colour groups"):
        genfast.masked_conv2d(x, weight, None, "A", 4, colour_layout="interleaved")
    with pytest.raises(ValueError, match="cannot split 6 input channels into 4 colour groups"):
        genfast.nn.MaskedConv2d(6, 8, 3, "A", 4, colour_layout="interleaved")
    # As contiguous: data_channels beyond the channels is refused, uneven groups are not.
    with pytest.raises(ValueError, match="data_channels"):
        genfast.nn.MaskedConv2d(2, 6, 3, "A", 3, colour_layout="interleaved")
    assert genfast.nn.MaskedConv2d(7, 8, 3, "A", 3, colour_layout="interleaved")(
        torch.randn(1, 7, 3, 3)).shape == (1, 8, 3, 3)
    # Mask V has no colour groups, so any layout is the same layer.
    v = genfast.nn.MaskedConv2d(6, 8, 3, "V", 4, colour_layout="interleaved")
    assert torch.equal(v.mask(), genfast.nn.MaskedConv2d(6, 8, 3, "V", 4).mask())


# Small versions of each model (registry name, hyperparameters), RGB and interleaved.
MODELS = {
    "pixelcnn": ("pixelcnn", dict(channels=12, blocks=2, head_channels=18)),
    "gated_pixelcnn": ("gated_pixelcnn", dict(channels=9, layers=3, head_channels=18)),
    "pixelrnn_row": ("pixelrnn", dict(layer="row", hidden=6, layers=2, head_channels=18)),
    "pixelrnn_diagonal": ("pixelrnn", dict(layer="diagonal", hidden=6, layers=2,
                                           head_channels=18)),
}


@pytest.mark.skipif(not genfast.backends()["cpu"].available, reason="needs the cpu backend")
@pytest.mark.parametrize("key", sorted(MODELS))
def test_interleaved_models_sample_as_their_network(key):
    """Cached sampling walks the interleaved layers and logits as the network does: the same
    logits to the bit at every value, and the same integers as naive sampling."""
    name, hparams = MODELS[key]
    _seed("sample", key)
    model = build_model(name, image_shape=(3, 3, 3), levels=5, backend="cpu",
                        colour_layout="interleaved", **hparams).eval()
    with torch.no_grad():  # spread the logits so that the draws depend on the model
        for p in model.parameters():
            p.mul_(2.0)
    images = torch.randint(0, 5, (2, 3, 3, 3))
    stepper, partial = model.cached_stepper(2, None), torch.zeros_like(images)
    with torch.inference_mode():
        for i in range(3):
            stepper.start_row(i)
            for j in range(3):
                for k in range(3):
                    full = model.logits(partial, None)[:, :, k, i, j]
                    assert torch.equal(stepper.logits(i, j, k), full), (i, j, k)
                    partial[:, k, i, j] = images[:, k, i, j]
                    stepper.set_value(i, j, k, images[:, k, i, j])
    naive, cached = (model.sample(2, generator=torch.Generator().manual_seed(3), method=m)
                     for m in ("naive", "cached"))
    assert torch.equal(naive, cached)
