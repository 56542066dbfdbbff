"""The registry of benchmark cases: what each op is timed on, and how.

An op family adds one module to this package (named after its stem, like ``reparam.py``)
that defines ``CASES``, a sequence of :class:`OpCase`, and lists that module in
``OP_MODULES`` below. Everything else (the ``genfast bench`` command, the pytest-benchmark
suite in ``bench/``, the table, JSON and chart) works from the registry alone.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

# Modules of genfast.benchmark that define CASES; one line per op family. "models" holds the
# whole-model cases (genfast.benchmark.models.ModelCase), timed after the ops.
OP_MODULES = ("reparam", "masked_conv", "gated", "lstm_row", "logistic_mixture",
              "categorical_head", "models")

FWD, FWD_BWD = "fwd", "fwd+bwd"
MODES = (FWD, FWD_BWD)
SIZE_NAMES = ("small", "large")

Inputs = dict  # name -> tensor (or any object make_inputs wants to pass on)


@dataclass(frozen=True, eq=False)
class Size:
    """One problem size of a case.

    ``name`` is what the command line and the table key on ("small" or "large"); ``label`` is
    for people ("128x32"); ``params`` is whatever the case's ``make_inputs`` needs.
    """

    name: str
    label: str
    params: Mapping[str, Any]


@dataclass(frozen=True)
class Target:
    """A speed the project promises: ``backend`` at (size, mode) on ``device`` is at least
    ``min_vs_reference`` times faster than the eager reference and, with ``beat_compile``,
    at least ``min_vs_compile`` times faster than ``torch.compile(reference)`` too; with
    ``max_memory_vs_reference``, its peak memory in that mode is at most that fraction of the
    reference's (the case must measure it: OpCase.peak_memory)."""

    size: str
    mode: str
    backend: str
    device: str = "cpu"
    min_vs_reference: float = 1.0
    beat_compile: bool = False
    min_vs_compile: float = 1.0
    max_memory_vs_reference: float | None = None

    def describe(self, case: "OpCase") -> str:
        label = case.size(self.size).label
        want = f">= {self.min_vs_reference:g}x reference"
        if self.beat_compile and self.min_vs_compile > 1.0:
            want += f" and >= {self.min_vs_compile:g}x torch.compile(reference)"
        elif self.beat_compile:
            want += " and faster than torch.compile(reference)"
        if self.max_memory_vs_reference is not None:
            want += f", peak memory <= {self.max_memory_vs_reference:g} x reference's"
        return f"{case.name} {self.mode} {label} on {self.device}: {self.backend} {want}"


@dataclass(frozen=True, eq=False)  # identity: cases are registered once
class OpCase:
    """How to benchmark one op.

    make_inputs(size, device, dtype) -> Inputs
        Builds every tensor the timed call needs, cotangents included, so that nothing made
        here is timed. Called once per (size, mode, implementation), after torch.manual_seed(0).
    reference(inputs) -> Tensor or tuple of Tensors
        The eager PyTorch reference (the oracle from genfast.ops); also what torch.compile gets.
    fast(inputs, backend) -> the same outputs, from genfast's public function on ``backend``.
    grad_inputs
        Keys of ``inputs`` that require grad in the fwd+bwd mode (and are differentiated).
    cotangents(inputs) -> tuple with one entry per output, or None
        The fixed grad_outputs of fwd+bwd: backward of sum(output * cotangent). A None entry,
        or no ``cotangents`` at all, means ones (backward of output.sum()).
    bytes_moved(size, mode, dtype) -> int, optional
        Bytes a fused implementation must read and write at least, for GB/s.
    flops(size, mode) -> int, optional
        Floating-point operations, for TFLOP/s (for compute-bound ops such as convolutions).
    backends
        The fast backends genfast implements this op on.
    slow_compile
        Why torch.compile(reference) takes minutes to compile, if it does: the default
        ``genfast bench`` then leaves it out, and ``--full`` times it.
    targets
        Speeds the project promises for this op (checked with ``genfast bench --check``).
    modes
        The modes the case is timed in (an op: forward and forward+backward).
    peak_memory
        Whether the fwd+bwd mode also measures each implementation's peak memory of one call
        (genfast.benchmark.memory), reported beside the times.
    auto_op
        The op name genfast's ``auto`` chooses a backend for (genfast._backend.AUTO_TABLE), so
        the report can say whether auto's choice was the fastest; "" for none.
    """

    name: str
    sizes: tuple[Size, ...]
    make_inputs: Callable[[Size, torch.device, torch.dtype], Inputs]
    reference: Callable[[Inputs], Any]
    fast: Callable[[Inputs, str], Any]
    grad_inputs: tuple[str, ...]
    cotangents: Callable[[Inputs], tuple] | None = None
    bytes_moved: Callable[[Size, str, torch.dtype], int] | None = None
    flops: Callable[[Size, str], int] | None = None
    dtype: torch.dtype = torch.float32
    backends: tuple[str, ...] = ("cpu", "triton", "cuda")
    slow_compile: str = ""
    targets: tuple[Target, ...] = field(default=())
    description: str = ""
    auto_op: str = ""
    modes: tuple[str, ...] = MODES
    peak_memory: bool = False

    def size(self, name: str) -> Size:
        for size in self.sizes:
            if size.name == name:
                return size
        raise KeyError(f"{self.name} has no size {name!r}; it has "
                       f"{[s.name for s in self.sizes]}")


_REGISTRY: dict[str, OpCase] | None = None


def registry() -> dict[str, OpCase]:
    """Every registered case by name, in OP_MODULES order (imported on first use)."""
    global _REGISTRY
    if _REGISTRY is None:
        cases: dict[str, OpCase] = {}
        for module_name in OP_MODULES:
            module = importlib.import_module(f"genfast.benchmark.{module_name}")
            for case in module.CASES:
                if case.name in cases:
                    raise ValueError(f"benchmark case {case.name!r} is registered twice")
                cases[case.name] = case
        _REGISTRY = cases
    return _REGISTRY


def case_names() -> list[str]:
    return list(registry())


def get_cases(names: list[str] | None = None) -> list[OpCase]:
    """The cases called ``names`` (all of them for None); an unknown name is a ValueError."""
    cases = registry()
    if not names:
        return list(cases.values())
    unknown = [n for n in names if n not in cases]
    if unknown:
        raise ValueError(f"unknown op{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(map(repr, unknown))}; choose from: "
                         f"{', '.join(cases)}")
    return [cases[n] for n in dict.fromkeys(names)]
