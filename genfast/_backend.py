"""Chooses the implementation that runs each genfast op, and says why a backend declined.

Backends: ``reference`` (plain PyTorch, the oracle), ``cpu`` (C++ extension), ``triton`` and
``cuda`` (C++/CUDA extension). ``auto`` takes the first usable one in AUTO_ORDER for the tensors'
device. The default comes from ``genfast.use_backend`` if active, else from the environment
variable GENFAST_BACKEND (read here and nowhere else), else ``auto``.

A backend that is missing here (extension not built, no GPU, no triton) falls back to the next
one with a single warning; asking a backend for work it cannot do (a device or dtype it does
not support) is an error.
"""
from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import os
import warnings
from dataclasses import dataclass

import torch

from genfast import _ext

BACKENDS = ("reference", "cpu", "triton", "cuda")
FAST_BACKENDS = BACKENDS[1:]  # every backend but the reference
AUTO_ORDER = {"cpu": ("cpu", "reference"), "cuda": ("cuda", "triton", "reference")}
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

_ENV_BACKEND = os.environ.get("GENFAST_BACKEND", "auto")
_active = contextvars.ContextVar("genfast_backend", default=None)
_warned: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class BackendInfo:
    """What one backend can do on this machine."""

    name: str
    available: bool
    reason: str  # why it is unavailable; empty when available
    devices: tuple[str, ...]
    dtypes: tuple[torch.dtype, ...]
    auto_skips: str = ""  # why ``auto`` passes over it here although it is usable; else empty


def _triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def _triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


_missing_cache: dict[str, str] = {}


def _missing_reason(name: str) -> str:
    """Why a backend cannot run at all here, or '' if it can (worked out once per process)."""
    if name not in _missing_cache:
        _missing_cache[name] = _find_missing_reason(name)
    return _missing_cache[name]


def _find_missing_reason(name: str) -> str:
    if name in ("reference",):
        return ""
    if name == "cpu":
        return _ext.LOAD_ERROR or ""
    if name == "cuda":
        if _ext.LOAD_ERROR:
            return _ext.LOAD_ERROR
        if not _ext.has_kernel("gaussian_sample_kl", "CUDA"):
            return "genfast._C was built without CUDA kernels (no nvcc or a CPU build of torch)"
        if not torch.cuda.is_available():
            return "no CUDA device is visible"
        return ""
    if name == "triton":
        if not _triton_importable():
            return "triton is not installed (pip install triton)"
        if not torch.cuda.is_available() and not _triton_interpreted():
            return "no CUDA device, and TRITON_INTERPRET=1 is not set for the CPU interpreter"
        return ""
    raise ValueError(f"genfast: unknown backend {name!r}; choose one of {BACKENDS} or 'auto'")


def _devices(name: str) -> tuple[str, ...]:
    if name == "reference":
        return ("cpu", "cuda")
    if name == "triton":
        return ("cuda", "cpu") if _triton_interpreted() else ("cuda",)
    return (name,)


def _device_reason(name: str, device: torch.device, dtype: torch.dtype) -> str:
    """Why a usable backend still cannot take this work, or ''."""
    if device.type not in _devices(name):
        hint = " (set TRITON_INTERPRET=1 to run triton on the CPU)" if name == "triton" else ""
        return f"it runs on {'/'.join(_devices(name))}, not {device.type}{hint}"
    if dtype not in FLOAT_DTYPES:
        return f"it does not support {dtype}"
    return ""


def _auto_skip_reason(name: str, device_type: str) -> str:
    """Why ``auto`` should not pick a usable backend on this device, or ''."""
    if name == "cpu" and device_type == "cpu" and _ext.has_op("cpu_isa"):
        from genfast import isa

        if isa.cpu_isa() == "baseline":
            return ("its kernels have no tuned path for this CPU (ISA level 'baseline': no AVX2, "
                    "or not x86-64), where the reference is faster; backend='cpu' still runs "
                    "them")
    return ""


def backends() -> dict[str, BackendInfo]:
    """Each backend, whether it is usable on this machine, and if not, why; and where ``auto``
    passes over a usable one (the cpu backend on a CPU without a tuned path), why."""
    return {
        name: BackendInfo(name, not _missing_reason(name), _missing_reason(name),
                          _devices(name), FLOAT_DTYPES,
                          "" if _missing_reason(name) else _auto_skip_reason(name, "cpu"))
        for name in BACKENDS
    }


@contextlib.contextmanager
def use_backend(name: str):
    """Within the block, genfast ops with ``backend=None`` use ``name`` ('auto' included)."""
    _check_name(name)
    token = _active.set(name)
    try:
        yield
    finally:
        _active.reset(token)


def _check_name(name: str) -> None:
    if name != "auto" and name not in BACKENDS:
        raise ValueError(f"genfast: unknown backend {name!r}; choose one of {BACKENDS} or 'auto'")


def _auto(device: torch.device, dtype: torch.dtype, implemented: tuple[str, ...]) -> str:
    for name in AUTO_ORDER.get(device.type, ("reference",)):
        if (name in implemented and not _missing_reason(name)
                and not _device_reason(name, device, dtype)
                and not _auto_skip_reason(name, device.type)):
            return name
    return "reference"


def _warn_once(name: str, reason: str, fallback: str) -> None:
    if (name, reason) not in _warned:
        _warned.add((name, reason))
        warnings.warn(f"genfast: backend {name!r} is unavailable ({reason}); using {fallback!r}",
                      RuntimeWarning, stacklevel=4)


def select(op: str, requested: str | None, device: torch.device, dtype: torch.dtype,
           implemented: tuple[str, ...] = BACKENDS) -> str:
    """The backend that runs ``op`` on tensors of this device and dtype."""
    name = requested or _active.get() or _ENV_BACKEND
    if name == "auto":
        return _auto(device, dtype, implemented)
    _check_name(name)
    if name not in implemented:
        raise ValueError(f"genfast: {op} has no {name!r} backend; it has {implemented}")
    missing = _missing_reason(name)
    if missing:
        fallback = _auto(device, dtype, implemented)
        _warn_once(name, missing, fallback)
        return fallback
    reason = _device_reason(name, device, dtype)
    if reason:
        raise ValueError(f"genfast: backend {name!r} cannot run {op} on {device} {dtype}: {reason}")
    return name
