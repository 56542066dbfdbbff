"""The two-level convolutional encoder and decoder shared by the VAE, the autoencoder and DCGAN.

Down: two 4x4 stride-2 convolutions (side H -> H/2 -> H/4), then a linear layer. Up: a linear
layer to a [2w, H/4, H/4] map, then two 4x4 stride-2 transposed convolutions (H/4 -> H/2 -> H).
For 28x28 images the maps are 14x14 and 7x7, for 8x8 digits 4x4 and 2x2. This is the DCGAN
shape (Radford et al. 2015, section 3: strided convolutions instead of pooling, a projection
instead of fully connected hidden layers); the GAN adds batchnorm, the VAE and autoencoder
do without it so that their per-image outputs do not depend on the rest of the batch.
"""
from __future__ import annotations

from torch import nn


def init_dcgan(module: nn.Module) -> None:
    """Radford et al. 2015: weights from N(0, 0.02); batchnorm scales from N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def conv_encoder(in_channels: int, side: int, width: int, out_features: int, *,
                 batchnorm: bool = False, leaky: bool = False) -> nn.Sequential:
    """[B, in_channels, side, side] -> [B, out_features].

    ``batchnorm`` normalises the second convolution only (never the input layer, as DCGAN
    prescribes); ``leaky`` uses LeakyReLU(0.2), DCGAN's discriminator activation.
    """
    def act():
        return nn.LeakyReLU(0.2) if leaky else nn.ReLU()

    bottom = side // 4
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 4, stride=2, padding=1), act(),
        nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),
        *([nn.BatchNorm2d(2 * width)] if batchnorm else []), act(),
        nn.Flatten(),
        nn.Linear(2 * width * bottom * bottom, out_features),
    )


def conv_decoder(in_features: int, side: int, width: int, out_channels: int, *,
                 batchnorm: bool = False) -> nn.Sequential:
    """[B, in_features] -> [B, out_channels, side, side], without an output activation.

    ``batchnorm`` normalises every hidden map (not the output, as DCGAN prescribes).
    """
    bottom = side // 4

    def norm(channels):
        return [nn.BatchNorm2d(channels)] if batchnorm else []

    return nn.Sequential(
        nn.Linear(in_features, 2 * width * bottom * bottom),
        nn.Unflatten(1, (2 * width, bottom, bottom)), *norm(2 * width), nn.ReLU(),
        nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1), *norm(width), nn.ReLU(),
        nn.ConvTranspose2d(width, out_channels, 4, stride=2, padding=1),
    )

