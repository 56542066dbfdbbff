"""The Gated PixelCNN layer: causality, no blind spot, conditioning, backends agree."""
import pytest
import torch
from torch import nn

import genfast
from genfast.nn.gated_pixelcnn import GatedPixelCNNLayer
from conftest import assert_close

H, W = 6, 7


class GatedStack(nn.Module):
    def __init__(self, depth, channels=4, conditioning_dim=None, backend=None):
        super().__init__()
        self.layers = nn.ModuleList(
            [GatedPixelCNNLayer(1 if i == 0 else channels, channels, 3, "A" if i == 0 else "B",
                                conditioning_dim, backend=backend) for i in range(depth)])

    def forward(self, x, conditioning=None):
        v = h = x
        for layer in self.layers:
            v, h = layer(v, h, conditioning)
        return h


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


@pytest.mark.parametrize("position", [(0, 0), (2, 3), (4, 3), (5, 6), (3, 0)])
def test_no_future_and_no_blind_spot(position):
    torch.manual_seed(0)
    gated = GatedStack(depth=6).double()
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


def test_fast_backends_match_the_reference(backend):
    name, device = backend
    for op in (genfast.ops.masked_conv, genfast.ops.gated):
        if name not in op.IMPLEMENTED:
            pytest.skip(f"{op.__name__} has no {name} backend yet")
    torch.manual_seed(0)
    ref = GatedStack(depth=2, channels=5, conditioning_dim=3, backend="reference")
    fast = GatedStack(depth=2, channels=5, conditioning_dim=3, backend=name)
    fast.load_state_dict(ref.state_dict())
    ref, fast = ref.to(device), fast.to(device)
    x = torch.randn(2, 1, 5, 4, device=device)
    cond = torch.randn(2, 3, device=device)
    y_ref, y_fast = ref(x, cond), fast(x, cond)
    assert_close(y_fast, y_ref.detach())
    y_ref.square().sum().backward()
    y_fast.square().sum().backward()
    for (n, p_ref), p_fast in zip(ref.named_parameters(), fast.parameters()):
        assert_close(p_fast.grad, p_ref.grad)


def test_bad_arguments():
    with pytest.raises(ValueError, match="odd kernel_size"):
        GatedPixelCNNLayer(4, 4, kernel_size=4)
    with pytest.raises(ValueError, match="mask_type"):
        GatedPixelCNNLayer(4, 4, mask_type="V")
    with pytest.raises(ValueError, match="residual"):
        GatedPixelCNNLayer(3, 4, residual=True)
