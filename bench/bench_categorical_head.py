"""pytest-benchmark of the fused categorical output head (genfast.ops.categorical_head).

Each case of genfast/benchmark/categorical_head.py x size x mode (fwd, fwd+bwd) x
implementation (eager reference, torch.compile(reference), each fast backend usable here).
"""
import pytest

from genfast.benchmark import get_cases
from genfast.benchmark.categorical_head import CASES

from .conftest import bench_params

PARAMS = [pytest.param(case, *p.values, marks=p.marks, id=f"{case.name}-{p.id}")
          for case in CASES for p in bench_params(case)]


@pytest.mark.parametrize("case,size,mode,impl", PARAMS)
def test_categorical_head(run_bench, case, size, mode, impl):
    run_bench(case, size, mode, impl)


def test_cases_are_registered():
    assert [c.name for c in get_cases([c.name for c in CASES])] == [c.name for c in CASES]
