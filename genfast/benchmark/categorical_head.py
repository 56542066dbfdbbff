"""Benchmark cases for the fused categorical output head (genfast.ops.categorical_head): the op
alone, and a PixelCNN's loss with and without it."""
from __future__ import annotations

import torch
import torch.nn.functional as F

import genfast
from genfast.benchmark.cases import FWD, FWD_BWD, OpCase, Size, Target
from genfast.models import build_model
from genfast.ops.categorical_head import categorical_head_nll, categorical_head_nll_ref

# The head of genfast's default PixelCNN: 64 features into one 1x1 layer with C * levels outputs.
SIZES = (
    Size("small", "8x3x8x8, 17 levels", {"batch": 8, "features": 66, "colours": 3,
                                          "levels": 17, "side": 8}),
    Size("large", "16x1x28x28, 256 levels", {"batch": 16, "features": 64, "colours": 1,
                                             "levels": 256, "side": 28}),
)


def make_inputs(size: Size, device: torch.device, dtype: torch.dtype) -> dict:
    p = size.params
    b, cin, c, levels, side = p["batch"], p["features"], p["colours"], p["levels"], p["side"]
    return {
        "features": torch.randn(b, cin, side, side, device=device, dtype=dtype).relu(),
        "weight": torch.randn(c * levels, cin, 1, 1, device=device, dtype=dtype) / cin**0.5,
        "bias": torch.zeros(c * levels, device=device, dtype=dtype),
        "images": torch.randint(0, levels, (b, c, side, side), device=device),
        "levels": levels, "colours": c,
    }


def _args(inputs: dict) -> tuple:
    return (inputs["features"], inputs["weight"], inputs["bias"], inputs["images"],
            inputs["levels"], inputs["colours"])


def reference(inputs: dict):
    return categorical_head_nll_ref(*_args(inputs))


def fast(inputs: dict, backend: str):
    return categorical_head_nll(*_args(inputs), backend=backend)


def flops(size: Size, mode: str) -> int:
    """The layer's GEMM, 2 * pixels * Cin * C * levels, once forward and three times with the
    gradients (the softmax's few operations per logit are left out)."""
    p = size.params
    gemm = 2 * p["batch"] * p["side"] ** 2 * p["features"] * p["colours"] * p["levels"]
    return gemm * (1 if mode == FWD else 3)


# ----------------------------------------------------------------------------- in a PixelCNN

MODEL_SIZES = (
    Size("small", "pixelcnn 8x1x8x8, 17 levels", {"batch": 8, "side": 8, "levels": 17}),
    Size("large", "pixelcnn 16x1x28x28, 256 levels", {"batch": 16, "side": 28, "levels": 256}),
)


def make_model_inputs(size: Size, device: torch.device, dtype: torch.dtype) -> dict:
    p = size.params
    model = build_model("pixelcnn", image_shape=(1, p["side"], p["side"]),
                        levels=p["levels"]).to(device, dtype)
    return {"model": model, "first_weight": model.first.weight,
            "head_weight": model.output_layer.weight,
            "images": torch.randint(0, p["levels"], (p["batch"], 1, p["side"], p["side"]),
                                    device=device)}


def model_loss_unfused(inputs: dict):
    """The model's mean NLL as it was computed before the fused head: logits, then
    F.cross_entropy (its layers on genfast's default backend)."""
    images = inputs["images"]
    logits = inputs["model"].logits(images)
    return F.cross_entropy(logits, images, reduction="none").flatten(1).sum(1).mean()


def model_loss(inputs: dict, backend: str):
    with genfast.use_backend(backend):
        return inputs["model"](inputs["images"])


CASES = (
    OpCase(
        name="categorical_head",
        description="1x1 mask-B layer + log-softmax over levels + NLL per image, fused",
        sizes=SIZES,
        make_inputs=make_inputs,
        auto_op="categorical_head_nll",
        reference=reference,
        fast=fast,
        grad_inputs=("features", "weight", "bias"),
        flops=flops,
        targets=(Target("large", FWD_BWD, "cpu", min_vs_reference=2.0, beat_compile=True),),
    ),
    OpCase(
        name="pixelcnn_loss",
        description="a default PixelCNN's loss, forward and backward: reference = its layers "
                    "on the default backend with the unfused head (logits + cross-entropy), "
                    "a backend = the same model with the fused head",
        sizes=MODEL_SIZES,
        make_inputs=make_model_inputs,
        auto_op="categorical_head_nll",  # the backend the model's head takes
        reference=model_loss_unfused,
        fast=model_loss,
        grad_inputs=("first_weight", "head_weight"),
        backends=("cpu",),
        slow_compile="torch.compile of a whole PixelCNN takes minutes on 2 cores",
    ),
)
