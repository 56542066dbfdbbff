"""The Gated PixelCNN layer (van den Oord et al. 2016, "Conditional Image Generation with
PixelCNN Decoders", section 2.2 and figure 2).

Two stacks remove the blind spot of plain masked convolutions. The vertical stack sees the
current row and every row above it (mask 'V'); the horizontal stack sees the pixels to the left
in the current row (mask 'A' in the first layer, 'B' after). The vertical features reach the
horizontal stack through a 1x1 convolution after a shift down by one row, so a pixel only ever
sees rows strictly above it through that link. Both stacks use the gated activation
tanh(W_f * x) * sigmoid(W_g * x) (eq. 2), optionally conditioned on a vector h through V^T h
added to both halves (eq. 4). The horizontal stack has a 1x1 output convolution and a residual
connection, and optionally a skip output: another 1x1 convolution of its gated features, which
models that sum skip connections over the layers feed to their output head.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genfast.nn.masked_conv import MaskedConv2d
from genfast.ops.gated import gated_activation


def shift_down(x: torch.Tensor) -> torch.Tensor:
    """Moves every row of [B, C, H, W] down by one; row 0 becomes zeros."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1, :]


class GatedPixelCNNLayer(nn.Module):
    """One layer of both stacks: forward(v, h, conditioning=None) -> (v_out, h_out), or
    (v_out, h_out, skip) when built with ``skip_channels``.

    Args:
        in_channels: channels of the incoming v and h (the image's channels in the first layer).
        channels: channels of the outgoing v and h.
        kernel_size: odd size k; the vertical stack sees k // 2 rows above and the current row
            over k columns, the horizontal stack the k // 2 pixels to the left.
        mask_type: 'A' for the first layer (the horizontal stack hides the current pixel), 'B'
            for the others.
        conditioning_dim: size of the conditioning vector (a class one-hot or an embedding);
            None for an unconditional layer.
        residual: add h to the horizontal output; default: when mask_type is 'B' and the
            channel counts match.
        backend: forced backend for the layer's genfast ops, or None for genfast's default.
        skip_channels: channels of a skip output, or None (the default) or 0 for none. When
            set, forward also returns skip = a 1x1 convolution (``self.skip``, a weight and a
            bias) of the gated horizontal features, the tensor that ``horizontal_out`` reads,
            before the residual: the skip connection of common Gated PixelCNN code, where a
            model sums the skips of every layer into its output head. It adds the state dict
            keys ``skip.weight`` [skip_channels, channels, 1, 1] and ``skip.bias``. None or 0
            leaves the layer as it was without the argument (two outputs, the same state dict
            keys), so existing checkpoints load unchanged.
    """

    def __init__(self, in_channels: int, channels: int, kernel_size: int = 3,
                 mask_type: str = "B", conditioning_dim: int | None = None,
                 residual: bool | None = None, backend: str | None = None,
                 skip_channels: int | None = None):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"genfast: GatedPixelCNNLayer needs an odd kernel_size, "
                             f"got {kernel_size}")
        if mask_type not in ("A", "B"):
            raise ValueError(f"genfast: mask_type must be 'A' or 'B', got {mask_type!r}")
        if residual is None:
            residual = mask_type == "B" and in_channels == channels
        if residual and in_channels != channels:
            raise ValueError(f"genfast: a residual layer needs in_channels == channels, got "
                             f"{in_channels} and {channels}")
        if skip_channels is not None and (isinstance(skip_channels, bool)
                                          or not isinstance(skip_channels, int)
                                          or skip_channels < 0):
            raise ValueError(f"genfast: skip_channels must be a positive int, 0 or None, got "
                             f"{skip_channels!r}")
        self.channels, self.residual, self.backend = channels, residual, backend
        self.skip_channels = skip_channels or None
        k = kernel_size
        self.vertical = MaskedConv2d(in_channels, 2 * channels, k, "V", backend=backend)
        self.horizontal = MaskedConv2d(in_channels, 2 * channels, (1, k), mask_type,
                                       backend=backend)
        # 1x1 layers as MaskedConv2d with an all-ones mask (nn.Conv2d's weight and bias): genfast
        # kernels give the same bits on one pixel as on the whole image, which cached sampling
        # relies on.
        self.vertical_to_horizontal = MaskedConv2d(2 * channels, 2 * channels, 1, "B",
                                                   backend=backend)
        self.horizontal_out = MaskedConv2d(channels, channels, 1, "B", backend=backend)
        self.conditioning = (nn.Linear(conditioning_dim, 4 * channels, bias=False)
                             if conditioning_dim else None)
        # Registered last, so that with it the other parameters keep their order (and an
        # optimizer's state its indices); as None it adds nothing to the state dict.
        self.skip = (MaskedConv2d(channels, skip_channels, 1, "B", backend=backend)
                     if skip_channels else None)

    def forward(self, v: torch.Tensor, h: torch.Tensor,
                conditioning: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        v_pre = self.vertical(v)
        h_pre = self.horizontal(h) + self.vertical_to_horizontal(shift_down(v_pre))
        if conditioning is not None:
            if self.conditioning is None:
                raise ValueError("genfast: this layer was built without conditioning_dim")
            bias_v, bias_h = self.conditioning(conditioning)[:, :, None, None].chunk(2, dim=1)
            v_pre, h_pre = v_pre + bias_v, h_pre + bias_h
        v_out = gated_activation(v_pre, backend=self.backend)
        h_gated = gated_activation(h_pre, backend=self.backend)
        h_out = self.horizontal_out(h_gated)
        if self.residual:
            h_out = h_out + h
        if self.skip is None:
            return v_out, h_out
        return v_out, h_out, self.skip(h_gated)

    def extra_repr(self) -> str:
        skip = f", skip_channels={self.skip_channels}" if self.skip is not None else ""
        return f"channels={self.channels}, residual={self.residual}{skip}"
