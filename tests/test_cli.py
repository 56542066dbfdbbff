"""The ``genfast`` command line: ``genfast bench`` writes its JSON and chart, and bad arguments
fail with a message instead of a traceback."""
import csv
import json
import math
import subprocess
import sys

import pytest

import genfast
from genfast.cli import main


@pytest.fixture(scope="module")
def quick_bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    status = main(["bench", "--quick", "--full", "--op", "reparameterize_kl", "--no-compile",
                   "--device", "cpu", "--no-progress", "--out", str(out)])
    return status, out


def test_bench_writes_json_and_png(quick_bench):
    status, out = quick_bench
    assert status == 0
    with open(out / "bench.json") as f:
        record = json.load(f)
    machine = record["machine"]
    for key in ("torch_version", "device_name", "cpu_count", "torch_threads",
                "genfast_build_info"):
        assert key in machine
    assert machine["device"] == "cpu"
    assert record["settings"]["quick"] is True and record["settings"]["compile"] is False
    assert record["settings"]["full"] is True

    results = record["results"]
    assert {(r["size"], r["mode"]) for r in results} == {
        (size, mode) for size in ("small", "large") for mode in ("fwd", "fwd+bwd")}
    for r in results:
        assert r["op"] == "reparameterize_kl" and r["dtype"] == "float32"
        impls = r["implementations"]
        assert impls["torch.compile"]["available"] is False
        assert "--no-compile" in impls["torch.compile"]["reason"]
        assert impls["triton"]["available"] is False  # never timed on the interpreter
        timed = [name for name, i in impls.items() if i["available"]]
        assert "reference" in timed
        if genfast.backends()["cpu"].available:
            assert "cpu" in timed
        for name in timed:
            i = impls[name]
            assert i["median_s"] > 0 and math.isfinite(i["median_s"])
            ratio = i["speedup_vs_reference"]
            assert ratio > 0 and math.isfinite(ratio)
            assert i["gb_per_s"] > 0
        assert impls["reference"]["speedup_vs_reference"] == pytest.approx(1.0)

    large = [r for r in results if r["size"] == "large"][0]
    assert large["params"]["shape"][0] * large["params"]["shape"][1] == 4 * 2**20
    assert any(t["op"] == "reparameterize_kl" for t in record["targets"])

    with open(out / "bench.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    with open(out / "bench.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    timed = [(r["size"], r["mode"], name) for r in results
             for name, i in r["implementations"].items() if i["available"]]
    assert [(row["size"], row["mode"], row["provider"]) for row in rows] == timed
    for row in rows:
        assert row["op"] == "reparameterize_kl" and row["scope"] == "full quick"
        assert row["run"] == machine["date"] and row["genfast_commit"]
        assert row["cpu_capability"] == machine["cpu_capability"]
        assert 0 < float(row["p20_s"]) <= float(row["p50_s"]) <= float(row["p80_s"])


@pytest.mark.slow
def test_the_standard_run_times_each_op_once_and_prints_as_it_goes(tmp_path, capsys):
    status = main(["bench", "--quick", "--op", "reparameterize_kl,row_lstm", "--device", "cpu",
                   "--no-progress", "--out", str(tmp_path)])
    assert status == 0
    printed = capsys.readouterr().out
    record = json.loads((tmp_path / "bench.json").read_text())
    assert record["settings"]["full"] is False
    assert [(r["op"], r["size"], r["mode"]) for r in record["results"]] == [
        ("reparameterize_kl", "large", "fwd+bwd"), ("row_lstm", "large", "fwd+bwd")]
    # Each result has its line as soon as it is measured, before the table.
    table = printed.index("implementation")
    assert -1 < printed.index("reparameterize_kl 4096x1024 fwd+bwd: reference") < table
    # The row LSTM reference's torch.compile takes minutes: only --full times it.
    row_compile = record["results"][1]["implementations"]["torch.compile"]
    assert row_compile["available"] is False and "--full" in row_compile["reason"]
    assert record["results"][0]["implementations"]["torch.compile"]["available"] is True

    # A second run appends its rows to bench.csv under its own run stamp.
    first = (tmp_path / "bench.csv").read_text().splitlines()
    assert main(["bench", "--quick", "--op", "reparameterize_kl", "--no-compile",
                 "--no-progress", "--out", str(tmp_path)]) == 0
    both = (tmp_path / "bench.csv").read_text().splitlines()
    assert both[:len(first)] == first and len(both) > len(first)
    assert both[0].startswith("run,") and both.count(both[0]) == 1


def test_sampling_with_the_naive_time_estimated():
    from genfast.benchmark import sampling

    case = sampling.get_cases(["sample_pixelcnn"])[0]
    result = sampling.run_sampling_case(case, "cpu", repeats=1, estimate_naive=True)
    assert result.naive_estimated and result.identical
    assert result.naive_s > 0 and result.speedup > 0
    assert result.to_dict()["identical_size_label"] == case.label(True)
    assert "(est.)" in sampling.format_sampling_table([result])


def test_unknown_op_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--op", "no_such_op", "--no-progress"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown op 'no_such_op'" in err and "reparameterize_kl" in err


def test_unknown_backend_and_missing_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--backends", "cpu,gpu"])
    assert exc.value.code == 2
    assert "unknown backend 'gpu'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2


def test_python_dash_m_genfast():
    done = subprocess.run([sys.executable, "-m", "genfast", "bench", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--no-compile" in done.stdout and "reparameterize_kl" in done.stdout


def test_bench_at_another_cpu_isa_level(tmp_path, capsys):
    """--cpu-isa runs the cpu kernels at that level for the run, says so in the header and the
    CSV, and restores the level after; a level this CPU lacks is a clear error."""
    import genfast

    before = genfast.cpu_isa()
    assert main(["bench", "--quick", "--op", "gated_activation", "--cpu-isa", "baseline",
                 "--backends", "cpu", "--no-compile", "--no-progress",
                 "--out", str(tmp_path)]) == 0
    assert "cpu kernels at baseline of baseline/" in capsys.readouterr().out
    assert genfast.cpu_isa() == before
    with open(tmp_path / "bench.csv", newline="") as f:
        assert {row["genfast_cpu_isa"] for row in csv.DictReader(f)} == {"baseline"}
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--cpu-isa", "avx3"])
    assert exc.value.code == 2 and "invalid choice: 'avx3'" in capsys.readouterr().err
