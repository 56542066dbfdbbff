"""PixelCNN (van den Oord, Kalchbrenner and Kavukcuoglu 2016, "Pixel Recurrent Neural
Networks", section 3.5 and figure 5).

A 7x7 mask-A convolution (the current pixel hidden), residual blocks of
ReLU - 1x1 (2h -> h) - ReLU - 3x3 mask B (h -> h) - ReLU - 1x1 (h -> 2h), then ReLU - 1x1 -
ReLU - 1x1 output layers giving ``levels`` logits per pixel and colour. The 7x7 and 3x3
layers are genfast MaskedConv2d; the 1x1 ones use mask B with the colour groups so that, for
RGB data, colour c at a pixel only sees colours < c of that pixel (with one channel the mask is
all ones, a plain 1x1 convolution). ``colour_layout`` says where each colour's channels sit in
every layer and in the logits (contiguous blocks by default, or interleaved).
"""
from __future__ import annotations

import torch
from torch import nn

from genfast.models.autoregressive import AutoregressiveModel, multiple_of
from genfast.models.base import register
from genfast.nn import MaskedConv2d
from genfast.ops.masked_conv import check_colour_layout


def check_divisible(model: str, name: str, value: int, colours: int) -> None:
    if value < 1 or value % colours:
        raise ValueError(f"genfast: {model} splits {name} into {colours} colour groups; "
                         f"{name}={value} must be a positive multiple of {colours}")


def pointwise(in_channels: int, out_channels: int, colours: int, backend: str | None,
              colour_layout: str = "contiguous") -> nn.Module:
    """A 1x1 convolution that keeps colour groups apart (mask B).

    A genfast MaskedConv2d even with one colour group (all-ones mask; the same weight, bias and
    state_dict keys as nn.Conv2d): its kernels sum each output in a fixed order whatever the
    shape, so the cached sampler's one-pixel evaluations equal the full network's to the bit,
    where nn.Conv2d's (oneDNN's) bits change with the batch and image size.
    """
    return MaskedConv2d(in_channels, out_channels, 1, "B", colours, backend=backend,
                        colour_layout=colour_layout)


class ResidualBlock(nn.Module):
    """PixelCNN's residual block: x [B, 2h, H, W] -> x + f(x), same shape."""

    def __init__(self, channels: int, kernel_size: int, colours: int, backend: str | None,
                 colour_layout: str = "contiguous"):
        super().__init__()
        half = channels // 2
        self.reduce = pointwise(channels, half, colours, backend, colour_layout)
        self.masked = MaskedConv2d(half, half, kernel_size, "B", colours, backend=backend,
                                   colour_layout=colour_layout)
        self.expand = pointwise(half, channels, colours, backend, colour_layout)

    def forward(self, x):
        y = self.reduce(torch.relu(x))
        y = self.masked(torch.relu(y))
        return x + self.expand(torch.relu(y))


class OutputHead(nn.Sequential):
    """ReLU - 1x1 - ReLU - 1x1: features [B, in, H, W] -> [B, C * levels, H, W], colour-grouped."""

    def __init__(self, in_channels: int, hidden: int, colours: int, levels: int,
                 backend: str | None, colour_layout: str = "contiguous"):
        super().__init__(nn.ReLU(), pointwise(in_channels, hidden, colours, backend,
                                              colour_layout),
                         nn.ReLU(), pointwise(hidden, colours * levels, colours, backend,
                                              colour_layout))

    @property
    def last(self) -> MaskedConv2d:
        """The 1x1 layer giving the logits."""
        return self[3]

    def hidden(self, x):
        """What the last layer reads: ReLU - 1x1 - ReLU of x."""
        return torch.relu(self[1](torch.relu(x)))


@register("pixelcnn")
class PixelCNN(AutoregressiveModel):
    """PixelCNN over images [B, C, H, W] with values in [0, levels).

    Args:
        image_shape: (C, H, W), C = 1 or 3.
        levels: values per colour (256, 17 for digits, 2 binarized: a 2-way softmax).
        channels: 2h, the width of the residual stream (a multiple of 2C; default 64, 66 for
            RGB).
        blocks: number of residual blocks.
        first_kernel: size of the mask-A convolution (7 in the paper).
        kernel_size: size of the mask-B convolution inside each block.
        head_channels: width of the hidden 1x1 output layer (a multiple of C; default 64, 66
            for RGB).
        backend: genfast backend of every masked layer (None: genfast's default).
        colour_layout: where each colour's channels sit in every layer, from the first to the
            logits: "contiguous" (the default: channel k of C in group k * colours // C, so the
            output holds colour c's logits in block c) or "interleaved" (group k % colours, so
            output channel l * colours + c is colour c's logit of value l), as other PixelCNN
            code lays them out. The same with one colour.
    """

    def __init__(self, image_shape, levels, channels: int | None = None, blocks: int = 4,
                 first_kernel: int = 7, kernel_size: int = 3, head_channels: int | None = None,
                 backend: str | None = None, colour_layout: str = "contiguous"):
        super().__init__(image_shape, levels, channels=channels, blocks=blocks,
                         first_kernel=first_kernel, kernel_size=kernel_size,
                         head_channels=head_channels, backend=backend,
                         colour_layout=colour_layout)
        check_colour_layout(colour_layout)
        self.colour_layout = colour_layout
        colours = self.image_shape[0]
        channels = multiple_of(channels, 64, 2 * colours)
        head_channels = multiple_of(head_channels, 64, colours)
        check_divisible("PixelCNN", "channels", channels, 2 * colours)
        check_divisible("PixelCNN", "head_channels", head_channels, colours)
        self.first = MaskedConv2d(colours, channels, first_kernel, "A", colours, backend=backend,
                                  colour_layout=colour_layout)
        self.blocks = nn.Sequential(*(ResidualBlock(channels, kernel_size, colours, backend,
                                                    colour_layout) for _ in range(blocks)))
        self.head = OutputHead(channels, head_channels, colours, self.levels, backend,
                               colour_layout)

    @property
    def output_layer(self):
        return self.head.last

    def head_features(self, x, labels=None):
        return self.head.hidden(self.blocks(self.first(x)))

    def cached_stepper(self, n, labels):
        from genfast.models.pixelcnn_sampler import PixelCNNStepper

        return PixelCNNStepper(self, n)
