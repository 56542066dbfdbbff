"""Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN
Decoders"), optionally conditioned on the class label (section 2.3, eq. 4).

A first genfast GatedPixelCNNLayer with mask A (k = first_kernel), then layers with mask B
and residual connections; the horizontal stack of the last layer goes through the output
head (ReLU - 1x1 - ReLU - 1x1) to ``levels`` logits per pixel and colour.

Colours. GatedPixelCNNLayer has no colour groups: its mask A hides every colour of the current
pixel, so its features describe the pixels before it only. For RGB data the head therefore
also reads the current pixel through a 1x1 mask-A convolution with colour groups (colour c
sees colours < c), and the head's 1x1 layers keep the groups apart (mask B). With one channel
that path would see nothing and is left out. ``colour_layout`` places the groups in those
layers and in the logits (contiguous blocks by default, or interleaved).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genfast.models.autoregressive import AutoregressiveModel, multiple_of
from genfast.models.base import register
from genfast.models.pixelcnn import check_divisible, pointwise
from genfast.nn import GatedPixelCNNLayer, MaskedConv2d
from genfast.ops.masked_conv import check_colour_layout


@register("gated_pixelcnn")
class GatedPixelCNN(AutoregressiveModel):
    """Gated PixelCNN over images [B, C, H, W] in [0, levels), class-conditional when
    ``num_classes`` is given (labels [B] in [0, num_classes), one-hot into every layer).

    Args:
        image_shape: (C, H, W), C = 1 or 3.
        levels: values per colour.
        channels: channels of both stacks.
        layers: number of gated layers, the mask-A one included.
        first_kernel, kernel_size: kernel of the first layer and of the others (odd).
        head_channels: width of the hidden output layer (a multiple of C; default 64, 66 for
            RGB).
        num_classes: number of classes to condition on, or None (unconditional).
        backend: genfast backend of every masked conv and gated activation.
        colour_layout: where each colour's channels sit in the colour-aware layers (the
            current-pixel path and the head) and the logits: "contiguous" (the default:
            channel k of C in group k * colours // C, so the output holds colour c's logits
            in block c) or "interleaved" (group k % colours, so output channel
            l * colours + c is colour c's logit of value l), as other PixelCNN code lays them
            out. The same with one colour.
    """

    def __init__(self, image_shape, levels, channels: int = 32, layers: int = 5,
                 first_kernel: int = 7, kernel_size: int = 3, head_channels: int | None = None,
                 num_classes: int | None = None, backend: str | None = None,
                 colour_layout: str = "contiguous"):
        super().__init__(image_shape, levels, channels=channels, layers=layers,
                         first_kernel=first_kernel, kernel_size=kernel_size,
                         head_channels=head_channels, num_classes=num_classes, backend=backend,
                         colour_layout=colour_layout)
        check_colour_layout(colour_layout)
        self.colour_layout = colour_layout
        colours = self.image_shape[0]
        head_channels = multiple_of(head_channels, 64, colours)
        if layers < 1:
            raise ValueError(f"genfast: GatedPixelCNN needs layers >= 1, got {layers}")
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"genfast: num_classes must be positive or None, got {num_classes}")
        check_divisible("GatedPixelCNN", "head_channels", head_channels, colours)
        self.num_classes = num_classes
        self.layers = nn.ModuleList(
            [GatedPixelCNNLayer(colours, channels, first_kernel, "A", num_classes,
                                backend=backend)]
            + [GatedPixelCNNLayer(channels, channels, kernel_size, "B", num_classes,
                                  backend=backend) for _ in range(layers - 1)])
        self.features_to_head = pointwise(channels, head_channels, 1, backend)
        self.current_pixel = (MaskedConv2d(colours, head_channels, 1, "A", colours,
                                           backend=backend, colour_layout=colour_layout)
                              if colours > 1 else None)
        self.head_out = pointwise(head_channels, colours * self.levels, colours, backend,
                                  colour_layout)

    def _one_hot(self, labels: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        if self.num_classes is None:
            return None
        if labels is None:
            raise ValueError(f"genfast: this GatedPixelCNN is conditioned on {self.num_classes}"
                             " classes and needs labels")
        if labels.shape != (batch,) or int(labels.min()) < 0 \
                or int(labels.max()) >= self.num_classes:
            raise ValueError(f"genfast: labels must be [{batch}] integers in "
                             f"[0, {self.num_classes}), got shape {tuple(labels.shape)}")
        return F.one_hot(labels.long(), self.num_classes).to(self.head_out.weight.dtype)

    @property
    def output_layer(self):
        return self.head_out

    def head_features(self, x, labels=None):
        condition = self._one_hot(labels, len(x))
        v = h = x
        for layer in self.layers:
            v, h = layer(v, h, condition)
        hidden = self.features_to_head(torch.relu(h))
        if self.current_pixel is not None:
            hidden = hidden + self.current_pixel(x)
        return torch.relu(hidden)

    def cached_stepper(self, n, labels):
        from genfast.models.gated_pixelcnn_sampler import GatedPixelCNNStepper

        return GatedPixelCNNStepper(self, n, labels)

    def default_labels(self, n, device):
        """Classes 0, 1, 2, ... in turn, so a sample grid shows every class."""
        if self.num_classes is None:
            return None
        return torch.arange(n, device=device) % self.num_classes
