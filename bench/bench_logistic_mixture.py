"""pytest-benchmark of PixelCNN++'s discretized logistic mixture NLL
(genfast.ops.logistic_mixture).

Each case of genfast/benchmark/logistic_mixture.py x size x mode (fwd, fwd+bwd) x
implementation (eager reference, torch.compile(reference), each fast backend usable on this
device). The fwd+bwd runs also record the peak memory of one call in extra_info
(genfast.benchmark.memory), for the reference and each implementation alike.
"""
import pytest

from genfast.benchmark import get_cases
from genfast.benchmark.logistic_mixture import CASES
from genfast.benchmark.memory import peak_bytes

from .conftest import bench_params

PARAMS = [pytest.param(case, *p.values, marks=p.marks, id=f"{case.name}-{p.id}")
          for case in CASES for p in bench_params(case)]


@pytest.mark.parametrize("case,size,mode,impl", PARAMS)
def test_logistic_mixture(run_bench, benchmark, case, size, mode, impl):
    fn = run_bench(case, size, mode, impl)
    if mode == "fwd+bwd" and fn is not None:
        benchmark.extra_info["peak_memory_bytes"] = peak_bytes(fn, benchmark.extra_info["device"])


def test_cases_are_registered():
    assert [c.name for c in get_cases([c.name for c in CASES])] == [c.name for c in CASES]
