"""PixelRNN layers (Row LSTM, Diagonal BiLSTM): skew geometry, causality and colour groups through
autograd, initial states, every fast backend against the reference, torch.compile, bad input."""
import zlib

import pytest
import torch
from torch import nn

import genfast
import genfast.ops.lstm_row as lstm_row_ops
import genfast.ops.masked_conv as masked_conv_ops
from genfast.nn.pixelrnn import DiagonalBiLSTM, RowLSTM, _skew_steps, _unskew_steps, skew, unskew
from conftest import assert_close, check_compiled_training


def _seed(*key):
    torch.manual_seed(zlib.crc32(repr(key).encode()))


def _skip_unimplemented(name):
    for module in (lstm_row_ops, masked_conv_ops):
        if name not in module.IMPLEMENTED:
            pytest.skip(f"{module.__name__} has no {name} backend yet")


def _layer(kind, in_channels, hidden, mask_type="B", data_channels=1, kernel_size=3,
           backend="reference", colour_layout="contiguous"):
    if kind == "row":
        return RowLSTM(in_channels, hidden, kernel_size, mask_type, data_channels, backend=backend,
                       colour_layout=colour_layout)
    return DiagonalBiLSTM(in_channels, hidden, mask_type, data_channels, backend=backend,
                          colour_layout=colour_layout)


def _raster(h, w, i, j):
    order = torch.arange(h * w).view(h, w)
    return order < i * w + j, order == i * w + j


# ----------------------------------------------------------------------------- skew geometry

@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 1, 1, 1), (1, 2, 5, 1), (2, 1, 1, 6),
                                   (1, 2, 6, 3)])
def test_skew_moves_row_r_right_by_r_and_unskew_inverts_it(shape):
    x = torch.randn(*shape, requires_grad=True)
    h, w = shape[2:]
    s = skew(x)
    assert s.shape == (*shape[:2], h, h + w - 1)
    for r in range(h):
        assert torch.equal(s[:, :, r, r:r + w], x[:, :, r])
        assert not s[:, :, r, :r].any() and not s[:, :, r, r + w:].any()
    g = torch.randn(*shape)
    # The layers' steps-first forms: the transpose of the skewed map, and back.
    steps = _skew_steps(x)
    assert steps.is_contiguous() and torch.equal(steps, s.transpose(2, 3))
    for back in (unskew(s, w), unskew(steps.transpose(2, 3), w), _unskew_steps(steps, w)):
        assert torch.equal(back, x)
        (gx,) = torch.autograd.grad(back, x, g)
        assert torch.equal(gx, g)


# ----------------------------------------------------------------------------- causality

# (layer, mask, data_channels, colour layout): the Diagonal BiLSTM's 1x1 mask A needs colour
# groups to see.
CAUSAL = [("row", "A", 1, "contiguous"), ("row", "B", 1, "contiguous"),
          ("diagonal", "B", 1, "contiguous")] + [
    (kind, mask_type, 3, layout) for layout in ("contiguous", "interleaved")
    for kind, mask_type in (("row", "A"), ("row", "B"), ("diagonal", "A"), ("diagonal", "B"))]


def _seen(layer, x, i, j):
    """Input pixels that output pixel (i, j) depends on (any channel to any channel)."""
    x = x.detach().requires_grad_()
    (g,) = torch.autograd.grad(layer(x)[:, :, i, j].sum(), x)
    return g.abs().sum(dim=(0, 1)) != 0


