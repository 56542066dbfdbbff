"""The CPU kernels' ISA levels (csrc/cpu/isa.h): the switch, and the one vector maths layer
(csrc/cpu/kernels/vector_math.h) at every level against float64 over its whole range. Every
cpu-backend op test runs at each level too (conftest's backend fixture)."""
import math
import os
import subprocess
import sys

import pytest
import torch

import genfast
from genfast.isa import LEVELS

pytestmark = pytest.mark.skipif(not genfast.build_info()["extension_loaded"],
                                reason="genfast._C is not built")

LEVELS_HERE = genfast.cpu_isa_levels() if genfast.build_info()["extension_loaded"] else []
SMALLEST_NORMAL = torch.finfo(torch.float32).tiny


def test_levels_are_ordered_and_the_best_is_in_use():
    assert LEVELS_HERE[0] == "baseline"
    assert LEVELS_HERE == [level for level in LEVELS if level in LEVELS_HERE]
    assert genfast.cpu_isa() == LEVELS_HERE[-1]
    assert genfast.build_info()["cpu_isa"] == genfast.cpu_isa()


@pytest.mark.parametrize("level", LEVELS_HERE)
def test_use_cpu_isa_switches_and_restores(level):
    before = genfast.cpu_isa()
    with genfast.use_cpu_isa(level):
        assert genfast.cpu_isa() == level
    assert genfast.cpu_isa() == before


def test_bad_levels_are_clear_errors():
    with pytest.raises(ValueError, match="unknown CPU ISA level 'sse9'"):
        with genfast.use_cpu_isa("sse9"):
            pass
    missing = [level for level in LEVELS if level not in LEVELS_HERE]
    for level in missing:
        with pytest.raises(ValueError, match="this CPU cannot run"):
            with genfast.use_cpu_isa(level):
                pass


@pytest.mark.parametrize("value,message", [("avx3", "unknown CPU ISA level 'avx3'"),
                                           ("baseline", None)])
def test_environment_variable(value, message):
    """GENFAST_CPU_ISA picks the level; a bad value stops the import with a clear message."""
    env = {**os.environ, "GENFAST_CPU_ISA": value}
    run = subprocess.run([sys.executable, "-c", "import genfast; print(genfast.cpu_isa())"],
                         env=env, capture_output=True, text=True)
    if message is None:
        assert run.returncode == 0 and run.stdout.strip() == value
    else:
        assert run.returncode != 0 and "ValueError" in run.stderr and message in run.stderr


def _vector(fn, x, level):
    with genfast.use_cpu_isa(level):
        return torch.ops.genfast.cpu_vector_math(x, fn).double()


def _special(*values):
    return torch.tensor(values, dtype=torch.float32)


def _sweep(lo, hi, n=200_003):
    # Random points plus a regular grid, so that every switch-over point has neighbours.
    gen = torch.Generator().manual_seed(hash((lo, hi)) % 2**31)
    return torch.cat([torch.linspace(lo, hi, n), lo + (hi - lo) * torch.rand(n, generator=gen)])


def _assert_ulp(got, want, ulps, where):
    """|got - want| within `ulps` units in the last place of float32 at want."""
    finite = torch.isfinite(want)
    assert torch.equal(torch.isnan(got), torch.isnan(want)), where
    assert torch.equal(got[~finite & ~torch.isnan(want)], want[~finite & ~torch.isnan(want)])
    g, w = got[finite], want[finite]
    ulp = torch.clamp(w.abs(), min=SMALLEST_NORMAL) * 2.0**-23
    worst = ((g - w).abs() / ulp).max().item() if w.numel() else 0.0
    assert worst <= ulps, f"{where}: {worst:.2f} ulp"


CRITICAL = (0.0, -0.0, 1e-30, -1e-30, 1e-45, -1e-45, 0.24999, 0.25, 0.625, -0.625, 0.62501,
            1.0, -1.0, 88.0, 88.37, 88.72, 88.73, -87.33, -87.34, -87.3365, -103.0, 100.0,
            -100.0, math.inf, -math.inf, math.nan)


@pytest.mark.parametrize("level", LEVELS_HERE)
def test_exp(level):
    x = torch.cat([_sweep(-87.3, 88.7), _special(*CRITICAL)])
    got, want = _vector("exp", x, level), torch.exp(x.double())
    # Results below float32's smallest normal are flushed to zero; everything else within 2 ulp,
    # overflow to inf above float32's range.
    tiny = want < SMALLEST_NORMAL
    assert torch.all((got[tiny] == 0) | ((got[tiny] - want[tiny]).abs() <= SMALLEST_NORMAL))
    want = torch.where(want > torch.finfo(torch.float32).max, math.inf, want)
    _assert_ulp(got[~tiny], want[~tiny], 2, f"exp at {level}")


