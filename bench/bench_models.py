"""pytest-benchmark of whole models: a training step and an evaluate pass
(genfast/benchmark/models.py).

Each model case x batch size x mode (train step, evaluate) x implementation (the reference
backend, torch.compile of the reference model, each fast backend usable on this device). A
whole model's torch.compile takes minutes on 2 cores; ``--benchmark-disable`` still compiles.
"""
import pytest

from genfast.benchmark import get_cases
from genfast.benchmark.models import CASES

from .conftest import bench_params

PARAMS = [pytest.param(case, *p.values, marks=p.marks, id=f"{case.name}-{p.id}")
          for case in CASES for p in bench_params(case)]


@pytest.mark.parametrize("case,size,mode,impl", PARAMS)
def test_models(run_bench, case, size, mode, impl):
    run_bench(case, size, mode, impl)


def test_cases_are_registered():
    assert [c.name for c in get_cases([c.name for c in CASES])] == [c.name for c in CASES]
