"""PixelRNN (van den Oord, Kalchbrenner and Kavukcuoglu 2016, "Pixel Recurrent Neural
Networks", sections 3.1-3.4) with Row LSTM or Diagonal BiLSTM layers.

A 7x7 mask-A convolution to 2h channels, then LSTM layers (genfast.nn.RowLSTM or
DiagonalBiLSTM, mask B, h hidden units) each followed by a 1x1 mask-B convolution back to 2h
channels and a residual connection (section 3.4), then the PixelCNN output head
(ReLU - 1x1 - ReLU - 1x1) to ``levels`` logits per pixel and colour. Colour groups run through
every layer, so RGB data is modelled colour by colour; ``colour_layout`` places them (contiguous
blocks by default, or interleaved) from the first layer to the logits.
"""
from __future__ import annotations

from torch import nn

from genfast.models.autoregressive import AutoregressiveModel, multiple_of
from genfast.models.base import register
from genfast.models.pixelcnn import OutputHead, check_divisible, pointwise
from genfast.nn import DiagonalBiLSTM, MaskedConv2d, RowLSTM
from genfast.ops.masked_conv import check_colour_layout

LAYER_TYPES = ("row", "diagonal")


class ResidualLSTM(nn.Module):
    """x [B, 2h, H, W] -> x + 1x1(LSTM(x)), same shape."""

    def __init__(self, layer: str, channels: int, hidden: int, kernel_size: int, colours: int,
                 backend: str | None, colour_layout: str = "contiguous"):
        super().__init__()
        if layer == "row":
            self.lstm = RowLSTM(channels, hidden, kernel_size, "B", colours, backend=backend,
                                colour_layout=colour_layout)
        else:
            self.lstm = DiagonalBiLSTM(channels, hidden, "B", colours, backend=backend,
                                       colour_layout=colour_layout)
        self.out = pointwise(hidden, channels, colours, backend, colour_layout)

    def forward(self, x):
        return x + self.out(self.lstm(x))


@register("pixelrnn")
class PixelRNN(AutoregressiveModel):
    """PixelRNN over images [B, C, H, W] in [0, levels).

    Args:
        image_shape: (C, H, W), C = 1 or 3.
        levels: values per colour.
        layer: "row" (Row LSTM) or "diagonal" (Diagonal BiLSTM).
        hidden: h, the LSTM state channels (a multiple of C; default 32, 33 for RGB); the
            residual stream has 2h.
        layers: number of LSTM layers.
        first_kernel: size of the mask-A convolution.
        kernel_size: the Row LSTM's kernel (input-to-state 1 x k, state-to-state k); unused by
            the Diagonal BiLSTM, whose kernels are fixed by the paper (1 x 1 and 2 x 1).
        head_channels: width of the hidden output layer (a multiple of C; default 64, 66 for
            RGB).
        backend: genfast backend of every masked conv and LSTM recurrence.
        colour_layout: where each colour's channels sit in every layer, from the first to the
            logits: "contiguous" (the default: channel k of C in group k * colours // C, so the
            output holds colour c's logits in block c) or "interleaved" (group k % colours, so
            output channel l * colours + c is colour c's logit of value l), as other PixelCNN
            code lays them out. The same with one colour.
    """

    def __init__(self, image_shape, levels, layer: str = "row", hidden: int | None = None,
                 layers: int = 2, first_kernel: int = 7, kernel_size: int = 3,
                 head_channels: int | None = None, backend: str | None = None,
                 colour_layout: str = "contiguous"):
        super().__init__(image_shape, levels, layer=layer, hidden=hidden, layers=layers,
                         first_kernel=first_kernel, kernel_size=kernel_size,
                         head_channels=head_channels, backend=backend,
                         colour_layout=colour_layout)
        check_colour_layout(colour_layout)
        self.colour_layout = colour_layout
        if layer not in LAYER_TYPES:
            raise ValueError(f"genfast: PixelRNN layer must be 'row' or 'diagonal', "
                             f"got {layer!r}")
        if layers < 1:
            raise ValueError(f"genfast: PixelRNN needs layers >= 1, got {layers}")
        colours = self.image_shape[0]
        hidden = multiple_of(hidden, 32, colours)
        head_channels = multiple_of(head_channels, 64, colours)
        check_divisible("PixelRNN", "hidden", hidden, colours)
        check_divisible("PixelRNN", "head_channels", head_channels, colours)
        self.first = MaskedConv2d(colours, 2 * hidden, first_kernel, "A", colours,
                                  backend=backend, colour_layout=colour_layout)
        self.lstms = nn.Sequential(*(ResidualLSTM(layer, 2 * hidden, hidden, kernel_size,
                                                  colours, backend, colour_layout)
                                     for _ in range(layers)))
        self.head = OutputHead(2 * hidden, head_channels, colours, self.levels, backend,
                               colour_layout)

    @property
    def output_layer(self):
        return self.head.last

    def head_features(self, x, labels=None):
        return self.head.hidden(self.lstms(self.first(x)))

    def cached_stepper(self, n, labels):
        from genfast.models.pixelrnn_sampler import PixelRNNStepper

        return PixelRNNStepper(self, n)
