"""genfast bench's timer and report pieces: quantiles of the measurements, and noisy timings
flagged in the result line, the table and the target checks."""
import time

from genfast.benchmark import report
from genfast.benchmark.cases import get_cases
from genfast.benchmark.runner import COMPILE, REFERENCE, Result
from genfast.benchmark.timing import NOISY_SPREAD, Measurement, TimingSettings, measure_interleaved


def _measurement(median, iqr):
    return Measurement(median=median, iqr=iqr, min=median - iqr, mean=median, number=10,
                       blocks=15, p20=median - iqr / 2, p80=median + iqr / 2)


def test_measurements_carry_ordered_quantiles():
    settings = TimingSettings(repeats=7, min_block_s=0.001, warmup=1, max_s=0.2)
    measured = measure_interleaved({"sleep": lambda: time.sleep(0.0002),
                                    "nothing": lambda: None}, settings)
    for m in measured.values():
        assert 0 < m.min <= m.p20 <= m.median <= m.p80
        assert m.blocks >= 3 and m.spread >= 0
    assert measured["sleep"].median > measured["nothing"].median


def test_noisy_timings_are_flagged_where_the_ratio_is_printed():
    case = get_cases(["masked_conv2d_7x7A"])[0]
    size = case.size("large")
    quiet = {REFERENCE: _measurement(0.070, 0.002), COMPILE: _measurement(0.075, 0.002),
             "cpu": _measurement(0.035, 0.001)}
    noisy = dict(quiet, **{REFERENCE: _measurement(0.070, 0.7 * 0.070)})
    calm = Result(case, size, "fwd+bwd", "cpu", quiet, {})
    busy = Result(case, size, "fwd+bwd", "cpu", noisy, {})
    assert not calm.noisy() and busy.noisy() == {REFERENCE: noisy[REFERENCE].spread}
    assert noisy[REFERENCE].spread > NOISY_SPREAD
    assert "noisy" not in report.format_line(calm)
    assert "[noisy: reference spread 70%]" in report.format_line(busy)
    assert "2.00x vs reference" in report.format_line(busy)
    table = report.format_table([calm, busy], report.check_targets([busy], "cpu"))
    assert "Noisy" in table and "rerun on a quiet machine" in table
