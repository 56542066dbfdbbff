"""The per-pixel independent baseline: one categorical distribution per pixel and colour.

log p(x) = sum over i, j, c of log softmax(theta_ijc)[x_ijc]. It ignores every dependence
between pixels, so any autoregressive model worth its name must beat it. Fitted by the
training loop like the other models, or in closed form (:meth:`fit_counts`).
"""
from __future__ import annotations

import torch
from torch import nn

from genfast.models.autoregressive import AutoregressiveModel
from genfast.models.base import register
from genfast.models.sampling import PixelStepper


@register("independent")
class IndependentPixels(AutoregressiveModel):
    """theta [levels, C, H, W], zero at start: the uniform model, log(levels) nats per value.

    ``backend`` is accepted (and ignored: no genfast layer) so every model builds alike.
    """

    def __init__(self, image_shape, levels, backend: str | None = None):
        super().__init__(image_shape, levels)
        self.theta = nn.Parameter(torch.zeros(self.levels, *self.image_shape))

    def network(self, x, labels=None):
        return self.theta.expand(x.shape[0], *self.theta.shape)

    def cached_stepper(self, n, labels):
        return _IndependentStepper(self, n)

    @torch.no_grad()
    def fit_counts(self, images: torch.Tensor, prior: float = 0.5) -> None:
        """Closed-form fit: theta = log((count + prior) / (N + levels * prior)), the posterior
        mean of each categorical under a symmetric Dirichlet(prior). images: [N, C, H, W]."""
        self.check_images(images)
        one_hot = torch.nn.functional.one_hot(images.long(), self.levels)  # [N, C, H, W, L]
        counts = one_hot.sum(0).movedim(-1, 0).to(self.theta)
        self.theta.copy_(torch.log((counts + prior) / (len(images) + self.levels * prior)))


class _IndependentStepper(PixelStepper):
    """No network to cache: each pixel's logits are its own parameters."""

    def __init__(self, model: IndependentPixels, n: int):
        self.theta, self.n = model.theta, n

    def logits(self, i, j, k):
        return self.theta[:, k, i, j].expand(self.n, -1)

    def set_value(self, i, j, k, values):
        pass
