"""Swapping genfast's MaskedConv2d into existing PixelCNN code: the convention of other PixelCNN
layers (an nn.Conv2d with a registered ``mask`` buffer multiplied into its weight before each
forward, written here in our own code), their checkpoints, ``mask_center=``, unbatched input
and a clear error for their positional argument order."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import genfast
from genfast.ops.masked_conv import conv_mask


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
