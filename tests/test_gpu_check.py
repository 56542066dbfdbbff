"""The GPU check (.ci/gpu_check.py), as far as it runs without a GPU: it stops at once with exit
status 2 and a report that says why, and it reads pytest's junit file into the report."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / ".ci" / "gpu_check.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU answer")
def test_without_a_gpu_it_reports_why_and_exits_2(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["machine"]["status"] == "failed"
    assert report["machine"]["reason"] == "no CUDA device is visible to torch"
    assert report["machine"]["torch"] == torch.__version__
    assert "build" not in report


def test_junit_summary(tmp_path):
    junit = tmp_path / "tests.xml"
    junit.write_text(
        '<testsuites><testsuite name="pytest" tests="3" failures="1" errors="0" skipped="1">'
        '<testcase classname="tests.test_a" name="test_ok"/>'
        '<testcase classname="tests.test_a" name="test_bad">'
        '<failure message="AssertionError: 1 != 2&#10;more">trace</failure></testcase>'
        '<testcase classname="tests.test_b" name="test_skip"><skipped message="no"/></testcase>'
        '</testsuite></testsuites>')
    summary = _load_script().summarize_junit(junit)
    assert summary == {"tests": 3, "failures": 1, "errors": 0, "skipped": 1,
                       "failed": [{"test": "tests.test_a::test_bad",
                                   "message": "AssertionError: 1 != 2"}]}
