"""The discretized mixture of logistics of PixelCNN++: its negative log-likelihood and a sampler.

Salimans, Karpathy, Chen & Kingma 2017, "PixelCNN++: Improving the PixelCNN with Discretized
Logistic Mixture Likelihood and Other Modifications", eq. 2 and section 2.2. A pixel's colour
channels are modelled by a mixture of ``M`` logistics whose means depend linearly on the
channels already seen:

    mu_g' = mu_g + a * x_r,    mu_b' = mu_b + b * x_r + c * x_g          (section 2.2)

Pixel values are levels k in [0, L) rescaled to x = 2k / (L - 1) - 1 in [-1, 1]; a bin is
[x - 1/(L - 1), x + 1/(L - 1)], and the two edge bins extend to -inf and +inf. The probability of
a bin is sigmoid((x + h - mu) / s) - sigmoid((x - h - mu) / s). Where it falls below 1e-5 the
original implementation (openai/pixel-cnn, nn.py) uses the log density at the bin's centre times
the bin width instead, which is accurate there and keeps the gradient finite; so does ours.

Parameter layout, ``params`` [B, P, H, W] with P = M * (1 + 2C + C(C-1)/2) (10M for RGB, 3M for
grey), channel-major blocks:

    [0, M)                    mixture logits
    [M, M + CM)               means, channel c's M values at M + cM
    [M + CM, M + 2CM)         log scales (clamped below at -7, as the original)
    [M + 2CM, P)              tanh-squashed coefficients: a (g on r), b (b on r), c (b on g)
"""
from __future__ import annotations

import math

import torch

LOG_SCALE_MIN = -7.0
# Below this bin probability the log density at the bin centre replaces log(cdf difference).
TINY_BIN_PROBABILITY = 1e-5


def params_per_mixture(channels: int) -> int:
    """1 logit, C means, C log scales and C(C-1)/2 coefficients per mixture component."""
    return 1 + 2 * channels + channels * (channels - 1) // 2


def split_params(params: torch.Tensor, channels: int):
    """params [B, P, H, W] -> (logits [B, M, H, W], means, log_scales [B, C, M, H, W],
    coefficients [B, C(C-1)/2, M, H, W]) with log scales clamped and coefficients tanh'ed."""
    batch, p, height, width = params.shape
    mixtures = p // params_per_mixture(channels)
    m, cm = mixtures, channels * mixtures
    logits = params[:, :m]
    means = params[:, m:m + cm].reshape(batch, channels, m, height, width)
    log_scales = params[:, m + cm:m + 2 * cm].reshape(batch, channels, m, height, width)
    coefficients = torch.tanh(params[:, m + 2 * cm:].reshape(batch, -1, m, height, width))
    return logits, means, log_scales.clamp(min=LOG_SCALE_MIN), coefficients


def _conditioned_means(means, coefficients, x):
    """Each channel's mean shifted by the channels before it (section 2.2); x [B, C, 1, H, W]."""
    channels = means.shape[1]
    shifted, k = [means[:, 0]], 0
    for c in range(1, channels):
        mean = means[:, c]
        for earlier in range(c):
            mean = mean + coefficients[:, k] * x[:, earlier]
            k += 1
        shifted.append(mean)
    return torch.stack(shifted, dim=1)


def logistic_mixture_nll_ref(images: torch.Tensor, params: torch.Tensor,
                             levels: int = 256) -> torch.Tensor:
    """Negative log-likelihood in nats of integer images [B, C, H, W] (values in [0, levels))
    under mixture parameters [B, P, H, W]: one value per image, shape [B].

    Computed in float64 for float64 params, else in float32.
    """
    acc = torch.float64 if params.dtype == torch.float64 else torch.float32
    channels = images.shape[1]
    logits, means, log_scales, coefficients = split_params(params.to(acc), channels)
    x = (images.to(acc) * (2.0 / (levels - 1)) - 1.0).unsqueeze(2)  # [B, C, 1, H, W]
    half_bin = 1.0 / (levels - 1)

    centred = x - _conditioned_means(means, coefficients, x)
    inv_scale = torch.exp(-log_scales)
    plus_in = inv_scale * (centred + half_bin)
    min_in = inv_scale * (centred - half_bin)
    mid_in = inv_scale * centred
    cdf_delta = torch.sigmoid(plus_in) - torch.sigmoid(min_in)
    log_cdf_plus = plus_in - torch.nn.functional.softplus(plus_in)     # bin 0: log F(x + h)
    log_one_minus_cdf_min = -torch.nn.functional.softplus(min_in)      # bin L-1: log(1 - F)
    # log density at the centre, times the bin width 2h: the tiny-probability branch.
    log_pdf_mid = mid_in - log_scales - 2.0 * torch.nn.functional.softplus(mid_in)
    log_tiny = log_pdf_mid - math.log((levels - 1) / 2.0)
    log_middle = torch.where(cdf_delta > TINY_BIN_PROBABILITY,
                             torch.log(cdf_delta.clamp(min=1e-12)), log_tiny)
    level = images.unsqueeze(2)
    log_probs = torch.where(level == 0, log_cdf_plus,
                            torch.where(level == levels - 1, log_one_minus_cdf_min, log_middle))

    per_mixture = log_probs.sum(dim=1) + torch.log_softmax(logits, dim=1)  # [B, M, H, W]
    return -torch.logsumexp(per_mixture, dim=1).flatten(1).sum(dim=1)


def logistic_mixture_sample_ref(params: torch.Tensor, channels: int, uniform: torch.Tensor,
                                levels: int = 256) -> torch.Tensor:
    """Draws integer images [B, C, H, W] from mixture parameters [B, P, H, W].

    ``uniform`` [B, 1 + C, H, W] float64 in (0, 1): plane 0 picks the mixture component by
    inverse CDF of softmax(logits); plane 1 + c draws channel c's logistic by inverse CDF,
    x = mu + s * log(u / (1 - u)), clamped to [-1, 1] and rounded to the nearest level. Later
    channels' means use the earlier channels' drawn values (before rounding), as the original.
    """
    acc = torch.float64
    logits, means, log_scales, coefficients = split_params(params.to(acc), channels)
    cdf = torch.softmax(logits, dim=1).cumsum(dim=1)                        # [B, M, H, W]
    pick = (cdf < uniform[:, :1] * cdf[:, -1:]).sum(dim=1, keepdim=True)
    pick = pick.clamp(max=logits.shape[1] - 1)                              # [B, 1, H, W]

    def chosen(t):  # [B, C', M, H, W] -> [B, C', H, W] at the picked component
        index = pick.unsqueeze(1).expand(-1, t.shape[1], -1, -1, -1)
        return t.gather(2, index).squeeze(2)

    mean, scale = chosen(means), torch.exp(chosen(log_scales))
    coeff = chosen(coefficients) if channels > 1 else None
    u = uniform[:, 1:].to(acc)
    drawn, k = [], 0
    for c in range(channels):
        m = mean[:, c]
        for earlier in range(c):
            m = m + coeff[:, k] * drawn[earlier]
            k += 1
        drawn.append((m + scale[:, c] * (torch.log(u[:, c]) - torch.log1p(-u[:, c])))
                     .clamp(-1.0, 1.0))
    x = torch.stack(drawn, dim=1)
    return torch.round((x + 1.0) * ((levels - 1) / 2.0)).long()
