#!/usr/bin/env python3
"""The first run of genfast on a GPU machine, in one command and one JSON report.

    python .ci/gpu_check.py [--out DIR] [--budget SECONDS] [--rebuild]

Steps, each with its time, outcome and the tail of its output in DIR/gpu_check.json
(default DIR: gpu-check/):
  machine  the GPU, driver, torch and CUDA versions;
  build    genfast with its CUDA kernels for this GPU's architecture (pip install -e, no
           dependencies fetched), unless the installed build already has them for it;
  tests    `pytest -m requires_cuda`: the cuda and compiled-Triton backends against the
           references (in IEEE float32: tests/conftest.py turns TF32 off), the CUDA-only paths;
  bench    `genfast bench --device cuda --quick`, its bench.json kept in DIR/bench/.
Each step gets a share of --budget (default 570 s, inside the 10 minutes a GPU machine is lent
for); a step that runs out is stopped and reported as timed out, and the later steps still run.

Exit status: 0 when every step passed, 1 when one failed or timed out, 2 with no CUDA device.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TAIL = 4000  # characters of a step's output kept in the report

# What each step may take of what is left of the budget when it starts, keeping the rest for
# the steps after it.
RESERVE_AFTER = {"build": 240, "tests": 100, "bench": 5}


def run_step(command, timeout, env=None):
    """(status, seconds, output tail) of a command run from the repository root."""
    start = time.monotonic()
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=max(timeout, 1))
        status = "passed" if done.returncode == 0 else "failed"
        output = done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        status = "timed_out"
        output = "".join(part.decode() if isinstance(part, bytes) else (part or "")
                         for part in (exc.stdout, exc.stderr))
    return status, round(time.monotonic() - start, 1), output[-TAIL:]


def python_probe(code):
    """What a fresh interpreter prints for ``code`` (genfast must not be imported here: a build
    step may replace it), as JSON, or None."""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return None


MACHINE_PROBE = """
import json, os, torch
info = {"torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(), "cpu_count": os.cpu_count()}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(gpu=p.name, capability=f"{p.major}.{p.minor}",
                multiprocessors=p.multi_processor_count,
                memory_gib=round(p.total_memory / 2**30, 1))
print(json.dumps(info))
"""

BUILD_PROBE = """
import json, warnings
warnings.simplefilter("ignore")
try:
    import genfast
    info = genfast.build_info()
except Exception as exc:
    info = {"error": f"{type(exc).__name__}: {exc}"}
print(json.dumps(info, default=str))
"""


def machine_step():
    info = python_probe(MACHINE_PROBE) or {}
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                          "--format=csv,noheader"], capture_output=True, text=True) \
        if shutil.which("nvidia-smi") else None
    if smi is not None and smi.returncode == 0:
        info["nvidia_smi"] = smi.stdout.strip()
    status = "passed" if info.get("cuda_available") else "failed"
    return {"status": status, **info}


def build_step(capability, timeout, rebuild):
    before = python_probe(BUILD_PROBE) or {}
    archs = str(before.get("cuda_archs", "")).replace(" ", "").split(";")
    if not rebuild and before.get("with_cuda") and capability in archs:
        return {"status": "passed", "reused": True, "seconds": 0.0, "build_info": before}
    env = dict(os.environ, GENFAST_CUDA="1", TORCH_CUDA_ARCH_LIST=capability,
               MAX_JOBS=os.environ.get("MAX_JOBS", str(os.cpu_count() or 4)))
    status, seconds, tail = run_step(
        [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "-e", "."],
        timeout, env)
    after = python_probe(BUILD_PROBE) or {}
    if status == "passed" and not after.get("with_cuda"):
        status = "failed"
    return {"status": status, "reused": False, "seconds": seconds, "archs": capability,
            "build_info": after, "output_tail": tail}


def summarize_junit(path):
    """Totals and the failed tests (name and the first line of the message) of a junit file."""
    if not path.exists():
        return {}
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    totals = {key: sum(int(s.get(key, 0)) for s in suites)
              for key in ("tests", "failures", "errors", "skipped")}
    failed = []
    for case in root.iter("testcase"):
        for problem in list(case.findall("failure")) + list(case.findall("error")):
            message = (problem.get("message") or "").strip().splitlines()
            failed.append({"test": f"{case.get('classname')}::{case.get('name')}",
                           "message": message[0][:300] if message else ""})
    return {**totals, "failed": failed}


def tests_step(out, timeout):
    junit = out / "tests.xml"
    command = [sys.executable, "-m", "pytest", "-m", "requires_cuda", "-q",
               "-p", "no:cacheprovider", f"--junitxml={junit}"]
    if importlib.util.find_spec("xdist") is not None:
        # Several workers share the GPU; mostly they overlap Triton's compiles.
        command += ["-n", str(min(8, os.cpu_count() or 1))]
    status, seconds, tail = run_step(command, timeout)
    summary = summarize_junit(junit)
    if status == "passed" and summary.get("tests", 0) == 0:
        status = "failed"  # selecting nothing would hide a broken marker
    return {"status": status, "seconds": seconds, **summary, "output_tail": tail}


def bench_step(out, timeout):
    bench_dir = out / "bench"
    status, seconds, tail = run_step(
        [sys.executable, "-m", "genfast", "bench", "--device", "cuda", "--quick", "--no-progress",
         "--out", str(bench_dir)], timeout)
    result = {"status": status, "seconds": seconds, "output_tail": tail}
    bench_json = bench_dir / "bench.json"
    if bench_json.exists():
        result["bench_json"] = str(bench_json.relative_to(out))
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="gpu-check", help="report directory (default gpu-check)")
    parser.add_argument("--budget", type=float, default=570.0,
                        help="seconds for all steps together (default 570)")
    parser.add_argument("--rebuild", action="store_true",
                        help="build even when the installed build has CUDA kernels for this GPU")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    report = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "budget_s": args.budget}

    def left(step):
        return args.budget - (time.monotonic() - start) - RESERVE_AFTER[step]

    def save():
        report["seconds"] = round(time.monotonic() - start, 1)
        (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")

    report["machine"] = machine_step()
    if report["machine"]["status"] != "passed":
        report["machine"]["reason"] = "no CUDA device is visible to torch"
        save()
        print(f"gpu_check: no CUDA device is visible to torch; report in {out / 'gpu_check.json'}")
        return 2
    capability = report["machine"]["capability"]
    report["build"] = build_step(capability, left("build"), args.rebuild)
    save()
    for name, step in (("tests", tests_step), ("bench", bench_step)):
        built = report["build"]["status"] == "passed"
        report[name] = step(out, left(name)) if built else {"status": "skipped",
                                                             "reason": "the build failed"}
        save()  # after every step, so an interrupted check still leaves its report
    steps = ("machine", "build", "tests", "bench")
    for name in steps:
        step = report[name]
        extra = ""
        if name == "tests" and "tests" in step:
            extra = (f" ({step['tests']} tests, {step['failures']} failed, "
                     f"{step['errors']} errors, {step['skipped']} skipped)")
        print(f"gpu_check: {name:8s} {step['status']}{extra}")
    print(f"gpu_check: report in {out / 'gpu_check.json'}, {report['seconds']} s in all")
    return 0 if all(report[name]["status"] == "passed" for name in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
