"""Benchmark cases for PixelCNN++'s discretized logistic mixture NLL (genfast.ops.logistic_mixture).

The large size is the PixelCNN++ CIFAR-10 setting of issue 23: batch 16, 3x32x32 images, 10
components (100 parameter channels); the small one a grey 28x28 batch with 5 components. The
inputs are what a network's output head gives: params near the data, random 8-bit images. The
fwd+bwd mode also reports the peak memory of one call (genfast.benchmark.memory).
"""
from __future__ import annotations

import torch

import genfast
from genfast.benchmark.cases import FWD, FWD_BWD, OpCase, Size, Target
from genfast.ops.logistic_mixture import logistic_mixture_nll_ref, params_per_mixture

LEVELS = 256
SIZES = (
    Size("small", "16x1x28x28, 5 mixtures", {"shape": (16, 1, 28, 28), "mixtures": 5}),
    Size("large", "16x3x32x32, 10 mixtures", {"shape": (16, 3, 32, 32), "mixtures": 10}),
)


def make_inputs(size: Size, device: torch.device, dtype: torch.dtype) -> dict:
    batch, channels, h, w = size.params["shape"]
    mixtures = size.params["mixtures"]
    images = torch.randint(0, LEVELS, (batch, channels, h, w), device=device)
    params = torch.randn(batch, params_per_mixture(channels) * mixtures, h, w, device=device)
    scales = slice(mixtures * (1 + channels), mixtures * (1 + 2 * channels))
    params[:, scales] = params[:, scales] * 0.5 - 3.0  # scales of a few levels, as trained
    return {"images": images, "params": params.to(dtype)}


def reference(inputs: dict):
    return logistic_mixture_nll_ref(inputs["images"], inputs["params"], LEVELS)


def fast(inputs: dict, backend: str):
    return genfast.ops.logistic_mixture_nll(inputs["images"], inputs["params"], LEVELS,
                                            backend=backend)


def bytes_moved(size: Size, mode: str, dtype: torch.dtype) -> int:
    """Forward reads params and the int64 images; backward reads them again and writes the
    gradient of params."""
    batch, channels, h, w = size.params["shape"]
    pixels = batch * h * w
    params = pixels * params_per_mixture(channels) * size.params["mixtures"]
    element = torch.empty((), dtype=dtype).element_size()
    once = params * element + pixels * channels * 8
    return once if mode == FWD else 2 * once + params * element


CASES = (
    OpCase(
        name="logistic_mixture_nll",
        description="PixelCNN++ discretized logistic mixture NLL per image",
        sizes=SIZES,
        make_inputs=make_inputs,
        auto_op="logistic_mixture_nll",
        reference=reference,
        fast=fast,
        grad_inputs=("params",),
        bytes_moved=bytes_moved,
        peak_memory=True,
        targets=(Target("large", FWD_BWD, "cpu", min_vs_reference=4.0, beat_compile=True,
                        max_memory_vs_reference=0.25),),
    ),
)
