"""The layer VAE code drops in where it samples its latent code."""
from torch import nn

from genfast.ops.reparam import REDUCTIONS, reparameterize_kl


class GaussianSample(nn.Module):
    """Samples z ~ N(mu, exp(logvar)) by reparameterization and returns it with its KL to N(0, I).

    forward(mu, logvar, eps=None) -> (z, kl), with z of shape [*] (or [num_samples, *]) and kl
    reduced as ``reduction`` says ('batchmean' is the usual VAE loss term). In eval mode with
    ``sample_in_eval=False`` it returns z = mu, the usual choice for reconstructions.
    """

    def __init__(self, reduction: str = "batchmean", num_samples: int | None = None,
                 sample_in_eval: bool = True, backend: str | None = None):
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"genfast: reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.reduction, self.num_samples = reduction, num_samples
        self.sample_in_eval, self.backend = sample_in_eval, backend

    def forward(self, mu, logvar, eps=None):
        z, kl = reparameterize_kl(mu, logvar, eps=eps, num_samples=self.num_samples,
                                  reduction=self.reduction, backend=self.backend)
        if not self.training and not self.sample_in_eval:
            z = mu if self.num_samples is None else mu.expand(self.num_samples, *mu.shape)
        return z, kl

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, num_samples={self.num_samples}"
