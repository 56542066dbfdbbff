"""Swapping genfast's layers into existing PixelCNN code. The conventions of other PixelCNN
layers are written here in our own code: an nn.Conv2d with a registered ``mask`` buffer
multiplied into its weight before each forward (with ``mask_center=``, or as
``MaskedConv2d(mask_type, in, out, k)`` with RGB masks over interleaved channels), and the
cropped-convolution Gated PixelCNN layer with its skip output. genfast must give their
outputs, their gradients on the taps the mask shows and their training losses, and load their
checkpoints; also unbatched input and a clear error for their positional argument order."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import genfast
from genfast.ops.masked_conv import conv_mask
from conftest import FAST_BACKENDS

# The reference too: it masks interleaved channels in place where the fast backends permute them.
# FAST_BACKENDS runs the cpu backend at each ISA level (conftest's cpu_isa marks).
ALL_BACKENDS = [pytest.param(("reference", "cpu"), id="reference-cpu"), *FAST_BACKENDS]


class BufferMaskedConv2d(nn.Conv2d):
    """The common public form: a mask buffer, multiplied into the weight in place before each
    forward (so the hidden taps keep whatever the optimiser wrote between steps)."""

    def __init__(self, in_channels, out_channels, kernel_size, mask_center):
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.register_buffer("mask", conv_mask(out_channels, in_channels, kernel_size,
                                               kernel_size, "B" if mask_center else "A"))

    def forward(self, x):
        self.weight.data *= self.mask
        return super().forward(x)


class SharedMaskConv2d(BufferMaskedConv2d):
    """Another common form: one [1, 1, kh, kw] mask shared by every channel pair."""

    def __init__(self, in_channels, out_channels, kernel_size, mask_center):
        super().__init__(in_channels, out_channels, kernel_size, mask_center)
        self.mask = self.mask[:1, :1].clone()


@pytest.mark.parametrize("kind", [BufferMaskedConv2d, SharedMaskConv2d])
@pytest.mark.parametrize("mask_center", [False, True])
def test_their_checkpoints_load_and_give_their_outputs(backend, kind, mask_center):
    name, device = backend
    torch.manual_seed(0)
    theirs = kind(5, 7, 3, mask_center).to(device)
    ours = genfast.nn.MaskedConv2d(5, 7, 3, mask_center=mask_center, backend=name).to(device)
    assert ours.mask_type == ("B" if mask_center else "A")
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 5, 6, 4, device=device)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_a_checkpoint_with_another_mask_is_a_clear_error():
    theirs = BufferMaskedConv2d(3, 4, 3, mask_center=True)
    ours = genfast.nn.MaskedConv2d(3, 4, 3, mask_type="A")  # hides the centre theirs shows
    with pytest.raises(RuntimeError, match=r"mask is not this MaskedConv2d's mask \(mask_type='A'"
                                           r".*entries differ, e.g. \[0, 0, 1, 1\], which this "
                                           r"layer hides"):
        ours.load_state_dict(theirs.state_dict())
    wrong_shape = {**theirs.state_dict(), "mask": torch.ones(2, 2)}
    with pytest.raises(RuntimeError, match="does not match the weight's"):
        ours.load_state_dict(wrong_shape)


def test_export_to_the_mask_buffer_form_and_back():
    torch.manual_seed(1)
    ours = genfast.nn.MaskedConv2d(4, 6, 5, mask_type="B")
    theirs = BufferMaskedConv2d(4, 6, 5, mask_center=True)
    theirs.load_state_dict(ours.state_dict_with_mask(), strict=True)
    x = torch.randn(1, 4, 7, 7)
    torch.testing.assert_close(theirs(x), ours(x), rtol=1e-5, atol=1e-5)
    again = genfast.nn.MaskedConv2d(4, 6, 5, mask_type="B")
    again.load_state_dict(theirs.state_dict(), strict=True)
    torch.testing.assert_close(again(x), ours(x), rtol=1e-5, atol=1e-5)


def test_training_follows_theirs_on_the_visible_taps():
    torch.manual_seed(2)
    theirs = BufferMaskedConv2d(3, 5, 3, mask_center=False)
    ours = genfast.nn.MaskedConv2d(3, 5, 3, mask_center=False)
    ours.load_state_dict(theirs.state_dict())
    x, target = torch.randn(4, 3, 6, 6), torch.randn(4, 5, 6, 6)
    opt_theirs = torch.optim.Adam(theirs.parameters(), lr=1e-2)
    opt_ours = torch.optim.Adam(ours.parameters(), lr=1e-2)
    for _ in range(3):
        for model, opt in ((theirs, opt_theirs), (ours, opt_ours)):
            opt.zero_grad()
            loss = F.mse_loss(model(x), target)
            loss.backward()
            opt.step()
        torch.testing.assert_close(F.mse_loss(ours(x), target), F.mse_loss(theirs(x), target),
                                   rtol=1e-5, atol=1e-6)


def test_unbatched_input_as_conv2d_takes_it(backend):
    name, device = backend
    layer = genfast.nn.MaskedConv2d(3, 4, 3, mask_type="B", backend=name).to(device)
    x = torch.randn(3, 5, 6, device=device)
    y = layer(x)
    assert y.shape == (4, 5, 6)
    torch.testing.assert_close(y, layer(x.unsqueeze(0))[0])


def test_their_positional_order_and_a_double_mask_are_clear_errors():
    with pytest.raises(TypeError, match=r"got the mask type 'A' first: write "
                                        r"MaskedConv2d\(1, 64, 7, mask_type='A'\)"):
        genfast.nn.MaskedConv2d("A", 1, 64, 7)
    with pytest.raises(ValueError, match="mask_type or mask_center, not both"):
        genfast.nn.MaskedConv2d(1, 64, 7, mask_type="A", mask_center=False)


# ----------------------------------------------------------------------------- RGB, interleaved

class InterleavedRGBMaskedConv2d(nn.Conv2d):
    """The PixelCNN/PixelRCNN repository form: MaskedConv2d(mask_type, in, out, k), channel k of
    either side in colour k % 3 (R, G, B, R, G, B, ...), and at the centre output colour j
    reading input colour i when i < j (mask A) or i <= j (mask B); a mask buffer multiplied
    into the weight in place before each forward."""

    def __init__(self, mask_type, in_channels, out_channels, kernel_size):
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        c = kernel_size // 2
        mask = torch.ones_like(self.weight)
        mask[:, :, c, c:] = 0
        mask[:, :, c + 1:] = 0
        for i in range(3):
            for j in range(3):
                if i < j or (mask_type == "B" and i == j):
                    mask[j::3, i::3, c, c] = 1
        self.register_buffer("mask", mask)

    def forward(self, x):
        self.weight.data *= self.mask
        return super().forward(x)


def _assert_same_training_losses(theirs, ours, inputs, **tolerance):
    """Three Adam steps of each model on model.loss(inputs): every step's losses agree."""
    opts = [torch.optim.Adam(model.parameters(), lr=1e-2) for model in (theirs, ours)]
    for _ in range(3):
        losses = []
        for model, opt in zip((theirs, ours), opts):
            opt.zero_grad()
            loss = model.loss(inputs)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        torch.testing.assert_close(losses[1], losses[0], **tolerance)


