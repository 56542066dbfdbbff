"""Chooses the implementation that runs each genfast op, and says why a backend declined.

Backends: ``reference`` (plain PyTorch, the oracle), ``cpu`` (C++ extension), ``triton`` and
``cuda`` (C++/CUDA extension). ``auto`` takes the first usable backend in AUTO_TABLE's order for
the op and the tensors' device type: the one expected to be fastest, and the reference where no
genfast kernel is expected to beat it (``genfast.auto_table()`` shows each entry's reason). The
default comes from ``genfast.use_backend`` if active, else from the environment variable
GENFAST_BACKEND (read here and nowhere else), else ``auto``.

A backend that is missing here (extension not built, no GPU, no triton) falls back to the next
one with a single warning; asking a backend for work it cannot do (a device or dtype it does
not support) is an error.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib.util
import os
import warnings
from dataclasses import dataclass

import torch

from genfast import _ext, isa

BACKENDS = ("reference", "cpu", "triton", "cuda")
FAST_BACKENDS = BACKENDS[1:]  # every backend but the reference
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


@dataclass(frozen=True)
class AutoEntry:
    """The backends ``auto`` tries for one op on one device type, first usable wins."""

    order: tuple[str, ...]
    reason: str


# The CUDA figures are issue 19's roofline projection for an H100 (registers and spills from
# ptxas -v, instruction counts from the compiled SASS, +-40%), float32 forward+backward at the
# `genfast bench` shapes. Revise an entry when `genfast bench --device cuda` disagrees: its
# report says whether this table's choice was the fastest it timed.
_PROJECTED = "H100 roofline projection, not measured: no GPU has run these yet (issue 19)"
_CPU_MEASURED = "measured: genfast bench on 2-core CPUs at the AVX-512 and AVX2 levels, README"
AUTO_TABLE: dict[tuple[str, str], AutoEntry] = {
    ("masked_conv2d", "cpu"): AutoEntry(
        ("cpu", "reference"),
        f"the C++ kernels skip the hidden taps: 1.5-1.8x eager fwd+bwd ({_CPU_MEASURED})"),
    ("masked_conv2d", "cuda"): AutoEntry(
        ("reference",),
        f"cuDNN on TF32 tensor cores beats genfast's SIMT FP32 CUDA kernel: 7x7 A ~0.21 ms "
        f"eager vs ~0.37 ms, 3x3 B ~0.16 vs ~0.15 ms (a tie within the error) ({_PROJECTED}). "
        f"The Triton kernel now runs the visible taps only on TF32/bfloat16 tensor cores, "
        f"reading the input in place; it has not run on a GPU, so auto keeps cuDNN until "
        f"genfast bench --device cuda shows it ahead"),
    ("lstm_rows", "cpu"): AutoEntry(
        ("cpu", "reference"),
        f"the whole recurrence in one C++ call: 1.8-2.9x eager per RowLSTM or DiagonalBiLSTM layer "
        f"({_CPU_MEASURED})"),
    ("lstm_rows", "cuda"): AutoEntry(
        ("triton", "cuda", "reference"),
        f"Triton runs one launch per row over the whole GPU with tensor-core GEMMs: RowLSTM "
        f"layer ~0.5-0.7 ms vs CUDA ~4.1 ms vs eager ~6 ms, DiagonalBiLSTM ~1.5-2 vs ~10.6 vs "
        f"~25 ms; the CUDA kernel runs one block per image (16 of 132 SMs at batch 16) "
        f"({_PROJECTED}; kernels/lstm_row.py)"),
    ("reparameterize_kl", "cpu"): AutoEntry(
        ("cpu", "reference"),
        f"one fused pass with in-kernel noise: 1.7-5.0x eager at 4096x1024 ({_CPU_MEASURED})"),
    ("reparameterize_kl", "cuda"): AutoEntry(
        ("cuda", "triton", "reference"),
        f"one fused bandwidth-bound pass: ~0.125 ms vs eager ~0.32 ms at 4096x1024; the Triton "
        f"kernel does the same work and is next ({_PROJECTED})"),
    ("gated_activation", "cpu"): AutoEntry(
        ("cpu", "reference"),
        f"one fused pass each way: 1.4-2.7x eager at 16x128x28x28 ({_CPU_MEASURED})"),
    ("gated_activation", "cuda"): AutoEntry(
        ("cuda", "triton", "reference"),
        "a small elementwise op: one fused launch each way against eager's several kernels "
        "and saved tanh/sigmoid; CUDA before Triton for its smaller launch cost. An estimate "
        "without figures (not in issue 19's roofline table), not measured: no GPU has run "
        "these yet"),
    ("logistic_mixture_nll", "cpu"): AutoEntry(
        ("cpu", "reference"),
        "one fused pass (forward and gradient together when training), no [B, C, M, H, W] "
        "temporaries: 4.7-6.0x eager and 2.5-2.8x torch.compile fwd+bwd at 16x3x32x32 with 10 "
        "components on one or two threads, a sixth of eager's peak memory (genfast bench, "
        "2-core AMD EPYC, AVX-512)"),
    ("logistic_mixture_nll", "cuda"): AutoEntry(
        ("cuda", "triton", "reference"),
        "eager runs some 60 elementwise kernels over [B, C, M, H, W] tensors each way; the fused "
        "kernels read params once and write one value per block (forward) or the gradient "
        "(backward). CUDA before Triton for its smaller launch cost. An estimate without "
        "figures, not measured: no GPU has run these yet"),
    ("logistic_mixture_sample", "cpu"): AutoEntry(
        ("cpu", "reference"),
        "one C++ call per draw. Fixed per device (not by dtype or ISA level) so that a sampler "
        "draws the same bits throughout; the reference draws the same uniforms"),
    ("logistic_mixture_sample", "cuda"): AutoEntry(
        ("reference",), "genfast has no GPU kernel for the mixture sampler"),
    ("categorical_head_nll", "cpu"): AutoEntry(
        ("cpu", "reference"),
        f"the layer's GEMMs on chunks of pixels with the softmax and the gradients in one pass, "
        f"never the whole logits: 1.7-3.4x eager, 1.9-2.7x torch.compile fwd+bwd at 16x1x28x28,"
        f" 256 levels (measured: genfast bench on a busy 2-core AMD EPYC, AVX-512)"),
    ("categorical_head_nll", "cuda"): AutoEntry(
        ("reference",),
        "cuBLAS and cuDNN's softmax are expected to beat the Triton and CUDA kernels' fp32 "
        "SIMT/IEEE tiles in time, which no GPU has measured yet; the fused kernels save the "
        "logits' memory (backend='triton' or 'cuda' asks for them)"),
    ("categorical_draw", "cpu"): AutoEntry(
        ("cpu", "reference"),
        "one C++ call per draw for float32/float64 logits. Fixed per device and dtype (not "
        "changed by backend=, use_backend, GENFAST_BACKEND or the CPU's ISA level) so that a "
        "sampler draws the same bits throughout (genfast.ops.sample_draw)"),
    ("categorical_draw", "cuda"): AutoEntry(
        ("reference",), "genfast has no GPU kernel for the draw"),
}
# An op or device type without an entry (a new op, mps, xpu): the C++ kernels on the CPU, as
# every op has had; elsewhere the reference, since nothing was estimated for it.
_DEFAULT_AUTO = {"cpu": AutoEntry(("cpu", "reference"), "default for CPU tensors")}
_OTHER_DEVICES = AutoEntry(("reference",), "no genfast kernel was estimated for this device")


def auto_entry(op: str, device_type: str) -> AutoEntry:
    """AUTO_TABLE's entry for ``op`` on ``device_type``, or the default one."""
    entry = AUTO_TABLE.get((op, device_type))
    return entry if entry is not None else _DEFAULT_AUTO.get(device_type, _OTHER_DEVICES)


