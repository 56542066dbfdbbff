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

The fast backends run ``genfast::logistic_mixture_nll``: one pass over the pixels, each
pixel's components in registers (or one small tile), never the [B, C, M, H, W] temporaries of
the reference; its backward op recomputes everything from images and params in one more pass.
Where autograd will want the gradient (eager, outside torch.compile),
``genfast::logistic_mixture_nll_with_grad`` (``_triton_with_grad`` on Triton) computes the NLL
and its gradient in one pass instead, and the backward only scales that
(genfast/ops/_gradient_in_forward.py).
The gradient is taken with respect to params only (images are integer levels). The sampler
``genfast::logistic_mixture_sample`` draws its uniforms from genfast's Philox stream by an
explicit int64[2] seed, and the reference path draws the same uniforms
(genfast.ops.philox.philox_uniform_ref), so both give the same image for the same seed.
"""
from __future__ import annotations

import math

import torch

from genfast import _backend, _ext
from genfast.ops._gradient_in_forward import gradient_in_forward_call
from genfast.ops._library import eager_call, register_fake_and_autograd, triton_kernels_exist
from genfast.ops.philox import philox_uniform_ref
from genfast.ops.reparam import draw_seed

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


def logistic_mixture_uniform_ref(seed: torch.Tensor, shape, device=None) -> torch.Tensor:
    """The sampler's uniforms [B, 1 + C, H, W] (float64) of the int64[2] seed (key, offset)."""
    key, offset = seed.tolist()
    numel = math.prod(shape)
    return philox_uniform_ref(key, offset, numel).reshape(shape).to(device)


# ----------------------------------------------------------------------------- the ops

REDUCTIONS = ("none", "sum", "mean")
MOST_CHANNELS = 4  # the kernels hold each pixel's channel values in registers


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _fake_nll(images, params, levels):
    return params.new_empty((params.shape[0],), dtype=_compute_dtype(params.dtype))


def _fake_backward(grad_nll, images, params, levels):
    return torch.empty(params.shape, dtype=params.dtype, device=params.device)


def _setup_context(ctx, inputs, output):
    images, params, levels = inputs
    ctx.save_for_backward(images, params)
    ctx.levels = levels


def _make_backward(backward_op):
    def backward(ctx, grad_nll):
        images, params = ctx.saved_tensors
        return None, backward_op(grad_nll, images, params, ctx.levels), None

    return backward


@torch.library.custom_op("genfast::logistic_mixture_nll_triton", mutates_args=())
def _triton_forward(images: torch.Tensor, params: torch.Tensor, levels: int) -> torch.Tensor:
    """genfast::logistic_mixture_nll on Triton (schema as in csrc/op_schemas.h).

    Defined here rather than in C++ so that the Triton backend works without the extension.
    """
    from genfast.kernels import logistic_mixture as kernels

    return kernels.logistic_mixture_nll(images, params, levels)


@torch.library.custom_op("genfast::logistic_mixture_nll_triton_backward", mutates_args=())
def _triton_backward(grad_nll: torch.Tensor, images: torch.Tensor, params: torch.Tensor,
                     levels: int) -> torch.Tensor:
    from genfast.kernels import logistic_mixture as kernels

    return kernels.logistic_mixture_nll_backward(grad_nll, images, params, levels)


