"""Convolutional autoencoder for representation learning.

The encoder compresses an image to ``latent_dim`` features and the decoder rebuilds the image
from them; training minimises the squared reconstruction error in [0, 1] pixel units. The
encoder is then a feature extractor (:meth:`AutoEncoder.encode`): fitted without labels, its
features let a small classifier learn from a few labelled images
(genfast.models.linear_probe.few_label_accuracy).
"""
from __future__ import annotations

import torch

from genfast.models.base import GenerativeModel, register
from genfast.models.conv_stacks import conv_decoder, conv_encoder
from genfast.models.hparams import check_backend, check_positive_int
from genfast.models.image_codec import check_image_shape, check_images, from_unit, to_unit


@register("autoencoder")
class AutoEncoder(GenerativeModel):
    """Autoencoder for integer images [B, C, H, W] in [0, levels), H = W a multiple of 4.

    Hyperparameters: ``latent_dim`` (number of features), ``width`` (channels of the first
    convolution, doubled in the second). ``backend`` is accepted like every model's and
    checked, but no genfast op lies on this model's path (plain convolutions only).
    """

    stages = ("loss",)

    def __init__(self, image_shape, levels, *, latent_dim: int = 32, width: int = 32,
                 backend: str | None = None):
        super().__init__(image_shape, levels, latent_dim=latent_dim, width=width,
                         backend=backend)
        channels, side, _ = check_image_shape(image_shape, levels, "AutoEncoder")
        check_positive_int(latent_dim, "latent_dim", "AutoEncoder")
        check_positive_int(width, "width", "AutoEncoder")
        self.backend = check_backend(backend, "AutoEncoder")
        self.latent_dim = latent_dim
        self.encoder = conv_encoder(channels, side, width, latent_dim)
        self.decoder = conv_decoder(latent_dim, side, width, channels)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Integer images [B, C, H, W] -> features [B, latent_dim]."""
        check_images(images, self.image_shape, self.levels, "AutoEncoder")
        return self.encoder(2 * to_unit(images, self.levels) - 1)

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        """Features [B, latent_dim] -> pixels [B, C, H, W] in (0, 1)."""
        return torch.sigmoid(self.decoder(features))

    def _squared_errors(self, images: torch.Tensor) -> torch.Tensor:
        """[B] mean squared error per image, [0, 1] pixel units."""
        reconstruction = self.decode(self.encode(images))
        return (reconstruction - to_unit(images, self.levels)).pow(2).flatten(1).mean(1)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None,
                stage: str = "loss") -> torch.Tensor:
        """Mean squared reconstruction error over the batch, [0, 1] pixel units."""
        if stage != "loss":
            raise ValueError(f"genfast: AutoEncoder has the single stage 'loss', got "
                             f"stage={stage!r}")
        return self._squared_errors(images).mean()

    @torch.no_grad()
    def evaluate(self, images: torch.Tensor, labels: torch.Tensor | None = None
                 ) -> dict[str, torch.Tensor]:
        """``recon_mse``: [B] per-image mean squared error of the (unrounded) reconstruction."""
        return {"recon_mse": self._squared_errors(images)}

    @torch.no_grad()
    def sample(self, n: int, *, labels: torch.Tensor | None = None,
               data: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Reconstructions [n, C, H, W] in [0, levels) of the first n images of ``data``.

        An autoencoder has no prior to sample from, so it needs ``data``.
        """
        check_positive_int(n, "n", "AutoEncoder.sample")
        if data is None:
            raise ValueError("genfast: AutoEncoder.sample reconstructs images and needs "
                             "data=[N, C, H, W] integer images (it has no prior to sample from)")
        if isinstance(data, torch.Tensor) and data.dim() > 0 and data.shape[0] < n:
            raise ValueError(f"genfast: AutoEncoder.sample asked for {n} reconstructions of "
                             f"{data.shape[0]} images")
        device = next(self.parameters()).device
        return from_unit(self.decode(self.encode(data[:n].to(device))), self.levels)
