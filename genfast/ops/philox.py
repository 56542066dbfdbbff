"""genfast's Gaussian stream, written plainly in numpy: the oracle for every in-kernel generator.

Philox-4x32-10 (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3") followed by
the Box-Muller transform, laid out as Triton's ``tl.randn4x``: element ``e`` of a sampled tensor
takes output ``e % 4`` of the philox block whose counter is ``offset + e // 4`` and whose key is
the 64-bit ``seed``. Outputs (0, 1) and (2, 3) are Box-Muller pairs. The C++, CUDA and Triton
kernels all follow this, so one seed gives the same noise on every fast backend (up to the last
bits of their log, sin and cos).
"""
import numpy as np
import torch

_KEY_A, _KEY_B = 0x9E3779B9, 0xBB67AE85
_ROUND_A, _ROUND_B = 0xD2511F53, 0xCD9E8D57
_ROUNDS = 10
_UINT_TO_UNIFORM = np.float32(4.6566127342e-10)
_MIN_UNIFORM = np.float32(1.0e-7)
_MASK32 = np.uint64(0xFFFFFFFF)


def philox4x32(seed: int, counters: np.ndarray) -> list[np.ndarray]:
    """Four uint32 outputs for each 64-bit counter, with the 64-bit seed as key."""
    counters = counters.astype(np.uint64)
    c0, c1 = counters & _MASK32, counters >> np.uint64(32)
    c2, c3 = np.zeros_like(c0), np.zeros_like(c0)
    seed &= (1 << 64) - 1
    k0, k1 = seed & 0xFFFFFFFF, seed >> 32
    for _ in range(_ROUNDS):
        p0 = np.uint64(_ROUND_B) * c2  # 32 x 32 -> 64 bits: never overflows uint64
        p1 = np.uint64(_ROUND_A) * c0
        c0, c2, c1, c3 = (
            (p0 >> np.uint64(32)) ^ c1 ^ np.uint64(k0),
            (p1 >> np.uint64(32)) ^ c3 ^ np.uint64(k1),
            p0 & _MASK32,
            p1 & _MASK32,
        )
        k0, k1 = (k0 + _KEY_A) & 0xFFFFFFFF, (k1 + _KEY_B) & 0xFFFFFFFF
    return [c.astype(np.uint32) for c in (c0, c1, c2, c3)]


def _uniform(bits: np.ndarray) -> np.ndarray:
    v = bits.view(np.int32)
    v = np.where(v < 0, ~v, v)
    return v.astype(np.float32) * _UINT_TO_UNIFORM


def _box_muller(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    u1 = np.maximum(_MIN_UNIFORM, _uniform(a)).astype(np.float64)
    theta = 2.0 * np.pi * _uniform(b).astype(np.float64)
    radius = np.sqrt(-2.0 * np.log(u1))
    return radius * np.cos(theta), radius * np.sin(theta)


def gaussian_noise_ref(seed: int, offset: int, numel: int) -> torch.Tensor:
    """The first ``numel`` normals of the stream (seed, offset), float32, computed in float64."""
    groups = np.arange((numel + 3) // 4, dtype=np.uint64) + np.uint64(offset & ((1 << 64) - 1))
    x = philox4x32(seed, groups)
    n0, n1 = _box_muller(x[0], x[1])
    n2, n3 = _box_muller(x[2], x[3])
    normals = np.stack([n0, n1, n2, n3], axis=1).reshape(-1)[:numel]
    return torch.from_numpy(normals.astype(np.float32))


def philox_uniform_ref(seed: int, offset: int, numel: int) -> torch.Tensor:
    """The first ``numel`` uniforms of genfast's uniform stream (seed, offset), float64.

    Element ``e`` is (x + 1/2) / 2^32 for output ``e % 4`` x of the philox block with counter
    ``offset + e // 4``: exact in float64 and strictly inside (0, 1). The logistic mixture
    sampler's C++ kernel (csrc/logistic_mixture_sample.cpp) draws the same numbers.
    """
    groups = np.arange((numel + 3) // 4, dtype=np.uint64) + np.uint64(offset & ((1 << 64) - 1))
    bits = np.stack(philox4x32(seed, groups), axis=1).reshape(-1)[:numel]
    return torch.from_numpy((bits.astype(np.float64) + 0.5) * 2.0**-32)