@torch.library.custom_op("genfast::logistic_mixture_nll_triton_with_grad", mutates_args=())
def _triton_with_grad(images: torch.Tensor, params: torch.Tensor,
                      levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    from genfast.kernels import logistic_mixture as kernels

    return kernels.logistic_mixture_nll_with_grad(images, params, levels)


@_triton_with_grad.register_fake
def _fake_with_grad(images, params, levels):
    return _fake_nll(images, params, levels), _fake_backward(None, images, params, levels)


def _register(forward_name: str, backward_name: str) -> None:
    register_fake_and_autograd(forward_name, backward_name, _fake_nll, _fake_backward,
                               _make_backward, _setup_context)


_FORWARD_OPS = {}  # backend -> the registered forward op
_CALLS = {}  # the same ops through eager_call, for logistic_mixture_nll
if triton_kernels_exist("logistic_mixture"):
    _register("genfast::logistic_mixture_nll_triton",
              "genfast::logistic_mixture_nll_triton_backward")
    _FORWARD_OPS["triton"] = torch.ops.genfast.logistic_mixture_nll_triton
    _CALLS["triton"] = eager_call(torch.ops.genfast.logistic_mixture_nll_triton,
                                  torch.ops.genfast.logistic_mixture_nll_triton_backward,
                                  _setup_context, _make_backward)
if _ext.has_op("logistic_mixture_nll"):
    _register("genfast::logistic_mixture_nll", "genfast::logistic_mixture_nll_backward")
    _FORWARD_OPS["cpu"] = torch.ops.genfast.logistic_mixture_nll
    _CALLS["cpu"] = eager_call(torch.ops.genfast.logistic_mixture_nll,
                               torch.ops.genfast.logistic_mixture_nll_backward, _setup_context,
                               _make_backward)
    if _ext.has_kernel("logistic_mixture_nll", "CUDA"):
        _FORWARD_OPS["cuda"], _CALLS["cuda"] = _FORWARD_OPS["cpu"], _CALLS["cpu"]
if _ext.has_op("logistic_mixture_nll_with_grad"):
    torch.library.register_fake("genfast::logistic_mixture_nll_with_grad", _fake_with_grad)
    # A training step's forward computes the gradient in the same pass (half the work of a
    # forward and a recomputing backward); the backward scales it.
    for _name, _key in (("cpu", "CPU"), ("cuda", "CUDA")):
        if _name in _CALLS and _ext.has_kernel("logistic_mixture_nll_with_grad", _key):
            _CALLS[_name] = gradient_in_forward_call(
                torch.ops.genfast.logistic_mixture_nll_with_grad.default,
                torch.ops.genfast.logistic_mixture_nll_backward.default, _CALLS[_name],
                differentiable=1)
if "triton" in _CALLS:
    _CALLS["triton"] = gradient_in_forward_call(
        torch.ops.genfast.logistic_mixture_nll_triton_with_grad.default,
        torch.ops.genfast.logistic_mixture_nll_triton_backward.default, _CALLS["triton"],
        differentiable=1)
# A stale build of the extension may lack the ops: then only the reference and Triton have it.
IMPLEMENTED = ("reference", *_CALLS)

_SAMPLE_OP = None
if _ext.has_op("logistic_mixture_sample"):
    _SAMPLE_OP = torch.ops.genfast.logistic_mixture_sample.default

    @torch.library.register_fake("genfast::logistic_mixture_sample")
    def _fake_sample(params, channels, levels, seed):
        return params.new_empty((params.shape[0], channels, *params.shape[2:]),
                                dtype=torch.int64)
SAMPLE_IMPLEMENTED = ("reference", "cpu") if _SAMPLE_OP is not None else ("reference",)


# ----------------------------------------------------------------------------- public API

def _check_params(params, channels: int, levels) -> None:
    if not isinstance(params, torch.Tensor):
        raise TypeError(f"genfast: params must be a torch.Tensor, got {type(params).__name__}")
    if params.dtype not in _backend.FLOAT_DTYPES:
        raise TypeError(f"genfast: params must be float16, bfloat16, float32 or float64, got "
                        f"{params.dtype}")
    if params.dim() != 4:
        raise ValueError(f"genfast: params must be [B, P, H, W], got shape {tuple(params.shape)}")
    if isinstance(levels, bool) or not isinstance(levels, int) or not 2 <= levels <= 2**24:
        raise ValueError(f"genfast: levels must be an int in [2, 2^24], got {levels!r}")
    if not 1 <= channels <= MOST_CHANNELS:
        raise ValueError(f"genfast: the mixture has 1 to {MOST_CHANNELS} colour channels, got "
                         f"{channels}")
    per = params_per_mixture(channels)
    if params.shape[1] < per or params.shape[1] % per:
        raise ValueError(f"genfast: params must have M * {per} channels (M components of "
                         f"{channels} colour channels), got {params.shape[1]}")


def _check_nll_args(images, params, levels, reduction) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"genfast: images must be a torch.Tensor, got {type(images).__name__}")
    if images.dtype.is_floating_point or images.dtype.is_complex or images.dtype == torch.bool:
        raise TypeError(f"genfast: images must hold integer levels, got {images.dtype}")
    if images.dim() != 4:
        raise ValueError(f"genfast: images must be [B, C, H, W], got shape {tuple(images.shape)}")
    _check_params(params, images.shape[1], levels)
    if (images.shape[0], *images.shape[2:]) != (params.shape[0], *params.shape[2:]):
        raise ValueError(f"genfast: images {tuple(images.shape)} and params "
                         f"{tuple(params.shape)} must agree in batch, height and width")
    if images.device != params.device:
        raise ValueError(f"genfast: images are on {images.device} but params on {params.device}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"genfast: reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _check_levels_in_range(images, levels) -> None:
    """For the paths that do not check inside their kernel (the C++ CPU kernel does). Python
    ints, so that a uint8 maximum is not compared with a wrapped-around 256."""
    if images.numel():
        low, high = (int(v) for v in images.aminmax())
        if low < 0 or high >= levels:
            raise ValueError(f"genfast: images must hold levels in [0, {levels}), got values "
                             f"in [{low}, {high}]")


def logistic_mixture_nll(images, params, levels=256, reduction="none", *, backend=None):
    """Negative log-likelihood in nats of images under PixelCNN++'s discretized logistic mixture.

    Args:
        images: integer levels [B, C, H, W] in [0, levels), C from 1 to 4 (1 or 3 in practice).
        params: [B, M * (1 + 2C + C(C-1)/2), H, W], the layout of this module's docstring
            (float16, bfloat16, float32 or float64); differentiable.
        levels: the number of levels L of a channel (256 for 8-bit images).
        reduction: 'none' ([B], one value per image), 'sum' (over the batch) or 'mean' (over
            the batch; divide by C * H * W * log(2) more for bits per dimension).
        backend: 'auto', 'reference', 'cpu', 'triton' or 'cuda' (default: see genfast.backends).
    Returns:
        float64 for float64 params, else float32 (computed in that precision).
    Images outside [0, levels) are a ValueError, except on a GPU or under torch.compile
    (where only the C++ CPU kernel checks them).
    """
    _check_nll_args(images, params, levels, reduction)
    name = _backend.select("logistic_mixture_nll", backend, params.device, params.dtype,
                           IMPLEMENTED)
    if name != "cpu" and images.device.type == "cpu" and not torch.compiler.is_compiling():
        _check_levels_in_range(images, levels)
    if name == "reference":
        nll = logistic_mixture_nll_ref(images, params, levels)
    else:
        nll = _CALLS[name](images, params, levels)
    if reduction == "sum":
        return nll.sum()
    return nll.mean() if reduction == "mean" else nll


def logistic_mixture_sample(params, channels, levels=256, generator=None, *, backend=None):
    """Draws integer images [B, C, H, W] (int64) from the mixture parameters [B, P, H, W].

    The uniforms come from genfast's Philox stream by a seed drawn from ``generator`` (default:
    torch's CPU generator), laid out as [B, 1 + C, H, W] (logistic_mixture_sample_ref's
    ``uniform``). The C++ kernel (``cpu``, CPU tensors) and the reference draw the same
    uniforms and compute in float64, so they give the same images for the same seed, except
    where a value falls within rounding of a bin or component boundary; a sampler should use one
    backend throughout, which ``auto`` does (it chooses on the device alone). params of any
    spatial size, e.g. [B, P, 1, 1] for one pixel of a sampler.
    """
    if isinstance(channels, bool) or not isinstance(channels, int):
        raise TypeError(f"genfast: channels must be an int, got {type(channels).__name__}")
    _check_params(params, channels, levels)
    seed = draw_seed(generator)
    name = _backend.select("logistic_mixture_sample", backend, params.device, params.dtype,
                           SAMPLE_IMPLEMENTED)
    if name == "cpu":
        return _SAMPLE_OP(params, channels, levels, seed)
    batch, _, height, width = params.shape
    uniform = logistic_mixture_uniform_ref(seed, (batch, 1 + channels, height, width),
                                           params.device)
    return logistic_mixture_sample_ref(params, channels, uniform, levels)