@pytest.mark.parametrize("level", LEVELS_HERE)
def test_log(level):
    positive = torch.cat([torch.logspace(-45, 38, 400_001, dtype=torch.float64).float(),
                          _sweep(0.5, 2.0)])
    x = torch.cat([positive, _special(0.0, -0.0, -1.0, -1e-45, 1e-45, 1e-40, SMALLEST_NORMAL,
                                      math.inf, -math.inf, math.nan)])
    got, want = _vector("log", x, level), torch.log(x.double())
    # Absolute error near log = 0, relative elsewhere: 2 ulp of max(|log x|, 1).
    finite = torch.isfinite(want)
    assert torch.equal(torch.isnan(got), torch.isnan(want))
    assert torch.equal(got[~finite & ~torch.isnan(want)], want[~finite & ~torch.isnan(want)])
    scale = want[finite].abs().clamp(min=0.5) * 2.0**-23
    worst = ((got[finite] - want[finite]).abs() / scale).max().item()
    assert worst <= 2, f"log at {level}: {worst:.2f} ulp"


@pytest.mark.parametrize("level", LEVELS_HERE)
@pytest.mark.parametrize("fn", ["tanh", "sigmoid"])
def test_tanh_and_sigmoid(level, fn):
    x = torch.cat([_sweep(-20, 20), _sweep(-1, 1), _special(*CRITICAL)])
    got, want = _vector(fn, x, level), getattr(torch, fn)(x.double())
    # sigmoid far below zero is exp(x) and flushes to zero with it.
    tiny = want.abs() < SMALLEST_NORMAL
    assert torch.all((got[tiny] - want[tiny]).abs() <= SMALLEST_NORMAL)
    _assert_ulp(got[~tiny], want[~tiny], 3, f"{fn} at {level}")


@pytest.mark.parametrize("level", LEVELS_HERE)
def test_sin_and_cos_of_turns(level):
    u = torch.cat([_sweep(-4, 4), _special(0.0, 0.125, 0.25, 0.5, 0.75, 1.0, -0.25)])
    for fn, ref in [("sin_turns", torch.sin), ("cos_turns", torch.cos)]:
        got, want = _vector(fn, u, level), ref(2 * math.pi * u.double())
        assert (got - want).abs().max().item() <= 4e-7, f"{fn} at {level}"


@pytest.mark.parametrize("level", LEVELS_HERE)
def test_levels_agree_to_rounding(level):
    """The levels compute the same formulas: their results differ in the last bits at most."""
    x = _sweep(-30, 30, 10_007)
    for fn in ("exp", "tanh", "sigmoid"):
        a, b = _vector(fn, x, level), _vector(fn, x, LEVELS_HERE[-1])
        assert torch.allclose(a, b, rtol=3e-7, atol=0), fn


@pytest.mark.parametrize("level", LEVELS_HERE)
def test_kernels_do_not_depend_on_the_thread_count(level):
    torch.manual_seed(7)
    x = torch.randn(3, 24, 13, 11, requires_grad=True)
    w = torch.randn(40, 24, 5, 5, requires_grad=True)
    results = []
    for threads in (1, 2):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with genfast.use_cpu_isa(level):
                y = genfast.masked_conv2d(x, w, None, mask_type="B", backend="cpu")
                gx, gw = torch.autograd.grad(y, (x, w), torch.ones_like(y))
        finally:
            torch.set_num_threads(before)
        results.append((y, gx, gw))
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_auto_passes_over_the_baseline_level_and_says_why():
    """At the baseline level (no tuned path) auto takes the reference; backend='cpu' still runs
    the kernels; at the tuned levels auto takes them."""
    from genfast._backend import select

    cpu = torch.device("cpu")
    with genfast.use_cpu_isa("baseline"):
        assert "baseline" in genfast.backends()["cpu"].auto_skips
        assert select("masked_conv2d", None, cpu, torch.float32) == "reference"
        assert select("masked_conv2d", "cpu", cpu, torch.float32) == "cpu"
    for level in LEVELS_HERE[1:]:
        with genfast.use_cpu_isa(level):
            assert genfast.backends()["cpu"].auto_skips == ""
            assert select("masked_conv2d", None, cpu, torch.float32) == "cpu"


def test_cpu_backend_params_run_at_their_level(backend, request):
    """The cpu-cpu-<level> params of conftest really run the kernels at <level>."""
    name, _ = backend
    marker = request.node.get_closest_marker("cpu_isa")
    if name == "cpu":
        assert genfast.cpu_isa() == (marker.args[0] if marker else LEVELS_HERE[-1])
        assert request.node.callspec.id.endswith(marker.args[0] if marker else "cpu-cpu")
    else:
        assert marker is None
