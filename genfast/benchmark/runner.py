"""Turns registered cases into timed callables and times them.

For each case, size and mode there are these implementations: ``reference`` (eager PyTorch),
``torch.compile`` (the reference compiled with dynamic=False), and each fast backend that the
op implements and that can run on the device. ``build`` is shared by ``genfast bench`` and the
pytest-benchmark suite, so both time exactly the same thing.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

import genfast
from genfast import _backend
from genfast._backend import FAST_BACKENDS
from genfast.benchmark.cases import FWD, FWD_BWD, MODES, OpCase, Size
from genfast.benchmark.memory import peak_bytes
from genfast.benchmark.timing import Measurement, TimingSettings, measure_interleaved

REFERENCE, COMPILE = "reference", "torch.compile"


@dataclass(frozen=True)
class Implementation:
    """One way of running a case; ``skip`` says why it is not timed here ('' if it is)."""

    name: str
    skip: str = ""


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"



def implementations(case: OpCase, device: str, backends: list[str] | None = None,
                    compile: bool = True, slow_compile: bool = True) -> list[Implementation]:
    """Reference, torch.compile(reference) and the fast backends, in that order.

    ``backends`` limits the fast backends (None: all of the case's); ``slow_compile=False``
    leaves out a torch.compile that takes minutes (``case.slow_compile``). Implementations that
    cannot run here come back with a reason instead of being dropped, so reports can say why.
    """
    compile_skip = "" if compile else "disabled (--no-compile)"
    if compile and case.slow_compile and not slow_compile:
        compile_skip = f"{case.slow_compile}; genfast bench --full times it"
    impls = [Implementation(REFERENCE), Implementation(COMPILE, compile_skip)]
    info = genfast.backends()
    for name in FAST_BACKENDS:
        if backends is not None and name not in backends:
            continue
        if name not in case.backends:
            skip = f"genfast has no {name} kernel for {case.name} yet"
        elif name == "triton" and device == "cpu":
            skip = "on the CPU Triton only runs in its interpreter, which is not a fast path"
        elif not info[name].available:
            skip = info[name].reason
        elif device not in info[name].devices:
            skip = f"runs on {'/'.join(info[name].devices)}, not {device}"
        else:
            skip = ""
        impls.append(Implementation(name, skip))
    return impls


def _as_tuple(outputs) -> tuple:
    return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)


def build(case: OpCase, size: Size, mode: str, impl: str, device: str | torch.device,
          seed: int = 0) -> Callable[[], None]:
    """A callable that runs ``impl`` on ``case`` at ``size`` in ``mode`` once, ready to time.

    Inputs and cotangents are made here, outside the timed call, and the callable has been run
    once, so a torch.compile compilation has already happened. On a GPU the callable ends with
    torch.cuda.synchronize(). Compile failures propagate; ``run_case`` turns them into a skip.
    A whole-model case (genfast.benchmark.models.ModelCase) builds its own callable.
    """
    from genfast.benchmark.models import ModelCase

    if isinstance(case, ModelCase):
        return case.build(size, mode, impl, device, seed)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    device = torch.device(device)
    torch.manual_seed(seed)
    inputs = case.make_inputs(size, device, case.dtype)
    if impl == REFERENCE:
        fn = case.reference
    elif impl == COMPILE:
        # A fresh Dynamo cache per build: every case, size and mode gets its own static-shape
        # graph and never meets the recompile limit.
        torch._dynamo.reset()
        fn = torch.compile(case.reference, dynamic=False)
    else:
        def fn(inputs, _backend=impl):
            return case.fast(inputs, _backend)

    if mode == FWD:
        def step():
            fn(inputs)
    else:
        leaves = [inputs[k].requires_grad_() for k in case.grad_inputs]
        outputs = _as_tuple(fn(inputs))
        given = case.cotangents(inputs) if case.cotangents else (None,) * len(outputs)
        if len(given) != len(outputs):
            raise ValueError(f"{case.name}: cotangents gives {len(given)} tensors for "
                             f"{len(outputs)} outputs")
        cotangents = tuple(torch.ones_like(o) if c is None else c for o, c in zip(outputs, given))
        del outputs

        def step():
            # The same gradients as backward of sum(output * cotangent), without timing the
            # products and sums of such a loss.
            torch.autograd.grad(_as_tuple(fn(inputs)), leaves, cotangents)

    if device.type == "cuda":
        def timed():
            step()
            torch.cuda.synchronize(device)
    else:
        timed = step
    timed()
    return timed


def auto_choice(case: OpCase, device: str) -> str | None:
    """The backend genfast's ``auto`` picks for the case's op on ``device`` here (AUTO_TABLE,
    then what is usable), or None for a case without an auto_op."""
    if not case.auto_op:
        return None
    return _backend.select(case.auto_op, "auto", torch.device(device), case.dtype,
                           (REFERENCE, *case.backends))


@dataclass(frozen=True)
class AutoVerdict:
    """How ``auto``'s pick did in a run: against the fastest timed implementation it could
    have picked (the reference and the fast backends; torch.compile is not one of them)."""

    backend: str         # auto's pick
    fastest: str | None  # the fastest of those timed, None if none was
    ratio: float | None  # auto's median / the fastest's; None when auto's pick was not timed

    @property
    def is_fastest(self) -> bool:
        return self.ratio is not None and self.backend == self.fastest

    def describe(self, skipped: dict[str, str]) -> str:
        if self.ratio is None:
            why = skipped.get(self.backend, "not in this run")
            return f"auto picks {self.backend}, not timed here ({why})"
        if self.is_fastest:
            return f"auto picks {self.backend}, the fastest"
        return f"auto picks {self.backend}, {self.ratio:.2f}x the time of {self.fastest}"

    def to_dict(self) -> dict:
        return {"backend": self.backend, "fastest": self.fastest,
                "auto_is_fastest": self.is_fastest, "time_vs_fastest": self.ratio}


@dataclass
class Result:
    """Everything measured for one case at one size and mode; ``auto`` is the backend
    genfast's auto picks for it here (None for a case without an auto_op)."""

    case: OpCase
    size: Size
    mode: str
    device: str
    measurements: dict[str, Measurement]
    skipped: dict[str, str]
    auto: str | None = None
    peak_memory: dict[str, int] = field(default_factory=dict)  # bytes, where measured

    def memory_ratio(self, impl: str) -> float | None:
        """impl's peak memory / the reference's, or None when either was not measured."""
        mem, base = self.peak_memory.get(impl), self.peak_memory.get(REFERENCE)
        return mem / base if mem is not None and base else None

    def auto_verdict(self) -> AutoVerdict | None:
        if self.auto is None:
            return None
        timed = {impl: m.median for impl, m in self.measurements.items() if impl != COMPILE}
        fastest = min(timed, key=timed.get) if timed else None
        ratio = timed[self.auto] / timed[fastest] if self.auto in timed else None
        return AutoVerdict(self.auto, fastest, ratio)

    def noisy(self) -> dict[str, float]:
        """The spread (iqr / median) of each implementation whose timings were noisy."""
        return {impl: m.spread for impl, m in self.measurements.items() if m.noisy}

    def median(self, impl: str) -> float | None:
        m = self.measurements.get(impl)
        return m.median if m is not None else None

    def speedup(self, impl: str, baseline: str) -> float | None:
        """baseline time / impl time, or None when either was not measured."""
        t, base = self.median(impl), self.median(baseline)
        return base / t if t and base else None

    def gb_per_s(self, impl: str) -> float | None:
        t = self.median(impl)
        if t is None or self.case.bytes_moved is None:
            return None
        return self.case.bytes_moved(self.size, self.mode, self.case.dtype) / t / 1e9

    def tflop_per_s(self, impl: str) -> float | None:
        t = self.median(impl)
        if t is None or self.case.flops is None:
            return None
        return self.case.flops(self.size, self.mode) / t / 1e12


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def run_case(case: OpCase, size: Size, mode: str, device: str, impls: list[Implementation],
             settings: TimingSettings, on_impl: Callable[[str], None] | None = None) -> Result:
    """Times every implementation of one (case, size, mode) that is not skipped, interleaved."""
    result = Result(case, size, mode, device, {}, {}, auto_choice(case, device))
    fns = {}
    for impl in impls:
        if impl.skip:
            result.skipped[impl.name] = impl.skip
            continue
        if on_impl is not None:
            on_impl(f"building {impl.name}")
        if impl.name == COMPILE:
            try:
                fns[impl.name] = build(case, size, mode, impl.name, device)
            except Exception as exc:  # noqa: BLE001 - any compiler failure makes it unavailable
                result.skipped[impl.name] = f"torch.compile failed ({_first_line(exc)})"
        else:
            fns[impl.name] = build(case, size, mode, impl.name, device)
    if case.peak_memory and mode == FWD_BWD:
        if on_impl is not None:
            on_impl("measuring peak memory")
        result.peak_memory = {name: peak_bytes(fn, device) for name, fn in fns.items()}
    if on_impl is not None:
        on_impl("timing")
    result.measurements = measure_interleaved(fns, settings)
    return result


def plan(cases: list[OpCase], sizes: list[str] | None = None,
         modes: list[str] | None = None) -> Iterator[tuple[OpCase, Size, str]]:
    """Every (case, size, mode) to run, in report order."""
    for case in cases:
        for size in case.sizes:
            if sizes is not None and size.name not in sizes:
                continue
            for mode in case.modes:
                if modes is None or mode in modes:
                    yield case, size, mode


def matrix(case: OpCase, device: str, backends: list[str] | None = None, compile: bool = True
           ) -> Iterator[tuple[Size, str, Implementation]]:
    """Every (size, mode, implementation) of one case, skipped ones included."""
    impls = implementations(case, device, backends, compile)
    for _, size, mode in plan([case]):
        for impl in impls:
            yield size, mode, impl


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """Runs the block with ``threads`` intra-op threads (unchanged for None)."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
