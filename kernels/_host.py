"""Host-side tables of the Triton launchers, built once and then reused.

A launcher must do no host work per call (CONVENTIONS.md, "GPU code without a GPU"): a table
built from Python lists and copied to the GPU (``torch.tensor(..., device=...)``, ``.to(device)``)
is a synchronous host-to-device copy that stalls the stream, and rebuilding lists of taps costs
Python time on every call. So each table comes from a function of hashable arguments (sizes,
mask type, ``torch.device``, ``torch.dtype``) wrapped in :func:`cached_table`: an LRU cache,
bounded so that the tensors of shapes no longer in use do not stay alive forever, whose hit
and miss counters tests/test_triton_host_work.py reads. Callers must not modify a table.
"""
from __future__ import annotations

import functools

import torch

CACHES: list = []  # every cached_table function, for cache_info


def cached_table(maxsize: int = 64):
    """Decorator: ``build(*hashable_args)`` computed once per distinct arguments (LRU,
    ``maxsize`` entries)."""
    def wrap(build):
        @functools.wraps(build)
        def built(*args):
            # Outside inference mode: a table first built inside a sampler's
            # torch.inference_mode() must stay usable by later calls that autograd records.
            with torch.inference_mode(False):
                return build(*args)

        cached = functools.lru_cache(maxsize=maxsize)(built)
        CACHES.append(cached)
        return cached
    return wrap


def cache_info() -> dict:
    """Hits, misses and size of every cached table, by qualified name."""
    return {f"{c.__module__}.{c.__qualname__}": c.cache_info() for c in CACHES}


@cached_table()
def zeros(size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A read-only [size] zero vector (a missing bias), kept instead of a fill per call."""
    return torch.zeros(size, dtype=dtype, device=device)