def auto_table() -> dict[tuple[str, str], dict]:
    """AUTO_TABLE as plain data: for each (op, device type), the backends ``auto`` tries in
    order, the reason, and which one it picks on this machine for float32 tensors (with why
    it passes over the ones before)."""
    table = {}
    for (op, device_type), entry in AUTO_TABLE.items():
        passed = {}
        for name in entry.order:
            why = (_missing_reason(name) or _device_reason(name, torch.device(device_type),
                                                             torch.float32)
                   or _auto_skip_reason(name, device_type))
            if not why:
                break
            passed[name] = why
        else:
            name = "reference"
        table[(op, device_type)] = {"order": entry.order, "reason": entry.reason,
                                    "picks_here": name, "passed_over": passed}
    return table


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


@functools.cache
def _has_isa_levels() -> bool:
    return _ext.has_op("cpu_isa")


def _auto_skip_reason(name: str, device_type: str) -> str:
    """Why ``auto`` should not pick a usable backend on this device, or ''. Runs on every
    auto call for CPU tensors, so what cannot change in a process is looked up once."""
    if name == "cpu" and device_type == "cpu" and _has_isa_levels():
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


def _auto(op: str, device: torch.device, dtype: torch.dtype,
          implemented: tuple[str, ...]) -> str:
    for name in auto_entry(op, device.type).order:
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
        return _auto(op, device, dtype, implemented)
    _check_name(name)
    if name not in implemented:
        raise ValueError(f"genfast: {op} has no {name!r} backend; it has {implemented}")
    missing = _missing_reason(name)
    if missing:
        fallback = _auto(op, device, dtype, implemented)
        _warn_once(name, missing, fallback)
        return fallback
    reason = _device_reason(name, device, dtype)
    if reason:
        raise ValueError(f"genfast: backend {name!r} cannot run {op} on {device} {dtype}: {reason}")
    return name
