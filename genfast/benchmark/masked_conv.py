"""Benchmark cases for the PixelCNN masked convolution (genfast.ops.masked_conv).

Two layer shapes of a PixelCNN on 28x28 images: the 7x7 mask-A input layer at the width of the
hidden layers (its worst case: 24 of 49 taps visible) and a 3x3 mask-B hidden layer (5 of 9).
FLOPs count the multiply-adds of the dense convolution the reference runs, so the TFLOP/s of
genfast's kernels read as "dense-equivalent".
"""
from __future__ import annotations

import torch

import genfast
from genfast.benchmark.cases import FWD, FWD_BWD, OpCase, Size, Target
from genfast.ops.masked_conv import masked_conv2d_ref


def _sizes(kernel: int) -> tuple[Size, ...]:
    return (
        Size("small", f"1x32->32 8x8 k{kernel}", {"shape": (1, 32, 32, 8, 8), "kernel": kernel}),
        Size("large", f"16x64->64 28x28 k{kernel}",
             {"shape": (16, 64, 64, 28, 28), "kernel": kernel}),
    )


def make_inputs(size: Size, device: torch.device, dtype: torch.dtype) -> dict:
    batch, cin, cout, h, w = size.params["shape"]
    k = size.params["kernel"]
    return {
        "x": torch.randn(batch, cin, h, w, device=device, dtype=dtype),
        "weight": torch.randn(cout, cin, k, k, device=device, dtype=dtype) / (cin * k * k) ** 0.5,
        "bias": torch.randn(cout, device=device, dtype=dtype),
        "cot": torch.randn(batch, cout, h, w, device=device, dtype=dtype),
    }


def _flops(size: Size, mode: str) -> int:
    batch, cin, cout, h, w = size.params["shape"]
    k = size.params["kernel"]
    forward = 2 * batch * cin * cout * h * w * k * k
    return forward * (3 if mode == FWD_BWD else 1)  # backward: grad-input and grad-weight


def _case(name: str, kernel: int, mask_type: str, targets: tuple[Target, ...]) -> OpCase:
    def reference(inputs):
        return masked_conv2d_ref(inputs["x"], inputs["weight"], inputs["bias"], mask_type)

    def fast(inputs, backend):
        return genfast.masked_conv2d(inputs["x"], inputs["weight"], inputs["bias"], mask_type,
                                     backend=backend)

    return OpCase(
        name=name,
        description=f"{kernel}x{kernel} mask {mask_type} masked convolution, stride 1, 'same'",
        sizes=_sizes(kernel),
        make_inputs=make_inputs,
        auto_op="masked_conv2d",
        reference=reference,
        fast=fast,
        grad_inputs=("x", "weight", "bias"),
        cotangents=lambda inputs: (inputs["cot"],),
        flops=_flops,
        targets=targets,
    )


CASES = (
    _case("masked_conv2d_7x7A", 7, "A", (
        Target("large", FWD_BWD, "cpu", min_vs_reference=1.8, beat_compile=True,
               min_vs_compile=1.3),
    )),
    _case("masked_conv2d_3x3B", 3, "B", (
        Target("large", FWD_BWD, "cpu", min_vs_reference=1.4),
    )),
)
