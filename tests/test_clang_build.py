"""The CPU kernels' per-ISA translation units (csrc/cpu/isa/*.cpp) build with clang as well as
GCC: each level compiles with its own vector instructions, and a small driver
(tests/clang_driver.cpp) runs the clang-built kernels of every level this CPU has."""
import pathlib
import platform
import re
import shutil
import subprocess

import pytest

import genfast

ROOT = pathlib.Path(__file__).resolve().parent.parent
CLANG = next((shutil.which(name) for name in ["clang++"] + [f"clang++-{v}" for v in
                                                           range(20, 13, -1)]
              if shutil.which(name)), None)
pytestmark = [
    pytest.mark.skipif(CLANG is None, reason="no clang++ on PATH (.ci/run installs clang-14 "
                                             "on Debian)"),
    pytest.mark.skipif(platform.machine() != "x86_64", reason="the levels checked are x86's"),
]
# Registers each level's code must use, and must not: AVX-512 zmm, AVX2 ymm, SSE xmm only.
REGISTERS = {"avx512": ("zmm", None), "avx2": ("ymm", "zmm"), "baseline": ("xmm", "ymm")}


@pytest.fixture(scope="module")
def objects(tmp_path_factory):
    out = tmp_path_factory.mktemp("clang")
    built = {}
    for level in REGISTERS:
        obj = out / f"{level}.o"
        subprocess.run([CLANG, "-std=c++20", "-O3", "-fno-math-errno", "-fno-trapping-math",
                        "-Wall", "-Werror", "-Wno-psabi", "-c",
                        str(ROOT / "csrc" / "cpu" / "isa" / f"{level}.cpp"), "-o", str(obj)],
                       check=True)
        built[level] = obj
    return out, built


@pytest.mark.parametrize("level", REGISTERS)
def test_each_level_uses_its_own_vector_registers(objects, level):
    _, built = objects
    asm = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(built[level])],
                         capture_output=True, text=True, check=True).stdout
    used, forbidden = REGISTERS[level]
    assert re.search(rf"%{used}\d", asm), f"no {used} registers in the {level} kernels"
    if forbidden is not None:
        assert not re.search(rf"%{forbidden}\d", asm), f"{forbidden} in the {level} kernels"


def test_clang_built_kernels_run_correctly(objects):
    out, built = objects
    driver = out / "driver"
    subprocess.run([CLANG, "-std=c++20", "-O2", str(ROOT / "tests" / "clang_driver.cpp"),
                    *map(str, built.values()), "-o", str(driver)], check=True)
    levels = genfast.cpu_isa_levels() if genfast.build_info()["extension_loaded"] else [
        "baseline"]
    run = subprocess.run([str(driver), *levels], capture_output=True, text=True, check=True)
    lines = run.stdout.split("\n")
    for level, line in zip(levels, lines):
        fields = dict(item.split("=") for item in line.split()[1:])
        assert line.split()[0] == level
        assert int(fields["lanes"]) == {"avx512": 16, "avx2": 8, "baseline": 4}[level]
        assert float(fields["exp_rel_error"]) < 3e-7, line
        assert float(fields["tile_error"]) < 1e-5, line
