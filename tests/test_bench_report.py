"""genfast bench's timer and report pieces: quantiles of the measurements, noisy timings
flagged in the result line, the table and the target checks, and whether auto's choice was the
fastest."""
import json
import time

import torch

from genfast import _backend
from genfast.benchmark import report
from genfast.benchmark.cases import get_cases, registry
from genfast.benchmark.models import ModelCase
from genfast.benchmark.runner import COMPILE, REFERENCE, Result, auto_choice
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


def test_every_op_case_names_the_op_auto_chooses_for():
    for case in registry().values():
        if isinstance(case, ModelCase):  # a whole model: many ops, no one auto choice
            continue
        assert (case.auto_op, "cpu") in _backend.AUTO_TABLE, case.name
        assert (case.auto_op, "cuda") in _backend.AUTO_TABLE, case.name
        assert auto_choice(case, "cpu") == _backend.select(case.auto_op, None,
                                                           torch.device("cpu"), case.dtype)


def test_auto_choice_on_cuda_follows_the_table(monkeypatch):
    monkeypatch.setattr(_backend, "_missing_reason", lambda name: "")
    monkeypatch.setattr(_backend, "_devices", lambda name: ("cpu", "cuda"))
    cases = registry()
    assert auto_choice(cases["masked_conv2d_7x7A"], "cuda") == "reference"
    assert auto_choice(cases["row_lstm"], "cuda") == "triton"
    assert auto_choice(cases["reparameterize_kl"], "cuda") == "cuda"


def test_the_report_says_whether_autos_choice_was_the_fastest():
    case = get_cases(["masked_conv2d_7x7A"])[0]
    size = case.size("large")
    times = {REFERENCE: _measurement(0.070, 0.002), COMPILE: _measurement(0.030, 0.002),
             "cpu": _measurement(0.035, 0.001)}
    # torch.compile is faster still, but auto never picks it: cpu is the fastest it could.
    right = Result(case, size, "fwd+bwd", "cpu", times, {}, auto="cpu")
    wrong = Result(case, size, "fwd+bwd", "cpu", times, {}, auto=REFERENCE)
    untimed = Result(case, size, "fwd+bwd", "cpu", times, {"cuda": "no GPU"}, auto="cuda")
    assert right.auto_verdict().is_fastest
    assert "auto picks cpu, the fastest" in report.format_line(right)
    assert not wrong.auto_verdict().is_fastest
    assert "auto picks reference, 2.00x the time of cpu" in report.format_line(wrong)
    assert "auto picks cuda, not timed here (no GPU)" in report.format_line(untimed)
    table = report.format_table([right, wrong])
    assert "auto's choice on cpu" in table
    assert "masked_conv2d_7x7A large fwd+bwd: auto picks reference, 2.00x the time of cpu" \
        in table
    record = json.loads(json.dumps(report.to_json([wrong, untimed], {}, {})))
    assert record["results"][0]["auto"] == {"backend": "reference", "fastest": "cpu",
                                            "auto_is_fastest": False,
                                            "time_vs_fastest": 0.070 / 0.035}
    assert record["results"][1]["auto"]["time_vs_fastest"] is None
