"""Benchmark cases for the Gated PixelCNN gate tanh(a) * sigmoid(b) (genfast.ops.gated).

The input is what a gated layer's convolution produces: 2C channels, the filter half then the
gate half, on NCHW images; the gate returns C channels. The small size is a PixelCNN on 8x8
latents, the large one a 28x28 (MNIST-sized) image batch.
"""
from __future__ import annotations

import torch

import genfast
from genfast.benchmark.cases import FWD, FWD_BWD, OpCase, Size
from genfast.ops.gated import gated_activation_ref

SIZES = (
    Size("small", "16x128x8x8 -> 64ch", {"shape": (16, 128, 8, 8)}),
    Size("large", "16x128x28x28 -> 64ch", {"shape": (16, 128, 28, 28)}),
)


def make_inputs(size: Size, device: torch.device, dtype: torch.dtype) -> dict:
    batch, channels, h, w = size.params["shape"]
    return {
        "x": torch.randn(batch, channels, h, w, device=device, dtype=dtype),
        # fwd+bwd differentiates (y * cot).sum()
        "cot": torch.randn(batch, channels // 2, h, w, device=device, dtype=dtype),
    }


def reference(inputs: dict):
    return gated_activation_ref(inputs["x"], 1)


def fast(inputs: dict, backend: str):
    return genfast.gated_activation(inputs["x"], 1, backend=backend)


def bytes_moved(size: Size, mode: str, dtype: torch.dtype) -> int:
    """Forward reads x and writes y (half of x); backward reads dL/dy and x and writes dL/dx."""
    n = 1
    for s in size.params["shape"]:
        n *= s
    halves = {FWD: 2 + 1, FWD_BWD: (2 + 1) + (1 + 2 + 2)}[mode]  # in units of n / 2 elements
    return halves * (n // 2) * torch.empty((), dtype=dtype).element_size()


CASES = (
    OpCase(
        name="gated_activation",
        description="tanh(a) * sigmoid(b) with a, b = x.chunk(2, dim=1) (Gated PixelCNN)",
        sizes=SIZES,
        make_inputs=make_inputs,
        auto_op="gated_activation",
        reference=reference,
        fast=fast,
        grad_inputs=("x",),
        cotangents=lambda inputs: (inputs["cot"],),
        bytes_moved=bytes_moved,
    ),
)