def _interleaved_genfast(mask_type, cin, cout, k, backend="reference"):
    return genfast.nn.MaskedConv2d(cin, cout, k, mask_type=mask_type, data_channels=3,
                                   backend=backend, colour_layout="interleaved")


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("mask_type,cin,cout,k", [("A", 3, 12, 5), ("B", 12, 12, 3),
                                                  ("B", 6, 9, 3), ("A", 12, 6, 3)])
def test_interleaved_rgb_layers_swap_in(backend, mask_type, cin, cout, k, dtype):
    name, device = backend
    torch.manual_seed(3)
    theirs = InterleavedRGBMaskedConv2d(mask_type, cin, cout, k).to(device, dtype)
    ours = _interleaved_genfast(mask_type, cin, cout, k, name).to(device, dtype)
    ours.load_state_dict(theirs.state_dict(), strict=True)  # their mask buffer: checked
    x = torch.randn(2, cin, 5, 7, device=device, dtype=dtype)
    grad_y = torch.randn(2, cout, 5, 7, device=device, dtype=dtype)
    results = []
    for layer in (theirs, ours):
        x_in = x.clone().requires_grad_()
        y = layer(x_in)
        results.append([y, *torch.autograd.grad(y, (x_in, layer.weight, layer.bias), grad_y)])
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    (y_t, gx_t, gw_t, gb_t), (y_o, gx_o, gw_o, gb_o) = results
    for got, want in ((y_o, y_t), (gx_o, gx_t), (gb_o, gb_t), (gw_o, gw_t * theirs.mask)):
        torch.testing.assert_close(got, want, **tol)
    assert torch.count_nonzero(gw_o * (1 - theirs.mask)) == 0  # theirs leaks, ours does not
    # And back: ours exported to their form loads into their layer.
    again = InterleavedRGBMaskedConv2d(mask_type, cin, cout, k).to(device, dtype)
    again.load_state_dict(ours.state_dict_with_mask(), strict=True)
    torch.testing.assert_close(again(x), y_t.detach(), **tol)


