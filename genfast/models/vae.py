"""Convolutional variational autoencoder with a discrete decoder.

Kingma & Welling 2014, "Auto-Encoding Variational Bayes": the encoder gives q(z|x) =
N(mu, diag(exp(logvar))), z is drawn by reparameterization (genfast.reparameterize_kl, which also
returns the KL to the prior N(0, I) in the same fused pass) and the decoder gives p(x|z), a
categorical over the ``levels`` grey levels of every pixel (Bernoulli when levels == 2). The
training loss is the negative ELBO, -E_q[log p(x|z)] + KL(q(z|x) || p(z)), in nats per image.

Evaluation adds the importance-weighted estimate of log p(x) (Burda et al. 2016, "Importance
Weighted Autoencoders", eq. 8): log p(x) ~ logsumexp_k(log p(x|z_k) + log p(z_k) - log q(z_k|x))
- log k with z_1..z_k ~ q(z|x). In expectation it lies between the ELBO (k = 1) and log p(x).
"""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F

import genfast
from genfast import _backend
from genfast.models.base import GenerativeModel, register
from genfast.models.conv_stacks import conv_decoder, conv_encoder
from genfast.models.hparams import check_backend, check_positive_int
from genfast.models.image_codec import check_image_shape, check_images, to_unit

# Largest decoder output (in floats) evaluate() materialises at once; bounds its memory when
# k samples of 256-level 28x28 images would not fit.
_EVAL_ELEMENTS = 2**24
_LOG_2PI = math.log(2 * math.pi)


