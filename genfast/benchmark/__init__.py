"""genfast's benchmarks: the case registry, the timer, and the reports of ``genfast bench``.

Adding an op family (say ``masked_conv``):

1. Write ``genfast/benchmark/masked_conv.py`` defining ``CASES``, a tuple of
   :class:`~genfast.benchmark.cases.OpCase`: a name, a small and a large
   :class:`~genfast.benchmark.cases.Size`, ``make_inputs(size, device, dtype)`` (every tensor
   the call needs, cotangents included), ``reference(inputs)`` (the ``*_ref`` oracle from
   ``genfast.ops``), ``fast(inputs, backend)`` (the public function), the keys of the inputs
   that need grad, and optionally ``cotangents``, ``bytes_moved`` / ``flops`` and targets.
2. Add ``"masked_conv"`` to ``OP_MODULES`` in ``genfast/benchmark/cases.py``.
3. Add ``bench/bench_masked_conv.py``; it is ``bench/bench_reparam.py`` with the op's name.

``genfast bench --op masked_conv`` then times it against the reference and
``torch.compile(reference)``, forward and forward+backward, on every usable backend.
"""
from genfast.benchmark.cases import (  # noqa: F401
    FWD,
    FWD_BWD,
    MODES,
    OpCase,
    Size,
    Target,
    case_names,
    get_cases,
    registry,
)
from genfast.benchmark.runner import (  # noqa: F401
    COMPILE,
    REFERENCE,
    build,
    default_device,
    implementations,
    matrix,
)
from genfast.benchmark.timing import (  # noqa: F401
    Measurement,
    TimingSettings,
    measure,
    measure_interleaved,
)