def test_an_interleaved_checkpoint_into_a_contiguous_layer_is_a_clear_error():
    theirs = InterleavedRGBMaskedConv2d("A", 3, 12, 3)
    contiguous = genfast.nn.MaskedConv2d(3, 12, 3, mask_type="A", data_channels=3)
    with pytest.raises(RuntimeError, match=r"colour_layout='contiguous': with colour groups, "
                                           r"channel k of C is in group k \* data_channels // C"):
        contiguous.load_state_dict(theirs.state_dict())
    _interleaved_genfast("A", 3, 12, 3).load_state_dict(theirs.state_dict(), strict=True)


class RGBPixelCNN(nn.Module):
    """A tiny RGB PixelCNN in their convention: 3 -> 12 mask A, 12 -> 12 mask B, 1x1 mask B to
    3 * levels logits, read as [B, levels, 3, H, W] since output channel l * 3 + c is colour
    c's logit of value l."""

    def __init__(self, make, levels=4):
        super().__init__()
        self.levels = levels
        self.net = nn.Sequential(make("A", 3, 12, 5), nn.ReLU(), make("B", 12, 12, 3),
                                 nn.ReLU(), make("B", 12, 3 * levels, 1))

    def loss(self, images):
        x = images.float() / (self.levels - 1) * 2 - 1
        logits = self.net(x)
        b, _, h, w = logits.shape
        return F.cross_entropy(logits.view(b, self.levels, 3, h, w), images)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_interleaved_rgb_training_follows_theirs(backend):
    name, device = backend
    torch.manual_seed(4)
    theirs = RGBPixelCNN(lambda m, i, o, k: InterleavedRGBMaskedConv2d(m, i, o, k)).to(device)
    ours = RGBPixelCNN(lambda m, i, o, k: _interleaved_genfast(m, i, o, k, name)).to(device)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    images = torch.randint(0, 4, (3, 3, 5, 6), device=device)
    _assert_same_training_losses(theirs, ours, images, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.loss(images), theirs.loss(images), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- Gated PixelCNN

def _gate(x):
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class CroppedGatedLayer(nn.Module):
    """The cropped-convolution Gated PixelCNN layer of public PyTorch code: forward(v, h) ->
    (v_out, h_out, skip).

    Vertical stack: a (k//2 + 1) x k convolution on the input padded by k//2 on every side,
    cropped to the first H rows, so that row i sees rows i - k//2 ... i; it reaches the
    horizontal stack shifted down one row (a zero row on top) through a 1x1 convolution.
    Horizontal stack: a 1 x (k//2 + 1) convolution on the input padded by k//2 on both sides,
    cropped to the first W columns, so that column j sees columns j - k//2 ... j; mask A (the
    first layer) zeroes its last tap, the current pixel, through a mask buffer multiplied into
    the weight. Both gated as tanh(first half) * sigmoid(second half); h_out is a 1x1
    convolution of the gated horizontal features plus h (the residual, mask B with equal
    widths), skip another 1x1 convolution of the same gated features (before the residual) to
    skip_channels (default: channels), which a model sums over its layers into its head.
    """

    def __init__(self, in_channels, channels, k, mask_type, skip_channels=None):
        super().__init__()
        self.mask_type, self.residual = mask_type, mask_type == "B" and in_channels == channels
        self.v_conv = nn.Conv2d(in_channels, 2 * channels, (k // 2 + 1, k), padding=k // 2)
        self.h_conv = nn.Conv2d(in_channels, 2 * channels, (1, k // 2 + 1), padding=(0, k // 2))
        self.v_to_h = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.h_fc = nn.Conv2d(channels, channels, 1)
        self.skip = nn.Conv2d(channels, skip_channels or channels, 1)
        if mask_type == "A":
            mask = torch.ones(1, 1, 1, k // 2 + 1)
            mask[..., -1] = 0
            self.register_buffer("h_mask", mask)

    def forward(self, v, h):
        height, width = v.shape[2:]
        v_pre = self.v_conv(v)[:, :, :height]
        if self.mask_type == "A":
            self.h_conv.weight.data *= self.h_mask
        below = F.pad(v_pre, (0, 0, 1, 0))[:, :, :height]  # down one row: rows < i only
        h_gated = _gate(self.h_conv(h)[:, :, :, :width] + self.v_to_h(below))
        h_out = self.h_fc(h_gated) + (h if self.residual else 0)
        return _gate(v_pre), h_out, self.skip(h_gated)


def genfast_gated_state(state, k, skip):
    """Their layer's state dict (or anything keyed as it, such as its gradients) as
    genfast.nn.GatedPixelCNNLayer's, to load with strict=True: with their skip convolution
    (``skip``: a genfast layer built with skip_channels) or without it (one built without).

    The vertical (k//2 + 1) x k kernel is the top of genfast's k x k mask-V kernel, the
    horizontal 1 x (k//2 + 1) kernel the left of its 1 x k mask-A/B kernel; the taps below and
    to the right are hidden (zeros here). Their mask-A tap is hidden in both. The 1x1 layers,
    the skip one included (same keys), map as they are.
    """
    vertical = state["v_conv.weight"]
    horizontal = state["h_conv.weight"]
    mapped = {
        "vertical.weight": F.pad(vertical, (0, 0, 0, k - vertical.shape[2])),
        "vertical.bias": state["v_conv.bias"],
        "horizontal.weight": F.pad(horizontal, (0, k - horizontal.shape[3])),
        "horizontal.bias": state["h_conv.bias"],
        "vertical_to_horizontal.weight": state["v_to_h.weight"],
        "vertical_to_horizontal.bias": state["v_to_h.bias"],
        "horizontal_out.weight": state["h_fc.weight"],
        "horizontal_out.bias": state["h_fc.bias"],
    }
    if skip:
        mapped["skip.weight"], mapped["skip.bias"] = state["skip.weight"], state["skip.bias"]
    return mapped


class GatedStack(nn.Module):
    """A mask-A gated layer, a mask-B one and a small Bernoulli head (1x1, ReLU, 1x1). With
    skip_channels the head reads the sum of both layers' skips, as in common Gated PixelCNN
    code; without, the last h."""

    def __init__(self, make, skip_channels=None, k=5, channels=6):
        super().__init__()
        self.skip_channels = skip_channels
        self.first = make(1, channels, k, "A", skip_channels)
        self.second = make(channels, channels, 3, "B", skip_channels)
        width = skip_channels or channels
        self.head = nn.Sequential(nn.Conv2d(width, 3, 1), nn.ReLU(), nn.Conv2d(3, 1, 1))

    def loss(self, x):
        first = self.first(x, x)
        second = self.second(*first[:2])
        features = first[2] + second[2] if self.skip_channels else second[1]
        return F.binary_cross_entropy_with_logits(self.head(torch.relu(features)), x)


def _stack_state(theirs):
    state = {f"head.{key}": value for key, value in theirs.head.state_dict().items()}
    for name, k in (("first", 5), ("second", 3)):
        layer_state = getattr(theirs, name).state_dict()
        for key, value in genfast_gated_state(layer_state, k, theirs.skip_channels).items():
            state[f"{name}.{key}"] = value
    return state


def _genfast_gated(name):
    return lambda i, c, k, m, s: genfast.nn.GatedPixelCNNLayer(i, c, k, m, backend=name,
                                                               skip_channels=s)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("mask_type,k,cin", [("A", 5, 3), ("B", 3, 4), ("B", 5, 4)])
@pytest.mark.parametrize("skip_channels", [None, 5], ids=["no-skip", "skip5"])
def test_cropped_gated_layers(backend, mask_type, k, cin, dtype, skip_channels):
    """genfast.nn.GatedPixelCNNLayer with their weights mapped across gives their v and h, with
    skip_channels their skip too, and the gradients of their visible taps. Without
    skip_channels genfast's layer has no skip (their 1x1 ``skip`` is then not mapped) and suits
    models that do not sum skips. What differs: genfast's vertical kernel is k x k with the
    rows below the centre hidden, their (k//2 + 1) x k the visible rows alone, so the
    checkpoint goes through genfast_gated_state rather than loading as it is. Not covered: code
    that shifts the vertical stack by padding k//2 + 1 rows on top instead of inserting a zero
    row; its row 0 link then reads the vertical bias where genfast's reads zeros, so that code
    differs in row 0."""
    name, device = backend
    torch.manual_seed(5)
    with_skip = skip_channels is not None
    theirs = CroppedGatedLayer(cin, 4, k, mask_type, skip_channels).to(device, dtype)
    ours = genfast.nn.GatedPixelCNNLayer(cin, 4, k, mask_type, backend=name,
                                         skip_channels=skip_channels).to(device, dtype)
    ours.load_state_dict(genfast_gated_state(theirs.state_dict(), k, with_skip), strict=True)
    assert ours.residual == theirs.residual
    v = torch.randn(2, cin, 5, 7, device=device, dtype=dtype)
    h = torch.randn(2, cin, 5, 7, device=device, dtype=dtype)
    widths = (4, 4, skip_channels) if with_skip else (4, 4)
    cotangents = [torch.randn(2, c, 5, 7, device=device, dtype=dtype) for c in widths]
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    outputs = []
    for layer in (theirs, ours):
        v_in, h_in = v.clone().requires_grad_(), h.clone().requires_grad_()
        results = layer(v_in, h_in)
        assert len(results) == (3 if layer is theirs or with_skip else 2)
        results = results[:len(widths)]  # their skip, unused when ours has none
        grads = torch.autograd.grad(results, (v_in, h_in, *layer.parameters()), cotangents,
                                    allow_unused=True)
        outputs.append((*results, *grads))
    n_compared = len(widths) + 2  # the outputs and their inputs' gradients
    for got, want in zip(outputs[1][:n_compared], outputs[0][:n_compared]):
        torch.testing.assert_close(got, want, **tol)
    # Parameter gradients, mapped as the weights are (their mask-A tap: theirs leaks into it).
    theirs_grads = dict(zip((n for n, _ in theirs.named_parameters()), outputs[0][n_compared:]))
    ours_grads = dict(zip((n for n, _ in ours.named_parameters()), outputs[1][n_compared:]))
    if not with_skip:
        assert theirs_grads.pop("skip.weight") is None and theirs_grads.pop("skip.bias") is None
    mapped = genfast_gated_state(theirs_grads, k, with_skip)
    assert mapped.keys() == ours_grads.keys()
    centre = k // 2
    if mask_type == "A":
        mapped["horizontal.weight"][..., centre] = 0
    for key, want in mapped.items():
        torch.testing.assert_close(ours_grads[key], want, **tol)
    # The taps genfast hides get no gradient: rows below the centre, columns right of it (and
    # the centre itself with mask A).
    assert torch.count_nonzero(ours_grads["vertical.weight"][:, :, centre + 1:]) == 0
    first_hidden = centre if mask_type == "A" else centre + 1
    assert torch.count_nonzero(ours_grads["horizontal.weight"][..., first_hidden:]) == 0


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("skip_channels", [None, 5], ids=["no-skip", "skip5"])
def test_cropped_gated_training_follows_theirs(backend, dtype, skip_channels):
    name, device = backend
    torch.manual_seed(6)
    theirs = GatedStack(CroppedGatedLayer, skip_channels).to(device, dtype)
    ours = GatedStack(_genfast_gated(name), skip_channels).to(device, dtype)
    ours.load_state_dict(_stack_state(theirs), strict=True)
    x = (torch.rand(4, 1, 6, 5, device=device) > 0.5).to(dtype)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    _assert_same_training_losses(theirs, ours, x, **tol)
    torch.testing.assert_close(ours.loss(x), theirs.loss(x), **tol)


def test_a_skip_layer_state_dict():
    """skip_channels adds skip.weight and skip.bias after the other keys, shaped as their 1x1
    skip convolution; None and 0 add nothing, so checkpoints of layers built before the option
    load with strict=True and give the same outputs."""
    base = ["vertical.weight", "vertical.bias", "horizontal.weight", "horizontal.bias",
            "vertical_to_horizontal.weight", "vertical_to_horizontal.bias",
            "horizontal_out.weight", "horizontal_out.bias", "conditioning.weight"]
    torch.manual_seed(7)
    layer = genfast.nn.GatedPixelCNNLayer(3, 4, 5, "A", conditioning_dim=2, skip_channels=7)
    state = layer.state_dict()
    assert list(state) == base + ["skip.weight", "skip.bias"]
    assert state["skip.weight"].shape == (7, 4, 1, 1) and state["skip.bias"].shape == (7,)
    assert layer.skip_channels == 7 and "skip_channels=7" in repr(layer)
    # Their skip convolution's keys and shapes are the same: it loads without a mapping.
    layer.skip.load_state_dict(CroppedGatedLayer(3, 4, 5, "A", 7).skip.state_dict(), strict=True)
    v, h = torch.randn(2, 3, 5, 6), torch.randn(2, 3, 5, 6)
    condition = torch.randn(2, 2)
    for off in (None, 0):
        plain = genfast.nn.GatedPixelCNNLayer(3, 4, 5, "A", conditioning_dim=2,
                                              skip_channels=off)
        assert list(plain.state_dict()) == base and plain.skip is None
        assert plain.skip_channels is None and "skip" not in repr(plain)
        # The state of a skip layer without its skip keys: that of a layer without the option.
        plain.load_state_dict({k: t for k, t in state.items() if not k.startswith("skip.")},
                              strict=True)
        outputs = plain(v, h, condition)
        assert len(outputs) == 2
        for got, want in zip(outputs, layer(v, h, condition)[:2]):
            torch.testing.assert_close(got, want, rtol=0, atol=0)  # the same ops, same bits