def gaussian_log_density(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))) summed over the last dimension: [..., D] -> [...]."""
    return -0.5 * ((z - mu).pow(2) * torch.exp(-logvar) + logvar + _LOG_2PI).sum(-1)


@register("vae")
class VAE(GenerativeModel):
    """VAE for integer images [B, C, H, W] in [0, levels), H = W a multiple of 4.

    Hyperparameters: ``latent_dim`` (size of z), ``width`` (channels of the first convolution,
    doubled in the second), ``iw_samples`` (k of the importance-weighted estimate in
    :meth:`evaluate`), ``backend`` (genfast backend of the reparameterization ops).
    """

    stages = ("loss",)

    def __init__(self, image_shape, levels, *, latent_dim: int = 16, width: int = 32,
                 iw_samples: int = 100, backend: str | None = None):
        super().__init__(image_shape, levels, latent_dim=latent_dim, width=width,
                         iw_samples=iw_samples, backend=backend)
        channels, side, _ = check_image_shape(image_shape, levels, "VAE")
        for name, value in (("latent_dim", latent_dim), ("width", width),
                            ("iw_samples", iw_samples)):
            check_positive_int(value, name, "VAE")
        self.backend = check_backend(backend, "VAE")
        self.latent_dim, self.iw_samples = latent_dim, iw_samples
        self.bernoulli = self.levels == 2
        logits_per_pixel = 1 if self.bernoulli else self.levels
        self.encoder = conv_encoder(channels, side, width, 2 * latent_dim)
        self.decoder = conv_decoder(latent_dim, side, width, channels * logits_per_pixel)

    # ------------------------------------------------------------------ the two networks

    def posterior(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x) of integer images [B, C, H, W]: (mu, logvar), each [B, latent_dim]."""
        check_images(images, self.image_shape, self.levels, "VAE")
        mu, logvar = self.encoder(2 * to_unit(images, self.levels) - 1).chunk(2, dim=-1)
        return mu, logvar

    def decoder_logits(self, z: torch.Tensor) -> torch.Tensor:
        """p(x|z) as logits: z [B, latent_dim] -> [B, C, H, W] (Bernoulli) or
        [B, C, levels, H, W] (categorical)."""
        out = self._decode(z)
        if self.bernoulli:
            return out
        channels, height, width = self.image_shape
        return out.view(out.shape[0], channels, self.levels, height, width)

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder. On a CPU, unless genfast's backend here is the reference, its feature
        maps are channels_last: oneDNN's transposed convolutions run faster on them, and the
        logits come out with each pixel's levels contiguous for the likelihood."""
        if z.device.type != "cpu" or _backend.select(
                "reparameterize_kl", self.backend, z.device, z.dtype) == "reference":
            return self.decoder(z)
        maps = self.decoder[:2](z)  # Linear, Unflatten (conv_decoder)
        return self.decoder[2:](maps.contiguous(memory_format=torch.channels_last))

    def reconstruction_log_prob(self, logits: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """log p(x|z) in nats, summed over pixels: logits as from :meth:`decoder_logits`,
        images [B, C, H, W] -> [B]."""
        if self.bernoulli:
            per_pixel = -F.binary_cross_entropy_with_logits(logits, images.to(logits.dtype),
                                                            reduction="none")
        elif logits.stride(2) == 1:
            # Levels contiguous (channels_last maps): the log-softmax over the last axis of the
            # [B, H, W, C, levels] view reads the logits in place; the same sum.
            per_pixel = logits.permute(0, 3, 4, 1, 2).log_softmax(-1).gather(
                -1, images.long().permute(0, 2, 3, 1).unsqueeze(-1)).squeeze(-1)
        else:
            per_pixel = logits.log_softmax(2).gather(2, images.long().unsqueeze(2)).squeeze(2)
        return per_pixel.flatten(1).sum(1)

    # ------------------------------------------------------------------ the protocol

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None,
                stage: str = "loss") -> torch.Tensor:
        """Negative ELBO in nats, averaged over the batch (one z per image)."""
        if stage != "loss":
            raise ValueError(f"genfast: VAE has the single stage 'loss', got stage={stage!r}")
        mu, logvar = self.posterior(images)
        z, kl = genfast.reparameterize_kl(mu, logvar, reduction="batchmean", backend=self.backend)
        return kl - self.reconstruction_log_prob(self.decoder_logits(z), images).mean()

    @torch.no_grad()
    def evaluate(self, images: torch.Tensor, labels: torch.Tensor | None = None, *,
                 iw_samples: int | None = None) -> dict[str, torch.Tensor]:
        """Per image [B], in nats: ``elbo_nats`` (-ELBO, its reconstruction term averaged over
        the k draws, the KL in closed form) and ``iw_nll_nats`` (-log p(x) estimated with k
        importance samples). ``iw_samples`` overrides the model's k.

        It costs k decoder passes per image: cheap for 8x8 digits, but for 256-level 28x28
        images on a CPU choose a small k (e.g. ``-p iw_samples=10``)."""
        k = check_positive_int(self.iw_samples if iw_samples is None else iw_samples,
                               "iw_samples", "VAE")
        check_images(images, self.image_shape, self.levels, "VAE")
        per_image = self.decoder[-1].out_channels * math.prod(self.image_shape[1:])
        rows = max(1, min(images.shape[0], _EVAL_ELEMENTS // per_image))
        results = [self._evaluate_rows(images[i:i + rows], k, per_image)
                   for i in range(0, images.shape[0], rows)]
        return {name: torch.cat([r[name] for r in results]) for name in results[0]}

    def _evaluate_rows(self, images, k, per_image):
        mu, logvar = self.posterior(images)
        kl = genfast.gaussian_kl(mu, logvar, reduction="none", backend=self.backend).sum(-1)
        per_draw = max(1, min(k, _EVAL_ELEMENTS // (per_image * images.shape[0])))
        log_px, log_w = [], []
        for start in range(0, k, per_draw):
            draws = min(per_draw, k - start)
            z = genfast.reparameterize(mu, logvar, num_samples=draws, backend=self.backend)
            repeated = images.expand(draws, *images.shape).flatten(0, 1)
            lp = self.reconstruction_log_prob(self.decoder_logits(z.flatten(0, 1)), repeated)
            lp = lp.view(draws, images.shape[0])
            log_prior = -0.5 * (z.pow(2) + _LOG_2PI).sum(-1)  # log N(z; 0, I)
            log_px.append(lp)
            log_w.append(lp + log_prior - gaussian_log_density(z, mu, logvar))
        log_px, log_w = torch.cat(log_px), torch.cat(log_w)
        iw_log_likelihood = torch.logsumexp(log_w, 0) - math.log(k)
        return {"elbo_nats": kl - log_px.mean(0), "iw_nll_nats": -iw_log_likelihood}

    @torch.no_grad()
    def sample(self, n: int, *, labels: torch.Tensor | None = None,
               data: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """n images [n, C, H, W] in [0, levels): z ~ N(0, I), then x ~ p(x|z)."""
        check_positive_int(n, "n", "VAE.sample")
        device = next(self.parameters()).device
        draw_on = generator.device if generator is not None else device
        z = torch.randn(n, self.latent_dim, generator=generator, device=draw_on).to(device)
        logits = self.decoder_logits(z).to(draw_on)
        if self.bernoulli:
            images = torch.bernoulli(torch.sigmoid(logits), generator=generator).long()
        else:
            probs = logits.movedim(2, -1).softmax(-1)  # [n, C, H, W, levels]
            images = torch.multinomial(probs.reshape(-1, self.levels), 1, generator=generator)
            images = images.view(probs.shape[:-1])
        return images.to(device)
