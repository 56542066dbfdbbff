"""The layers of PixelCNN++ (Salimans et al. 2017, openai/pixel-cnn's nn.py), on genfast's
masked convolutions.

PixelCNN++ has no masks: it shifts. A down-shifted convolution (filter 2 x 3) sees the row above
and the current row, columns j-1..j+1; a down-right-shifted one (filter 2 x 2) sees rows i-1..i,
columns j-1..j. The stream ``u`` is shifted down a row once at the start, so each of its
positions sees only the rows above; the stream ``ul`` is shifted down and right, so it sees the
rows above and the pixels to the left.

Which of them are genfast masked convolutions, computing exactly the same thing:

* down-shifted 2 x 3 = a 3 x 3 mask-V MaskedConv2d (the centre row and the row above, whole);
  the 1 x 3 and 2 x 1 filters of the first layer are 1 x 3 and 3 x 1 mask-V layers.
* down-right-shifted 2 x 2 is no single mask (3 x 3 mask B also sees (i-1, j+1)). It is a 1 x 3
  mask-B MaskedConv2d (taps j-1 and j) over the input stacked with its own down-shifted copy:
  the first half of the channels gives row i, the second half row i-1. Twice the input channels,
  the same multiply-adds.
* the stride-2 convolutions are the stride-1 ones read at even rows and columns (the kernels
  compute the other three quarters too: the price of keeping one exact kernel for training and
  for the sampler, which evaluates only the even positions).
* the stride-2 transposed convolutions are the same shifted convolutions over the input with
  zeros inserted between its rows and columns (the kernel weight is the transposed one's,
  flipped); again a quarter of the products are non-zero.
* nin (1 x 1) layers are 1 x 1 MaskedConv2d, whose mask with one colour group is all ones.

Not genfast kernels: the shifts, concat_elu and the gate, plain elementwise PyTorch. ELU and the
sigmoid are written with expm1 and tanh, whose vectorised and scalar loops round alike, so a
pixel's value does not depend on where it falls in a tensor (F.elu and torch.sigmoid differ in
the last bit between the two): the cached sampler's one-pixel calls then equal the whole
network's to the bit.

Not the original: no weight normalisation or data-dependent initialisation (PyTorch's default
initialisation; the gated convolution's output weights start at 0.1x, as its init_scale).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genfast.nn import MaskedConv2d


def down_shift(x: torch.Tensor) -> torch.Tensor:
    """Rows move down one, a zero row enters at the top: [B, C, H, W] -> same shape."""
    return F.pad(x[:, :, :-1], (0, 0, 1, 0))


def right_shift(x: torch.Tensor) -> torch.Tensor:
    """Columns move right one, a zero column enters at the left."""
    return F.pad(x[:, :, :, :-1], (1, 0))


def stack_row_above(x: torch.Tensor) -> torch.Tensor:
    """[x, down_shift(x)] along channels: what a down-right-shifted convolution reads."""
    return torch.cat([x, down_shift(x)], dim=1)


def zero_insert(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """x [B, C, h, w] at the even rows and columns of a zero [B, C, height, width] map."""
    z = x.new_zeros(x.shape[0], x.shape[1], height, width)
    z[:, :, ::2, ::2] = x
    return z


def elu(x: torch.Tensor) -> torch.Tensor:
    """ELU with alpha 1, rounded the same whatever x's shape (see the module docstring); the
    clamp keeps expm1 of large inputs, which the where discards, from an inf gradient."""
    return torch.where(x > 0, x, torch.expm1(x.clamp(max=0)))


def concat_elu(x: torch.Tensor) -> torch.Tensor:
    """ELU of [x, -x] along channels: [B, C, H, W] -> [B, 2C, H, W] (the paper's nonlinearity,
    which keeps both signs' information)."""
    return elu(torch.cat([x, -x], dim=1))


def gate(c: torch.Tensor) -> torch.Tensor:
    """a * sigmoid(b) for [a, b] = c split along channels; sigmoid(b) = (1 + tanh(b / 2)) / 2."""
    a, b = c.chunk(2, dim=1)
    return a * (0.5 + 0.5 * torch.tanh(0.5 * b))


def pointwise(in_channels: int, out_channels: int, backend: str | None) -> MaskedConv2d:
    """nin: a 1 x 1 convolution (mask B with one colour group is all ones)."""
    return MaskedConv2d(in_channels, out_channels, 1, "B", backend=backend)


class DownShiftedConv2d(nn.Module):
    """The 2 x 3 down-shifted convolution: output (i, j) reads rows i-1..i, columns j-1..j+1.
    ``stride=2`` keeps the even rows and columns (PixelCNN++'s downsampling)."""

    def __init__(self, in_channels: int, out_channels: int, backend: str | None,
                 stride: int = 1):
        super().__init__()
        self.conv = MaskedConv2d(in_channels, out_channels, 3, "V", backend=backend)
        self.stride = stride

    def forward(self, x):
        y = self.conv(x)
        return y[:, :, ::2, ::2] if self.stride == 2 else y


class DownRightShiftedConv2d(nn.Module):
    """The 2 x 2 down-right-shifted convolution: output (i, j) reads rows i-1..i, columns
    j-1..j, as a 1 x 3 mask-B convolution of :func:`stack_row_above`. ``stride=2`` keeps the
    even rows and columns."""

    def __init__(self, in_channels: int, out_channels: int, backend: str | None,
                 stride: int = 1):
        super().__init__()
        self.conv = MaskedConv2d(2 * in_channels, out_channels, (1, 3), "B", backend=backend)
        self.stride = stride

    def forward(self, x):
        y = self.conv(stack_row_above(x))
        return y[:, :, ::2, ::2] if self.stride == 2 else y


class GatedResnet(nn.Module):
    """PixelCNN++'s gated ResNet block (nn.gated_resnet):

        c1 = conv(concat_elu(x)) [+ nin(concat_elu(aux))]
        c2 = conv(dropout(concat_elu(c1)))             (2F channels)
        out = x + a * sigmoid(b),  [a, b] = c2

    ``shifted`` is DownShiftedConv2d (the u stream) or DownRightShiftedConv2d (ul); ``aux``
    channels are those of the shortcut input (0 for none).
    """

    def __init__(self, filters: int, shifted: type, aux_channels: int, dropout: float,
                 backend: str | None):
        super().__init__()
        self.conv_in = shifted(2 * filters, filters, backend)
        self.aux = pointwise(2 * aux_channels, filters, backend) if aux_channels else None
        self.dropout = nn.Dropout(dropout)
        self.conv_out = shifted(2 * filters, 2 * filters, backend)
        with torch.no_grad():
            self.conv_out.conv.weight.mul_(0.1)

    def hidden(self, c1: torch.Tensor, aux: torch.Tensor | None) -> torch.Tensor:
        """What conv_out reads, from conv_in's output and the shortcut input."""
        if self.aux is not None:
            c1 = c1 + self.aux(concat_elu(aux))
        return self.dropout(concat_elu(c1))

    def forward(self, x, aux=None):
        c1 = self.conv_in(concat_elu(x))
        return x + gate(self.conv_out(self.hidden(c1, aux)))
