"""Benchmark cases for the fused reparameterized sampling + KL of VAEs (genfast.ops.reparam)."""
from __future__ import annotations

import torch

import genfast
from genfast.benchmark.cases import FWD, FWD_BWD, OpCase, Size, Target
from genfast.ops.reparam import reparameterize_kl_ref

SIZES = (
    Size("small", "128x32", {"shape": (128, 32)}),      # a typical VAE batch of latents
    Size("large", "4096x1024", {"shape": (4096, 1024)}),  # 4M elements: bandwidth-bound
)


def make_inputs(size: Size, device: torch.device, dtype: torch.dtype) -> dict:
    shape = size.params["shape"]
    return {
        "mu": torch.randn(shape, device=device, dtype=dtype),
        "logvar": 0.5 * torch.randn(shape, device=device, dtype=dtype),
        # fwd+bwd differentiates (z * cot_z).sum() + kl
        "cot_z": torch.randn(shape, device=device, dtype=dtype),
    }


def reference(inputs: dict):
    return reparameterize_kl_ref(inputs["mu"], inputs["logvar"], reduction="sum")


def fast(inputs: dict, backend: str):
    return genfast.reparameterize_kl(inputs["mu"], inputs["logvar"], reduction="sum",
                                     backend=backend)


def bytes_moved(size: Size, mode: str, dtype: torch.dtype) -> int:
    """Forward reads mu and logvar and writes z; backward reads grad_z, mu and logvar and
    writes grad_mu and grad_logvar (the noise is regenerated, never stored)."""
    n = size.params["shape"][0] * size.params["shape"][1]
    tensors = {FWD: 3, FWD_BWD: 3 + 5}[mode]
    return tensors * n * torch.empty((), dtype=dtype).element_size()


CASES = (
    OpCase(
        name="reparameterize_kl",
        description="z = mu + exp(logvar / 2) * eps and KL(N(mu, exp(logvar)) || N(0, I)), "
                    "reduction='sum'",
        sizes=SIZES,
        make_inputs=make_inputs,
        auto_op="reparameterize_kl",
        reference=reference,
        fast=fast,
        grad_inputs=("mu", "logvar"),
        cotangents=lambda inputs: (inputs["cot_z"], None),
        bytes_moved=bytes_moved,
        targets=(
            Target("large", FWD_BWD, "cpu", min_vs_reference=3.0, beat_compile=True),
            Target("small", FWD_BWD, "cpu", min_vs_reference=1.0),
        ),
    ),
)
