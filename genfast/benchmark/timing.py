"""A small adaptive timer, in the manner of torch.utils.benchmark's blocked_autorange.

Written here rather than taken from torch.utils.benchmark.Timer because that Timer runs the
statement with one thread unless told otherwise, and the CPU kernels are multi-threaded; and
because a callable that already ends with torch.cuda.synchronize() (as every timed callable on
a GPU does here) needs no further synchronisation.

The timer warms up, then grows the number of calls per block until one block takes at least
``min_block_s`` (so that timer resolution and call overhead do not dominate tiny ops), then
times ``repeats`` blocks and reports per-call statistics over blocks; the median is what the
reports use. Implementations of one case are timed interleaved, block by block.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

MAX_NUMBER = 1_000_000


@dataclass(frozen=True)
class TimingSettings:
    repeats: int = 31          # timed blocks (odd, so the median is one of them)
    min_block_s: float = 0.05  # shortest block; calls per block grow until one takes this long
    warmup: int = 3            # untimed calls first (caches, allocator, lazy initialisation)
    max_s: float = 4.0         # per callable: stop adding blocks after this, once there are 3

    @classmethod
    def standard(cls) -> "TimingSettings":
        """The default ``genfast bench``: fewer blocks, each callable about two seconds."""
        return cls(repeats=21, min_block_s=0.05, warmup=2, max_s=2.0)

    @classmethod
    def quick(cls) -> "TimingSettings":
        return cls(repeats=5, min_block_s=0.002, warmup=1, max_s=0.5)

    def to_dict(self) -> dict:
        return asdict(self)


# A measurement whose interquartile range passes this fraction of its median is noisy: the
# machine's load changed while it was timed.
NOISY_SPREAD = 0.10


@dataclass(frozen=True)
class Measurement:
    """Seconds per call, over ``blocks`` blocks of ``number`` calls each."""

    median: float
    iqr: float
    min: float
    mean: float
    number: int
    blocks: int
    p20: float
    p80: float

    @property
    def spread(self) -> float:
        """The interquartile range as a fraction of the median."""
        return self.iqr / self.median if self.median > 0 else 0.0

    @property
    def noisy(self) -> bool:
        return self.spread > NOISY_SPREAD

    def to_dict(self) -> dict:
        return asdict(self)


def _block(fn: Callable[[], object], number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return time.perf_counter() - start


def _calibrate(fn: Callable[[], object], settings: TimingSettings) -> int:
    """Calls per block so that one block takes at least ``settings.min_block_s``."""
    number = 1
    while True:
        elapsed = _block(fn, number)
        if elapsed >= settings.min_block_s or number >= MAX_NUMBER:
            return number
        # aim a little past the target so the next block is unlikely to fall just short
        grow = math.ceil(number * 1.2 * settings.min_block_s / max(elapsed, 1e-9))
        number = min(MAX_NUMBER, max(2 * number, grow))


def _summary(per_call: list[float], number: int) -> Measurement:
    if len(per_call) >= 2:
        q1, _, q3 = statistics.quantiles(per_call, n=4)
        deciles = statistics.quantiles(per_call, n=10)
        p20, p80 = deciles[1], deciles[7]
    else:
        q1 = q3 = p20 = p80 = per_call[0]
    return Measurement(median=statistics.median(per_call), iqr=q3 - q1, min=min(per_call),
                       mean=statistics.fmean(per_call), number=number, blocks=len(per_call),
                       p20=p20, p80=p80)


def measure_interleaved(fns: dict[str, Callable[[], object]],
                        settings: TimingSettings = TimingSettings()) -> dict[str, Measurement]:
    """Times several callables that do the same work, taking their blocks in turn.

    Interleaving means a burst of other work on the machine slows every implementation alike
    instead of whichever happened to be running, so ratios between them stay trustworthy.
    ``settings.max_s`` bounds the whole round-robin (each callable gets at least 3 blocks).
    """
    numbers = {}
    for name, fn in fns.items():
        for _ in range(settings.warmup):
            fn()
        numbers[name] = _calibrate(fn, settings)
    per_call: dict[str, list[float]] = {name: [] for name in fns}
    start = time.perf_counter()
    for block in range(max(1, settings.repeats)):
        for name, fn in fns.items():
            per_call[name].append(_block(fn, numbers[name]) / numbers[name])
        if block >= 2 and time.perf_counter() - start > settings.max_s * len(fns):
            break
    return {name: _summary(per_call[name], numbers[name]) for name in fns}


def measure(fn: Callable[[], object], settings: TimingSettings = TimingSettings()) -> Measurement:
    """Times ``fn``, which must finish its work before it returns (sync on a GPU)."""
    return measure_interleaved({"fn": fn}, settings)["fn"]
