"""pytest-benchmark of the PixelCNN masked convolution (genfast.ops.masked_conv).

Each case of genfast/benchmark/masked_conv.py x size x mode (fwd, fwd+bwd) x implementation
(eager reference, torch.compile(reference), each fast backend usable on this device).
"""
import pytest

from genfast.benchmark import get_cases
from genfast.benchmark.masked_conv import CASES

from .conftest import bench_params

PARAMS = [pytest.param(case, *p.values, marks=p.marks, id=f"{case.name}-{p.id}")
          for case in CASES for p in bench_params(case)]


@pytest.mark.parametrize("case,size,mode,impl", PARAMS)
def test_masked_conv(run_bench, case, size, mode, impl):
    run_bench(case, size, mode, impl)


def test_cases_are_registered():
    assert [c.name for c in get_cases([c.name for c in CASES])] == [c.name for c in CASES]
