"""pytest-benchmark of the PixelRNN LSTM layers (genfast.nn.pixelrnn on genfast.ops.lstm_row).

Each case of genfast/benchmark/lstm_row.py x size x mode (fwd, fwd+bwd) x implementation
(eager reference, torch.compile(reference), each fast backend usable on this device).
"""
import pytest

from genfast.benchmark import get_cases
from genfast.benchmark.lstm_row import CASES

from .conftest import bench_params

PARAMS = [pytest.param(case, *p.values, marks=p.marks, id=f"{case.name}-{p.id}")
          for case in CASES for p in bench_params(case)]


@pytest.mark.parametrize("case,size,mode,impl", PARAMS)
def test_lstm_row(run_bench, case, size, mode, impl):
    run_bench(case, size, mode, impl)


def test_cases_are_registered():
    assert [c.name for c in get_cases([c.name for c in CASES])] == [c.name for c in CASES]
