"""Benchmark cases for PixelRNN's LSTM layers (genfast.nn.pixelrnn on genfast.ops.lstm_row).

The timed call is a whole mask-B layer, as a PixelRNN's hidden layers use it: the masked
input-to-state convolution, the recurrence, and for the Diagonal BiLSTM the skews and both
directions. ``reference`` is the layer built with backend="reference" (plain PyTorch, a Python
loop over the rows); each fast backend runs a twin of it that holds the very same Parameter
objects, so fwd+bwd differentiates the same leaves: x and every weight. The small size is a
layer on 8x8 latents, the large one a 28x28 (MNIST-sized) batch. FLOPs count the multiply-adds
of both convolutions at every step, padding positions of the skewed map included.
"""
from __future__ import annotations

import torch
from torch import nn

from genfast._backend import FAST_BACKENDS
from genfast.benchmark.cases import FWD_BWD, OpCase, Size, Target
from genfast.nn.pixelrnn import DiagonalBiLSTM, RowLSTM
from genfast.ops import lstm_row as lstm_row_ops

KERNEL = 3  # the Row LSTM's 1 x k input and k-wide state kernels

SIZES = (
    Size("small", "1x16->16 8x8", {"shape": (1, 16, 16, 8, 8)}),
    Size("large", "16x64->64 28x28", {"shape": (16, 64, 64, 28, 28)}),
)


def _row_lstm(in_channels: int, hidden: int, backend: str) -> nn.Module:
    return RowLSTM(in_channels, hidden, KERNEL, "B", backend=backend)


def _diagonal_bilstm(in_channels: int, hidden: int, backend: str) -> nn.Module:
    return DiagonalBiLSTM(in_channels, hidden, "B", backend=backend)


def _share_parameters(source: nn.Module, twin: nn.Module) -> None:
    """Makes ``twin`` hold ``source``'s Parameter objects themselves (not copies)."""
    for name, parameter in source.named_parameters():
        owner, _, leaf = name.rpartition(".")
        setattr(twin.get_submodule(owner) if owner else twin, leaf, parameter)


def _case(name: str, build_layer, description: str, flops) -> OpCase:
    parameter_names = tuple(n for n, _ in build_layer(1, 1, "reference").named_parameters())

    def make_inputs(size: Size, device: torch.device, dtype: torch.dtype) -> dict:
        batch, cin, hidden, h, w = size.params["shape"]
        reference = build_layer(cin, hidden, "reference").to(device, dtype)
        layers = {"reference": reference}
        for backend in FAST_BACKENDS:
            layers[backend] = build_layer(cin, hidden, backend).to(device, dtype)
            _share_parameters(reference, layers[backend])
        return {
            "x": torch.randn(batch, cin, h, w, device=device, dtype=dtype),
            "cot": torch.randn(batch, hidden, h, w, device=device, dtype=dtype),
            "layers": layers,
            **dict(reference.named_parameters()),
        }

    def reference(inputs):
        return inputs["layers"]["reference"](inputs["x"])

    def fast(inputs, backend):
        return inputs["layers"][backend](inputs["x"])

    return OpCase(
        name=name,
        description=description,
        sizes=SIZES,
        make_inputs=make_inputs,
        # The recurrence's entry; under auto the layer's input convolution would follow
        # masked_conv2d's, while each timed layer runs wholly on one backend.
        auto_op="lstm_rows",
        reference=reference,
        fast=fast,
        grad_inputs=("x", *parameter_names),
        cotangents=lambda inputs: (inputs["cot"],),
        flops=flops,
        # Only the backends lstm_rows has kernels for in this build.
        backends=tuple(b for b in FAST_BACKENDS if b in lstm_row_ops.IMPLEMENTED),
        slow_compile="torch.compile traces the reference's Python loop over the rows: 1 to 3 "
                     "minutes on 2 cores before its cache is warm",
        targets=(Target("large", FWD_BWD, "cpu", min_vs_reference=3.0, beat_compile=True),),
    )


def _row_flops(size: Size, mode: str) -> int:
    batch, cin, hidden, h, w = size.params["shape"]
    per_pixel = 2 * 4 * hidden * KERNEL * (cin + hidden)  # 1 x k input + k-wide state kernel
    forward = batch * h * w * per_pixel
    return forward * (3 if mode == FWD_BWD else 1)  # backward: grad-input and grad-weight


def _diagonal_flops(size: Size, mode: str) -> int:
    batch, cin, hidden, h, w = size.params["shape"]
    positions = h * (h + w - 1)  # the skewed map, padding included
    per_position = 2 * 4 * hidden * (cin + 2 * hidden)  # 1 x 1 input + 2 x 1 state kernel
    forward = 2 * batch * positions * per_position  # two directions
    return forward * (3 if mode == FWD_BWD else 1)


CASES = (
    _case("row_lstm", _row_lstm,
          f"RowLSTM layer, mask B, 1x{KERNEL} input and {KERNEL}-wide state kernels",
          _row_flops),
    _case("diagonal_bilstm", _diagonal_bilstm,
          "DiagonalBiLSTM layer, mask B: skew, two directions, shift, unskew", _diagonal_flops),
)
