"""Peak memory of one call of a timed callable, for cases that report it (OpCase.peak_memory).

On a GPU it is torch.cuda's allocator peak. On the CPU torch keeps no such statistic, so the
call runs once under torch.profiler with profile_memory=True, which records every allocation
and free of torch's CPU allocator with its size and time: the running sum of those, in time
order, peaks at the most bytes the call held at once above what existed before it (its inputs
and anything cached). This counts every tensor and autograd buffer, including the temporaries
of eager ops and the buffers of torch.compile's generated code; it does not count memory a
kernel takes from malloc directly (genfast's C++ kernels keep only per-thread tile buffers of a
few KiB there).
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Callable

import torch


@contextlib.contextmanager
def _quiet_stderr():
    """Kineto writes its start and stop lines to the process's stderr; keep reports clean."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), fd)
        try:
            yield
        finally:
            os.dup2(saved, fd)
            os.close(saved)


def _cpu_peak_bytes(fn: Callable[[], object]) -> int:
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    cpu = torch._C._autograd.DeviceType.CPU
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == cpu]
    running = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        running += event.nbytes()
        peak = max(peak, running)
    return peak


def peak_bytes(fn: Callable[[], object], device: str | torch.device) -> int:
    """The most bytes ``fn()`` held at once beyond what was allocated before it."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        return torch.cuda.max_memory_allocated(device) - before
    return _cpu_peak_bytes(fn)
