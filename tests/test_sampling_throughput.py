"""Sampling throughput by batch size (genfast/benchmark/throughput.py): cached and naive
sampling draw the same integers at every batch size of the sweep (the models of the sweep, on a
small image; tests/test_sampling.py checks every model, grey, RGB and binary, at batch 1 and 16),
and the sweep reports sane fields, its table, its CSV rows and its chart."""
import csv
import json

import pytest
import torch
from PIL import Image

import genfast
from genfast.benchmark import report, throughput
from genfast.benchmark.throughput import BATCHES, MODELS, ThroughputModel, run_throughput
from genfast.cli import main

# Cached and naive agree to the bit on the cpu backend only (see tests/test_sampling.py).
needs_cpu_backend = pytest.mark.skipif(not genfast.backends()["cpu"].available,
                                       reason="the cpu backend (genfast._C) is not available")
TINY = (ThroughputModel("tiny_pixelcnn", "pixelcnn", dict(channels=8, blocks=1,
                                                          head_channels=8)),
        ThroughputModel("tiny_pixelrnn", "pixelrnn", dict(layer="row", hidden=4,
                                                          head_channels=8)))


@needs_cpu_backend
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("spec", MODELS, ids=[m.name for m in MODELS])
def test_cached_and_naive_draw_the_same_integers_at_each_batch_size(spec, batch):
    model = spec.build((1, 3, 4), "cpu")
    with torch.no_grad():  # spread the logits so the draws depend on the model
        for p in model.parameters():
            p.mul_(2.0)
    naive, cached = (model.sample(batch, method=method, generator=torch.Generator().manual_seed(5))
                     for method in ("naive", "cached"))
    assert cached.shape == (batch, 1, 3, 4) and int(cached.max()) < throughput.LEVELS
    assert torch.equal(naive, cached)
    if batch >= 16:  # many images of 256 levels: a degenerate sampler would repeat one
        assert len(torch.unique(cached.flatten(1), dim=0)) > 1


@needs_cpu_backend
def test_the_sweep_reports_sane_fields(tmp_path):
    seen = []
    # A zero budget times three rows of the 8x8 quick image and extrapolates; batch 1 and 3.
    points = run_throughput("cpu", quick=True, batches=(1, 3), models=TINY, budget_s=0.0,
                            naive_passes=1, check_side=3, on_point=seen.append)
    assert seen == points
    assert [(p.model, p.batch) for p in points] == [
        ("tiny_pixelcnn", 1), ("tiny_pixelcnn", 3), ("tiny_pixelrnn", 1), ("tiny_pixelrnn", 3)]
    for p in points:
        assert p.image_shape == (1, 8, 8) and p.rows_timed == 3 and p.extrapolated
        assert p.cached_s > 0 and p.naive_s > 0 and p.identical
        assert p.cached_images_per_s == pytest.approx(p.batch / p.cached_s)
        assert p.speedup == pytest.approx(p.naive_s / p.cached_s)
        record = json.loads(json.dumps(p.to_dict()))
        assert record["identical_shape"] == [1, 3, 3] and record["naive_passes_timed"] == 1
    assert "tiny_pixelrnn batch 3" in throughput.format_line(points[-1])
    table = throughput.format_table(points)
    assert "cached images/s" in table and "3/8" in table and "Fast PixelCNN++" in table

    rows = throughput.csv_rows(points, {"run": "now"})
    assert len(rows) == 2 * len(points)
    assert {r["provider"] for r in rows} == {"cached (extrapolated)", "naive (estimated)"}
    assert all(r["mode"] == report.SAMPLE_MODE and r["p50_s"] > 0 for r in rows)

    chart = tmp_path / throughput.PNG_NAME
    throughput.write_chart(points, str(chart), "test")
    with Image.open(chart) as image:
        assert image.format == "PNG" and image.size[0] > 500


def test_a_whole_image_within_the_budget_is_timed_row_by_row():
    model = TINY[0].build((1, 3, 4), "cpu")
    setup, row_times = throughput.time_cached_rows(model, 2, "cpu", rows=3)
    assert setup > 0 and len(row_times) == 3 and min(row_times) > 0
    seconds, rows = throughput.cached_run_s(model, 2, "cpu", budget_s=1e9)
    assert rows == 3 and seconds > 0


@needs_cpu_backend
def test_genfast_bench_writes_the_throughput_table_csv_and_chart(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(throughput, "MODELS", TINY[:1])
    monkeypatch.setattr(throughput, "BATCHES", (1, 2))
    assert main(["bench", "--quick", "--op", throughput.NAME, "--no-progress",
                 "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "naive images/s (est.)" in printed
    record = json.loads((tmp_path / "bench.json").read_text())
    assert [(p["model"], p["batch"]) for p in record["sampling_throughput"]] == [
        ("tiny_pixelcnn", 1), ("tiny_pixelcnn", 2)]
    assert record["results"] == [] and record["sampling"] == []
    with open(tmp_path / "bench.csv", newline="") as f:
        ops = [row["op"] for row in csv.DictReader(f)]
    assert ops == ["throughput_tiny_pixelcnn"] * 4
    assert (tmp_path / throughput.PNG_NAME).stat().st_size > 0
