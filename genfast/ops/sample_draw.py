"""Categorical draws by inverse CDF, for the autoregressive samplers (genfast.models.sampling).

For logits [n, L] and one uniform u in [0, 1) per row, the draw is the first level l with

    sum_{m <= l} exp(logits_m) > u * sum_m exp(logits_m)

so each level comes with its softmax probability, from one random number per draw (Gumbel-max
would need one per level). ``pointwise_categorical_draw`` fuses the draw with a sampler's
output layer, a 1 x 1 mask-B convolution at one pixel per image, computing only the outputs of
the colour being drawn. The C++ kernels take exp in float32 (float64 for float64 logits) and
sum in float64; the reference sums a float64 softmax. Both are exact draws from the logits up to
rounding, so they differ only when u falls within rounding of a boundary: a sampler must use one
of them throughout, which :func:`categorical_draw` does by choosing on the logits' device and
dtype alone.
"""
from __future__ import annotations

import torch

from genfast import _backend, _ext

DRAW_DTYPES = (torch.float32, torch.float64)


def categorical_draw_ref(logits: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """The inverse-CDF draw in torch: logits [n, L], uniform [n] float64 -> int64 [n]."""
    cdf = torch.softmax(logits, dim=1, dtype=torch.float64).cumsum_(1)
    values = torch.searchsorted(cdf, (uniform * cdf[:, -1]).unsqueeze_(1), right=True)
    return values.squeeze_(1).clamp_(max=logits.shape[1] - 1)


def _check(logits: torch.Tensor, uniform: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[1] < 1:
        raise ValueError("genfast: logits must be a tensor [n, levels] with levels >= 1")
    if not logits.dtype.is_floating_point:
        raise TypeError(f"genfast: logits must be floating point, got {logits.dtype}")
    if (not isinstance(uniform, torch.Tensor) or uniform.dtype != torch.float64
            or uniform.shape != (logits.shape[0],) or uniform.device != logits.device):
        raise ValueError(f"genfast: uniform must be float64 [{logits.shape[0]}] on "
                         f"{logits.device}")


def has_cpu_kernels(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the C++ draws serve tensors of this device and dtype (genfast._backend's
    AUTO_TABLE puts them first for CPU tensors only)."""
    return (_backend.auto_entry("categorical_draw", device.type).order[0] == "cpu"
            and dtype in DRAW_DTYPES
            and _ext.has_op("categorical_draw") and _ext.has_op("pointwise_categorical_draw"))


def categorical_draw(logits: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """One draw per row of logits [n, L] with uniform [n] (float64, in [0, 1)): int64 [n].

    The C++ kernel for float32/float64 CPU logits when the extension has it, else the
    reference; the choice depends on the logits' device and dtype only.
    """
    _check(logits, uniform)
    if has_cpu_kernels(logits.device, logits.dtype):
        return torch.ops.genfast.categorical_draw.default(logits, uniform)
    return categorical_draw_ref(logits, uniform)


def pointwise_categorical_draw(x: torch.Tensor, weight: torch.Tensor,
                               bias: torch.Tensor | None, data_channels: int, colour: int,
                               uniform: torch.Tensor) -> torch.Tensor:
    """categorical_draw of colour ``colour``'s logits from a 1 x 1 mask-B convolution of one
    pixel per image, in one C++ call (CPU, float32/float64; see has_cpu_kernels).

    x: [n, C_in, 1, 1]; weight [data_channels * L, C_in, 1, 1] with colour-major outputs (as
    genfast.masked_conv2d groups them); bias [data_channels * L] or None. The logits have the
    bits masked_conv2d's cpu backend gives them.
    """
    if not has_cpu_kernels(x.device, x.dtype):
        raise RuntimeError("genfast: pointwise_categorical_draw needs the C++ extension and "
                           "float32/float64 CPU tensors")
    return torch.ops.genfast.pointwise_categorical_draw.default(x, weight, bias, data_channels,
                                                                colour, uniform)


if _ext.has_op("categorical_draw"):
    @torch.library.register_fake("genfast::categorical_draw")
    def _fake_draw(logits, uniform):
        return logits.new_empty(logits.shape[0], dtype=torch.int64)

if _ext.has_op("pointwise_categorical_draw"):
    @torch.library.register_fake("genfast::pointwise_categorical_draw")
    def _fake_fused_draw(x, weight, bias, data_channels, colour, uniform):
        return x.new_empty(x.shape[0], dtype=torch.int64)
