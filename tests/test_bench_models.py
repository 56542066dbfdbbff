"""genfast bench's whole-model cases (genfast/benchmark/models.py): the registered cases are
issue 22's models and sizes, and a tiny model case runs through the runner, the report and the
command in both modes with sane fields and ratios."""
import json
import math

import pytest
import torch

import genfast
from genfast.benchmark import cases, report
from genfast.benchmark.command import _work
from genfast.benchmark.models import CASES, EVALUATE, TRAIN_STEP, ModelCase
from genfast.benchmark.runner import (COMPILE, REFERENCE, build, implementations, plan,
                                      run_case)
from genfast.benchmark.timing import TimingSettings
from genfast.cli import main

needs_cpu_backend = pytest.mark.skipif(not genfast.backends()["cpu"].available,
                                       reason="the cpu backend (genfast._C) is not available")
TINY_TIMING = TimingSettings(repeats=3, min_block_s=0.001, warmup=1, max_s=0.2)


def tiny_case(name="model_tiny", model="pixelcnn", hparams=None):
    """A small model of the same kind, so the cases' machinery runs in seconds."""
    hparams = dict(channels=8, blocks=1, head_channels=8) if hparams is None else hparams
    return ModelCase(name, model, hparams, image_shape=(1, 5, 6), levels=7, batches=(2, 3))


def test_the_registered_cases_are_issue_22s_models_and_sizes():
    by_model = {(c.model, c.hparams.get("layer")) for c in CASES}
    assert by_model == {("pixelcnn", None), ("gated_pixelcnn", None), ("pixelrnn", "row"),
                        ("pixelrnn", "diagonal"), ("vae", None)}
    for case in CASES:
        assert cases.registry()[case.name] is case
        assert case.image_shape == (1, 28, 28) and case.levels == 256
        assert [s.params["batch"] for s in case.sizes] == [16, 64]
        assert case.modes == (TRAIN_STEP, EVALUATE)
        # Default hyperparameters only, what genfast train builds (the layer is a choice).
        assert set(case.hparams) <= {"layer"}
        (target,) = case.targets
        assert (target.size, target.mode, target.backend, target.beat_compile) == \
            ("small", TRAIN_STEP, "cpu", True)
        assert target.min_vs_reference >= 1.2


def test_only_full_runs_time_the_large_batch():
    case = tiny_case()

    def work(**options):
        return [(s.name, m) for _, s, m in _work([case], **options)]
    small = [("small", TRAIN_STEP), ("small", EVALUATE)]
    assert work(full=False, quick=True) == small and work(full=False, quick=False) == small
    both = small + [("large", TRAIN_STEP), ("large", EVALUATE)]
    assert work(full=True, quick=False) == both
    assert work(full=False, quick=True, size="large") == [("large", TRAIN_STEP),
                                                          ("large", EVALUATE)]
    # plan() (the pytest-benchmark matrix) goes through the case's own modes too.
    assert [(s.name, m) for _, s, m in plan([case])] == both
    # Whole-model compiles are slow: only --full times them.
    impls = {i.name: i.skip for i in implementations(case, "cpu", slow_compile=False)}
    assert "--full" in impls[COMPILE] and impls[REFERENCE] == ""


def test_a_model_case_rejects_a_mode_it_does_not_have():
    case = tiny_case()
    with pytest.raises(ValueError, match="mode must be one of"):
        build(case, case.size("small"), "fwd+bwd", REFERENCE, "cpu")


def test_the_train_step_trains():
    """The timed step is a real optimisation step: repeated on one batch, the loss falls."""
    case = tiny_case()
    model = case.make_model(REFERENCE, torch.device("cpu"))
    images = case.make_images(3, torch.device("cpu"))
    assert images.min() >= 0 and images.max() < case.levels and images.unique().numel() > 1
    from genfast.benchmark.models import _train_step

    step = _train_step(model, model, images)
    with torch.no_grad():
        before = float(model(images))
    for _ in range(5):
        step()
    with torch.no_grad():
        assert float(model(images)) < before


@needs_cpu_backend
@pytest.mark.parametrize("model,hparams", [
    ("pixelcnn", None), ("pixelrnn", dict(layer="diagonal", hidden=4, head_channels=8)),
    ("vae", dict(latent_dim=3, width=4, iw_samples=3))], ids=["pixelcnn", "pixelrnn", "vae"])
def test_a_tiny_model_case_runs_and_reports_in_both_modes(model, hparams):
    image_shape = (1, 8, 8) if model == "vae" else (1, 5, 6)
    case = ModelCase("model_tiny", model, hparams or dict(channels=8, blocks=1, head_channels=8),
                     image_shape=image_shape, levels=7, batches=(2, 3))
    impls = implementations(case, "cpu", backends=["cpu"], compile=False)
    results = [run_case(case, size, mode, "cpu", impls, TINY_TIMING)
               for _, size, mode in _work([case], full=False, quick=True)]
    for r in results:
        assert set(r.measurements) == {REFERENCE, "cpu"}
        assert all(m.median > 0 and m.blocks >= 3 for m in r.measurements.values())
        ratio = r.speedup("cpu", REFERENCE)
        assert math.isfinite(ratio) and ratio > 0  # a ratio, not a speed promise
        line = report.format_line(r)
        assert line.startswith(f"model_tiny 2x1x{image_shape[1]}x{image_shape[2]}, 7 levels "
                               f"{r.mode}: reference ")
        assert f"{ratio:.2f}x vs reference" in line
    record = json.loads(json.dumps(report.to_json(results, {}, {}), default=str))
    assert [(x["mode"], x["params"]["batch"]) for x in record["results"]] == [
        (TRAIN_STEP, 2), (EVALUATE, 2)]
    assert record["results"][0]["implementations"]["cpu"]["speedup_vs_reference"] > 0
    table = report.format_table(results, report.check_targets(results, "cpu"))
    assert "train step" in table and "evaluate" in table


@pytest.mark.slow
def test_compiled_steps_are_built_once_per_run():
    case = tiny_case("model_tiny_compiled")
    for mode in case.modes:
        first = build(case, case.size("small"), mode, COMPILE, "cpu")
        assert build(case, case.size("small"), mode, COMPILE, "cpu") is first


@needs_cpu_backend
def test_genfast_bench_runs_a_model_case(tmp_path, monkeypatch, capsys):
    case = tiny_case()
    monkeypatch.setattr(cases, "_REGISTRY", {case.name: case})
    assert main(["bench", "--quick", "--op", case.name, "--backends", "cpu", "--no-progress",
                 "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "model_tiny 2x1x5x6, 7 levels train step: reference" in printed
    record = json.loads((tmp_path / "bench.json").read_text())
    assert [(r["size"], r["mode"]) for r in record["results"]] == [
        ("small", TRAIN_STEP), ("small", EVALUATE)]
    assert record["sampling_throughput"] == []  # only the named case ran
    compiled = record["results"][0]["implementations"][COMPILE]
    assert compiled["available"] is False and "--full" in compiled["reason"]
    rows = (tmp_path / "bench.csv").read_text().splitlines()
    assert sum(",model_tiny," in row for row in rows) == 4  # 2 modes x reference and cpu
    assert (tmp_path / "bench.png").stat().st_size > 0
