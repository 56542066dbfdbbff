"""The Gated PixelCNN layer: causality, no blind spot, conditioning, backends agree."""
import pytest
import torch
from torch import nn

import genfast
from genfast.nn.gated_pixelcnn import GatedPixelCNNLayer
from genfast.models import build_model
from conftest import assert_close

H, W = 6, 7


class GatedStack(nn.Module):
    """Returns the last h, or with skip_channels the sum of every layer's skip output (what a
    model that sums skips feeds to its head)."""

    def __init__(self, depth, channels=4, conditioning_dim=None, backend=None,
                 skip_channels=None):
        super().__init__()
        self.layers = nn.ModuleList(
            [GatedPixelCNNLayer(1 if i == 0 else channels, channels, 3, "A" if i == 0 else "B",
                                conditioning_dim, backend=backend, skip_channels=skip_channels)
             for i in range(depth)])

    def forward(self, x, conditioning=None):
        v = h = x
        skips = []
        for layer in self.layers:
            v, h, *skip = layer(v, h, conditioning)  # skip: [] without skip_channels
            skips += skip
        return sum(skips) if skips else h


class PlainStack(nn.Module):
    def __init__(self, depth, channels=4):
        super().__init__()
        self.layers = nn.ModuleList(
            [genfast.nn.MaskedConv2d(1 if i == 0 else channels, channels, 3,
                                     "A" if i == 0 else "B") for i in range(depth)])

    def forward(self, x):
        for layer in self.layers:
            x = torch.tanh(layer(x))
        return x


def _seen_from(model, i, j):
    """Which input pixels output pixel (i, j) depends on, through autograd."""
    x = torch.randn(1, 1, H, W, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(model(x)[:, :, i, j].sum(), x)
    return g[0, 0] != 0


def _raster(i, j):
    order = torch.arange(H * W).view(H, W)
    return order < i * W + j, order >= i * W + j


@pytest.mark.parametrize("skip_channels", [None, 3], ids=["h", "skip-sum"])
@pytest.mark.parametrize("position", [(0, 0), (2, 3), (4, 3), (5, 6), (3, 0)])
def test_no_future_and_no_blind_spot(position, skip_channels):
    torch.manual_seed(0)
    gated = GatedStack(depth=6, skip_channels=skip_channels).double()
    past, future = _raster(*position)
    seen = _seen_from(gated, *position)
    assert not seen[future].any(), "the gated stack sees the current or a future pixel"
    assert seen[past].all(), f"the gated stack misses {(~seen & past).nonzero().tolist()}"


def test_plain_masked_stack_has_a_blind_spot():
    torch.manual_seed(0)
    plain = PlainStack(depth=6).double()
    past, future = _raster(4, 3)
    seen = _seen_from(plain, 4, 3)
    assert not seen[future].any()
    assert not seen[past].all(), "expected the plain stack's blind spot (up and to the right)"
    assert not seen[3, 6]  # one row up, three columns right: out of a 3x3 stack's reach


def test_conditioning_changes_the_output_and_keeps_causality():
    torch.manual_seed(0)
    model = GatedStack(depth=3, conditioning_dim=10).double()
    x = torch.randn(2, 1, H, W, dtype=torch.float64)
    one_hot = torch.eye(10, dtype=torch.float64)
    y0 = model(x, one_hot[[0, 0]])
    y1 = model(x, one_hot[[0, 3]])
    assert torch.equal(y0[0], y1[0]) and not torch.allclose(y0[1], y1[1])
    with pytest.raises(ValueError, match="conditioning_dim"):
        GatedStack(depth=1).double()(x, one_hot[[0, 1]])


@pytest.mark.parametrize("skip_channels", [None, 3], ids=["h", "skip-sum"])
def test_fast_backends_match_the_reference(backend, skip_channels):
    name, device = backend
    for op in (genfast.ops.masked_conv, genfast.ops.gated):
        if name not in op.IMPLEMENTED:
            pytest.skip(f"{op.__name__} has no {name} backend yet")
    torch.manual_seed(0)
    ref = GatedStack(depth=2, channels=5, conditioning_dim=3, backend="reference",
                     skip_channels=skip_channels)
    fast = GatedStack(depth=2, channels=5, conditioning_dim=3, backend=name,
                      skip_channels=skip_channels)
    fast.load_state_dict(ref.state_dict())
    ref, fast = ref.to(device), fast.to(device)
    x = torch.randn(2, 1, 5, 4, device=device)
    cond = torch.randn(2, 3, device=device)
    y_ref, y_fast = ref(x, cond), fast(x, cond)
    assert_close(y_fast, y_ref.detach())
    y_ref.square().sum().backward()
    y_fast.square().sum().backward()
    for (n, p_ref), p_fast in zip(ref.named_parameters(), fast.parameters()):
        if p_ref.grad is None:  # summing skips, the last layer's horizontal_out feeds nothing
            assert skip_channels and n.startswith("layers.1.horizontal_out."), n
            assert p_fast.grad is None
            continue
        assert_close(p_fast.grad, p_ref.grad)


def test_bad_arguments():
    with pytest.raises(ValueError, match="odd kernel_size"):
        GatedPixelCNNLayer(4, 4, kernel_size=4)
    with pytest.raises(ValueError, match="mask_type"):
        GatedPixelCNNLayer(4, 4, mask_type="V")
    with pytest.raises(ValueError, match="residual"):
        GatedPixelCNNLayer(3, 4, residual=True)
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="skip_channels must be a positive int, 0 or None"):
            GatedPixelCNNLayer(4, 4, skip_channels=bad)


@pytest.mark.parametrize("kwargs,conditioned,rgb", [
    (dict(image_shape=(1, 7, 5), levels=4, layers=2), False, False),
    (dict(image_shape=(3, 5, 7), levels=4, layers=3, num_classes=3), True, True)])
def test_the_model_state_dict_is_unchanged_by_the_skip_option(kwargs, conditioned, rgb):
    """The gated_pixelcnn model builds its layers without skip_channels: its state dict keys
    are those it had before the option existed (written out here), so its checkpoints load."""
    model = build_model("gated_pixelcnn", **kwargs)
    per_layer = ["vertical.weight", "vertical.bias", "horizontal.weight", "horizontal.bias",
                 "vertical_to_horizontal.weight", "vertical_to_horizontal.bias",
                 "horizontal_out.weight", "horizontal_out.bias"]
    per_layer += ["conditioning.weight"] if conditioned else []
    expected = [f"layers.{i}.{key}" for i in range(kwargs["layers"]) for key in per_layer]
    expected += ["features_to_head.weight", "features_to_head.bias"]
    expected += ["current_pixel.weight", "current_pixel.bias"] if rgb else []
    expected += ["head_out.weight", "head_out.bias"]
    assert list(model.state_dict()) == expected
    assert all(layer.skip is None for layer in model.layers)