@pytest.mark.parametrize("kind,mask_type,data_channels,layout", CAUSAL)
@pytest.mark.parametrize("hw", [(4, 5), (5, 2)], ids=str)
def test_no_future_and_some_past(kind, mask_type, data_channels, layout, hw):
    layout_key = () if layout == "contiguous" else (layout,)  # the seeds of before the layouts
    _seed("causal", kind, mask_type, data_channels, hw, *layout_key)
    h, w = hw
    layer = _layer(kind, 3, 6, mask_type, data_channels, colour_layout=layout).double()
    x = torch.randn(2, 3, h, w, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            seen = _seen(layer, x, i, j)
            past, here = _raster(h, w, i, j)
            # With colour groups mask A shows the current pixel's earlier colours (checked
            # channel by channel in the colour tests); pixel by pixel it counts as seen.
            future = ~past & ~here if mask_type == "B" or data_channels > 1 else ~past
            assert not seen[future].any(), f"output ({i}, {j}) sees {(seen & future).nonzero()}"
            if i * w + j > 0:
                assert seen[past].any(), f"output ({i}, {j}) sees no earlier pixel"
            if mask_type == "B":
                assert seen[i, j], f"output ({i}, {j}) does not see its own pixel"
            if kind == "diagonal":  # the two directions together: every earlier pixel
                assert seen[past].all(), f"output ({i}, {j}) misses {(past & ~seen).nonzero()}"


@pytest.mark.parametrize("mask_type", ["A", "B"])
@pytest.mark.parametrize("kernel_size", [3, 2, 5])
def test_row_lstm_receptive_field_is_the_triangle_above(mask_type, kernel_size):
    """Row i - t is seen over the columns the state kernel reaches in t steps, widened by the
    input kernel's left taps; the current row over the left taps (and the pixel for mask B)."""
    _seed("triangle", mask_type, kernel_size)
    h, w = 4, 9
    layer = _layer("row", 2, 5, mask_type, kernel_size=kernel_size).double()
    x = torch.randn(1, 2, h, w, dtype=torch.float64)
    left, right, taps = kernel_size // 2, (kernel_size - 1) // 2, (kernel_size - 1) // 2
    cols = torch.arange(w)
    for i, j in [(3, 4), (2, 0), (3, 8), (0, 5)]:
        expected = torch.zeros(h, w, dtype=torch.bool)
        # t rows up, the state columns c in reach (within the image) each read x over
        # c - taps ... c - 1 (mask A) or ... c (mask B).
        for t in range(i + 1):
            if mask_type == "A" and taps == 0:  # a 1 x 2 mask A: no visible tap at all
                continue
            lo = max(j - t * left, 0) - taps
            hi = min(j + t * right, w - 1) - (1 if mask_type == "A" else 0)
            expected[i - t] = (cols >= lo) & (cols <= hi)
        assert torch.equal(_seen(layer, x, i, j), expected), f"output ({i}, {j})"


# ----------------------------------------------------------------------------- colour groups

LAYOUTS = ["contiguous", "interleaved"]


def _groups(channels, layout="contiguous"):
    if layout == "interleaved":
        return torch.arange(channels) % 3
    return torch.arange(channels) * 3 // channels


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", ["row", "diagonal"])
@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_colour_groups_at_the_current_pixel(kind, mask_type, layout):
    """Output group g reads the current pixel's input groups < g (mask A) or <= g (mask B)."""
    _seed("colour", kind, mask_type, layout)
    cin, hidden = 7, 9  # input groups of 3, 2, 2 channels: uneven on purpose
    layer = _layer(kind, cin, hidden, mask_type, 3, colour_layout=layout).double()
    x = torch.randn(2, cin, 4, 5, dtype=torch.float64)
    i, j = 2, 3
    for co in range(hidden):
        x_req = x.detach().requires_grad_()
        (g,) = torch.autograd.grad(layer(x_req)[:, co, i, j].sum(), x_req)
        seen = g[:, :, i, j].abs().sum(0) != 0
        group = _groups(hidden, layout)[co]
        groups_in = _groups(cin, layout)
        allowed = groups_in < group if mask_type == "A" else groups_in <= group
        assert torch.equal(seen, allowed), f"output channel {co}: {seen} vs {allowed}"


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_diagonal_colour_streams_stay_apart_through_the_recurrence(mask_type, layout):
    """With 1x1 input kernels and the masked state weight, output group g depends on input
    groups < g (A) / <= g (B) at every pixel, earlier ones included."""
    _seed("streams", mask_type, layout)
    layer = _layer("diagonal", 3, 6, mask_type, 3, colour_layout=layout).double()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    for co in range(6):
        (g,) = torch.autograd.grad(y[:, co].sum(), x, retain_graph=True)
        seen = g.abs().sum(dim=(0, 2, 3)) != 0  # per input channel (= colour), any pixel
        group = _groups(6, layout)[co]
        allowed = torch.arange(3) < group if mask_type == "A" else torch.arange(3) <= group
        assert torch.equal(seen, allowed), f"output channel {co}: {seen} vs {allowed}"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_row_lstm_state_groups_feed_their_own_and_later_colours(layout):
    """Output group g reads the initial state's groups <= g only (the state weight's mask)."""
    _seed("state groups", layout)
    hidden = 6
    layer = _layer("row", 3, hidden, "B", 3, colour_layout=layout).double()
    x = torch.randn(2, 3, 3, 5, dtype=torch.float64)
    h0, c0 = (torch.randn(2, hidden, 5, dtype=torch.float64, requires_grad=True) for _ in "hc")
    y = layer(x, (h0, c0))
    for co in range(hidden):
        grads = torch.autograd.grad(y[:, co].sum(), (h0, c0), retain_graph=True)
        allowed = _groups(hidden, layout) <= _groups(hidden, layout)[co]
        for name, g in zip(("h0", "c0"), grads):
            seen = g.abs().sum(dim=(0, 2)) != 0
            assert torch.equal(seen, allowed), f"output channel {co}, {name}: {seen}"
    assert torch.count_nonzero(layer.state_mask) < layer.state_mask.numel()


def test_colour_mask_is_a_fixed_buffer_outside_the_state_dict():
    layer = RowLSTM(3, 6, data_channels=3)
    assert "state_mask" not in layer.state_dict()
    assert layer.state_mask.shape == (24, 6, 1)
    assert RowLSTM(3, 6).state_mask is None
    layer.state_weight.data.fill_(1.0)
    x = torch.randn(1, 3, 3, 4)
    y = layer(x)
    y.sum().backward()
    hidden_mask = layer.state_mask.expand_as(layer.state_weight) == 0
    assert torch.count_nonzero(layer.state_weight.grad[hidden_mask]) == 0


# ----------------------------------------------------------------------------- states, parameters

def test_row_lstm_initial_state():
    _seed("state")
    layer = _layer("row", 3, 5, "B").double()
    x = torch.randn(2, 3, 6, 4, dtype=torch.float64)
    zeros = torch.zeros(2, 5, 4, dtype=torch.float64)
    y = layer(x)
    assert torch.equal(layer(x, (zeros, zeros)), y)
    assert torch.equal(layer(x, (None, zeros)), y) and torch.equal(layer(x, (zeros, None)), y)
    # Continuing from the state after the top rows gives the rows of the whole image.
    top, state = layer(x[:, :, :2], return_state=True)
    bottom = layer(x[:, :, 2:], state)
    assert_close(torch.cat([top, bottom], dim=2), y)
    assert state[0].shape == state[1].shape == (2, 5, 4)
    h0 = torch.randn(2, 5, 4, dtype=torch.float64)
    assert not torch.allclose(layer(x, (h0, None))[:, :, 0], y[:, :, 0])


def test_parameters_and_initialisation():
    row = RowLSTM(4, 6, kernel_size=5)
    assert {k: tuple(v.shape) for k, v in row.state_dict().items()} == {
        "input_to_state.weight": (24, 4, 1, 5), "state_weight": (24, 6, 5), "bias": (24,)}
    assert torch.equal(row.bias[6:12], torch.ones(6)) and not row.bias[:6].any()
    assert row.state_weight.abs().max() <= 1 / (6 * 5) ** 0.5
    diag = DiagonalBiLSTM(4, 6)
    assert sorted(diag.state_dict()) == sorted(
        f"{d}.{p}" for d in ("left_to_right", "right_to_left")
        for p in ("input_to_state.weight", "state_weight", "bias"))
    assert diag.left_to_right.state_weight.shape == (24, 6, 2)
    assert isinstance(genfast.nn.RowLSTM(1, 2), RowLSTM)
    assert isinstance(genfast.nn.DiagonalBiLSTM(1, 2), DiagonalBiLSTM)


# ----------------------------------------------------------------------------- fast backends

# (batch, in, hidden, height, width, data_channels): batch 1, widths 1 and 2, heights 1,
# non-square images, hidden sizes off multiples of 8.
SHAPES = [
    (1, 3, 5, 4, 5, 1),
    (2, 2, 7, 3, 1, 1),
    (2, 4, 6, 5, 2, 3),
    (3, 5, 9, 2, 6, 3),
    (2, 3, 5, 1, 4, 1),
    (2, 6, 12, 6, 3, 1),
]
# (layer, mask, kernel_size)
LAYERS = [("row", "A", 3), ("row", "B", 2), ("row", "B", 5), ("diagonal", "B", None),
          ("diagonal", "A", None)]
# The Triton interpreter is slow: a few tiny cases only.
INTERPRETED = {0, 2}


def _pair(kind, mask_type, kernel_size, case, name, device, dtype, colour_layout):
    batch, cin, hidden, h, w, dc = case
    kwargs = dict(mask_type=mask_type, data_channels=dc, colour_layout=colour_layout)
    if kind == "row":
        kwargs["kernel_size"] = kernel_size
    ref = _layer(kind, cin, hidden, backend="reference", **kwargs).to(device, dtype)
    fast = _layer(kind, cin, hidden, backend=name, **kwargs).to(device, dtype)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


# A 1x1 mask A needs colour groups (see test_bad_arguments).
PARITY = [(layer, i) for layer in LAYERS for i in range(len(SHAPES))
          if not (layer[0] == "diagonal" and layer[1] == "A" and SHAPES[i][5] == 1)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("layer_case,case_index", PARITY, ids=str)
def test_fast_backends_match_the_reference(backend, layer_case, case_index, dtype):
    _check_parity(backend, layer_case, case_index, dtype, "contiguous")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("layer_case,case_index",
                         [(layer, i) for layer, i in PARITY if SHAPES[i][5] == 3], ids=str)
def test_fast_backends_match_the_reference_interleaved(backend, layer_case, case_index, dtype):
    """The fast backends permute interleaved channels into the kernels' colour groups (and the
    cpu backend's fused input convolution with them); the reference masks them in place."""
    _check_parity(backend, layer_case, case_index, dtype, "interleaved")


def _check_parity(backend, layer_case, case_index, dtype, colour_layout):
    name, device = backend
    _skip_unimplemented(name)
    kind, mask_type, kernel_size = layer_case
    case = SHAPES[case_index]
    if name == "triton" and device == "cpu" and (case_index not in INTERPRETED
                                                 or dtype == torch.float64):
        pytest.skip("the Triton interpreter is slow: a few float32 cases only")
    # The contiguous cases keep the seeds they had before the layouts.
    layout_key = () if colour_layout == "contiguous" else (colour_layout,)
    _seed("parity", layer_case, case, str(dtype), *layout_key)
    ref, fast = _pair(kind, mask_type, kernel_size, case, name, device, dtype, colour_layout)
    batch, cin, hidden, h, w, _ = case
    x = torch.randn(batch, cin, h, w, device=device, dtype=dtype)
    state = None
    if kind == "row" and case_index % 2:  # half the Row LSTM cases start from a given state
        state = tuple(torch.randn(batch, hidden, w, device=device, dtype=dtype) for _ in "hc")
    cot = torch.randn(batch, hidden, h, w, device=device, dtype=dtype)
    results = []
    for layer in (ref, fast):
        x_in = x.clone().requires_grad_()
        s_in = None if state is None else tuple(t.clone().requires_grad_() for t in state)
        y = layer(x_in, s_in) if kind == "row" else layer(x_in)
        leaves = [x_in, *layer.parameters(), *(s_in or ())]
        grads = torch.autograd.grad(y, leaves, cot)
        results.append((y.detach(), *grads))
    for got, want in zip(results[1], results[0]):
        assert got.shape == want.shape
        assert_close(got, want)


# ----------------------------------------------------------------------------- torch.compile

class TinyPixelRNN(nn.Module):
    """A Row LSTM on the image (mask A), a Diagonal BiLSTM (mask B) and a 1x1 Bernoulli head."""

    def __init__(self, backend, hidden=6):
        super().__init__()
        self.row = RowLSTM(1, hidden, 3, "A", backend=backend)
        self.diagonal = DiagonalBiLSTM(hidden, hidden, "B", backend=backend)
        self.head = nn.Conv2d(hidden, 1, 1)

    def loss(self, x):
        h = self.row(x)
        h = h + self.diagonal(h)
        return nn.functional.binary_cross_entropy_with_logits(self.head(h), x)


def _compiled_step(name, device):
    torch.manual_seed(0)
    model = TinyPixelRNN(name).to(device)
    x = (torch.rand(3, 1, 5, 4, device=device) > 0.5).float()
    check_compiled_training(model, TinyPixelRNN("reference").to(device), x, lr=0.02, steps=8)


@pytest.mark.slow
def test_compiled_pixelrnn_step_reference():
    _compiled_step("reference", "cpu")


@pytest.mark.slow
def test_compiled_pixelrnn_step(backend):
    name, device = backend
    _skip_unimplemented(name)
    if name == "triton" and device == "cpu":
        pytest.skip("torch.compile does not run Triton kernels on the CPU interpreter")
    _compiled_step(name, device)


# ----------------------------------------------------------------------------- bad arguments

def test_bad_arguments():
    with pytest.raises(ValueError, match="mask_type"):
        RowLSTM(3, 6, mask_type="V")
    with pytest.raises(ValueError, match="mask_type"):
        DiagonalBiLSTM(3, 6, mask_type="b")
    with pytest.raises(ValueError, match="kernel_size"):
        RowLSTM(3, 6, kernel_size=0)
    with pytest.raises(ValueError, match="kernel_size"):
        RowLSTM(3, 6, kernel_size=(1, 3))
    with pytest.raises(ValueError, match="data_channels"):
        RowLSTM(2, 6, data_channels=3)
    with pytest.raises(ValueError, match="multiple of 3"):
        RowLSTM(3, 7, data_channels=3)
    with pytest.raises(ValueError, match="multiple of 3"):
        DiagonalBiLSTM(3, 5, data_channels=3)
    with pytest.raises(ValueError, match="sees no input"):
        DiagonalBiLSTM(3, 6, mask_type="A")
    with pytest.raises(ValueError, match=">= 1"):
        RowLSTM(3, 0)
    row, diag = RowLSTM(3, 6), DiagonalBiLSTM(3, 6)
    for layer in (row, diag):
        with pytest.raises(ValueError, match="batch, channels, height, width"):
            layer(torch.randn(3, 4, 5))
        with pytest.raises(ValueError, match="3 input channels"):
            layer(torch.randn(1, 4, 4, 5))
    x = torch.randn(2, 3, 4, 5)
    with pytest.raises(ValueError, match="pair"):
        row(x, torch.zeros(2, 6, 5))
    with pytest.raises(ValueError, match="h0 must have shape"):
        row(x, (torch.zeros(2, 6, 4), None))
    with pytest.raises(ValueError, match="c0 must have shape"):
        row(x, (None, torch.zeros(1, 6, 5)))
    with pytest.raises(ValueError, match="skew"):
        skew(torch.randn(3, 4, 5))
    with pytest.raises(ValueError, match="unskew"):
        unskew(torch.randn(1, 2, 3, 6), 5)
