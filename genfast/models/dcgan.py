"""DCGAN (Radford, Metz & Chintala 2015) with the standard or the least-squares GAN loss.

Architecture rules of Radford et al., section 3: strided convolutions in the discriminator and
transposed (fractionally strided) convolutions in the generator instead of pooling; batchnorm in
both, except the generator's output and the discriminator's input layer; ReLU in the generator
with tanh at its output; LeakyReLU(0.2) in the discriminator; weights from N(0, 0.02). The
generator projects z to a [2w, H/4, H/4] map and doubles its side twice (7 -> 14 -> 28 for
Fashion-MNIST, 2 -> 4 -> 8 for digits); the discriminator mirrors it.

Losses, with D(x) the discriminator's logit:
- "standard" (Goodfellow et al. 2014): D minimises BCE(D(x), 1) + BCE(D(G(z)), 0); G minimises
  the non-saturating BCE(D(G(z)), 1).
- "lsgan" (Mao et al. 2017, eq. 2 with a = 0, b = c = 1): D minimises
  0.5 E[(D(x) - 1)^2] + 0.5 E[D(G(z))^2]; G minimises 0.5 E[(D(G(z)) - 1)^2].

Images are scaled to [-1, 1] (tanh's range); samples are rounded to the nearest grey level.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from genfast.models.base import GenerativeModel, register
from genfast.models.conv_stacks import conv_decoder, conv_encoder, init_dcgan
from genfast.models.hparams import check_backend, check_positive_int
from genfast.models.image_codec import check_image_shape, check_images, from_unit, to_unit
from genfast.models.nearest_neighbour import nearest_rms_distances

LOSSES = ("standard", "lsgan")


@register("dcgan")
class DCGAN(GenerativeModel):
    """DCGAN for integer images [B, C, H, W] in [0, levels), H = W a multiple of 4.

    Hyperparameters: ``latent_dim`` (size of z), ``width`` (channels of the discriminator's
    first convolution and of the generator's last hidden map, doubled next to the projection),
    ``loss`` ("standard" or "lsgan"). ``backend`` is accepted like every model's and checked, but
    no genfast op lies on this model's path.
    """

    stages = ("discriminator", "generator")

    def __init__(self, image_shape, levels, *, latent_dim: int = 64, width: int = 32,
                 loss: str = "standard", backend: str | None = None):
        super().__init__(image_shape, levels, latent_dim=latent_dim, width=width, loss=loss,
                         backend=backend)
        channels, side, _ = check_image_shape(image_shape, levels, "DCGAN")
        check_positive_int(latent_dim, "latent_dim", "DCGAN")
        check_positive_int(width, "width", "DCGAN")
        if loss not in LOSSES:
            raise ValueError(f"genfast: DCGAN loss must be one of {LOSSES}, got {loss!r}")
        self.backend = check_backend(backend, "DCGAN")
        self.latent_dim, self.loss = latent_dim, loss
        self.generator = nn.Sequential(
            conv_decoder(latent_dim, side, width, channels, batchnorm=True), nn.Tanh())
        self.discriminator = conv_encoder(channels, side, width, 1, batchnorm=True, leaky=True)
        init_dcgan(self)

    def stage_parameters(self, stage: str):
        """The discriminator's parameters for "discriminator", the generator's for "generator"."""
        if stage == "discriminator":
            return self.discriminator.parameters()
        if stage == "generator":
            return self.generator.parameters()
        raise ValueError(f"genfast: DCGAN stages are {self.stages}, got {stage!r}")

    def generate(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """G(z) for n draws z ~ N(0, I): pixels [n, C, H, W] in [-1, 1]."""
        device = next(self.parameters()).device
        draw_on = generator.device if generator is not None else device
        z = torch.randn(n, self.latent_dim, generator=generator, device=draw_on)
        return self.generator(z.to(device))

    def _logit(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.discriminator(pixels).squeeze(1)  # [B]

    def _target_loss(self, logits: torch.Tensor, target: float) -> torch.Tensor:
        """Mean loss for pushing the logits towards the label ``target`` (1 real, 0 fake)."""
        if self.loss == "lsgan":
            return 0.5 * (logits - target).pow(2).mean()
        return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None,
                stage: str = "discriminator") -> torch.Tensor:
        """The scalar loss of ``stage`` on a batch of real images (mean over the batch).

        The discriminator stage draws as many fakes as there are real images, without a graph
        into the generator; the generator stage backpropagates through the discriminator
        (whose gradients its optimiser leaves alone).
        """
        check_images(images, self.image_shape, self.levels, "DCGAN")
        if stage == "discriminator":
            real = 2 * to_unit(images, self.levels) - 1
            with torch.no_grad():
                fake = self.generate(images.shape[0])
            return (self._target_loss(self._logit(real), 1.0)
                    + self._target_loss(self._logit(fake), 0.0))
        if stage == "generator":
            return self._target_loss(self._logit(self.generate(images.shape[0])), 1.0)
        raise ValueError(f"genfast: DCGAN stages are {self.stages}, got {stage!r}")

    @torch.no_grad()
    def evaluate(self, images: torch.Tensor, labels: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Held-out nearest-neighbour scores for a batch of B test images, each [B]:

        ``nn_sample_to_test``: for each of B generated (rounded) samples, the RMS pixel distance
        in [0, 1] units to its nearest image of this test batch (sample quality);
        ``nn_test_to_sample``: for each test image, the distance to its nearest sample
        (coverage; mode collapse raises it). See genfast.models.nearest_neighbour; the scores
        depend on the batch size, so compare runs evaluated with the same one.
        """
        check_images(images, self.image_shape, self.levels, "DCGAN")
        samples = self.sample(images.shape[0], generator=generator).to(images.device)
        to_test, to_sample = nearest_rms_distances(to_unit(samples, self.levels),
                                                   to_unit(images, self.levels))
        return {"nn_sample_to_test": to_test, "nn_test_to_sample": to_sample}

    @torch.no_grad()
    def sample(self, n: int, *, labels: torch.Tensor | None = None,
               data: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """n images [n, C, H, W] in [0, levels): G(z) rounded to the nearest grey level."""
        check_positive_int(n, "n", "DCGAN.sample")
        return from_unit((self.generate(n, generator) + 1) / 2, self.levels)
