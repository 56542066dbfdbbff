"""The row recurrence's Triton kernels use tensor cores where they should (issue 19).

Ahead of time, for sm_80 and sm_90 (kernels/_aot.py, no GPU needed): every per-row and
grad-weight variant in float32-with-TF32 and in bfloat16 has tensor-core instructions in its
PTX (mma.sync or wgmma of that type) and does not spill (ptxas -v); the float32 variant without
TF32 has no TF32 instruction. On the CPU: the launchers pick the variant from torch's TF32 flag,
and the grid keeps the SMs busy at the bench shape. On a GPU: float32 results follow the flag.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import genfast
from genfast.kernels import lstm_row as kernels
from genfast.ops.lstm_row import lstm_rows_ref
from conftest import requires_cuda

KERNELS_DIR = Path(__file__).resolve().parent.parent / "kernels"
PTXAS = "/usr/local/cuda/bin/ptxas"
CAPABILITIES = (80, 90)
VARIANTS = ("tf32", "bf16", "ieee")
KERNEL_NAMES = ("_forward_row_kernel", "_backward_row_kernel", "_grad_weight_kernel")
# The tensor-core instruction of each variant's operand type, in PTX.
TENSOR_CORE = {"tf32": re.compile(r"(mma\.sync\.aligned\.\S*\.tf32|wgmma\.mma_async\S*\.tf32)"),
               "bf16": re.compile(r"(mma\.sync\.aligned\.\S*\.bf16|wgmma\.mma_async\S*\.bf16)")}
ANY_TF32 = re.compile(r"\.tf32")

requires_triton = pytest.mark.skipif(not genfast.backends()["triton"].available,
                                     reason="triton unavailable")

# Runs in a subprocess without TRITON_INTERPRET (the interpreter replaces jit functions):
# argv = [kernels dir, output dir, variants...]. kernels/ is loaded as a package of its own.
_COMPILE_SCRIPT = r"""
import importlib, importlib.util, json, os, sys
from concurrent.futures import ProcessPoolExecutor

kernels_dir, out_dir, variants = sys.argv[1], sys.argv[2], sys.argv[3:]
PKG = "genfast_aot_lstm"
spec = importlib.util.spec_from_file_location(
    PKG, os.path.join(kernels_dir, "__init__.py"), submodule_search_locations=[kernels_dir])
sys.modules[PKG] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sys.modules[PKG])

def compile_one(job):
    index, cap = job
    aot = importlib.import_module(PKG + "._aot")
    aot_spec = importlib.import_module(PKG + ".lstm_row").AOT_SPECS[index]
    ptx = aot.compile_ptx(aot_spec, cap)
    path = os.path.join(out_dir, f"{aot_spec.name}.sm{cap}.ptx")
    with open(path, "w") as f:
        f.write(ptx)
    return {"kernel": aot_spec.fn.__name__, "variant": aot_spec.tag.split("-")[0],
            "name": aot_spec.name, "capability": cap, "ptx": path}

if __name__ == "__main__":
    specs = importlib.import_module(PKG + ".lstm_row").AOT_SPECS
    jobs = [(i, cap) for i, s in enumerate(specs) if s.tag.split("-")[0] in variants
            for cap in (80, 90)]
    with ProcessPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:
        entries = list(pool.map(compile_one, jobs))
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(entries, f)
"""


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """[{kernel, variant, name, capability, ptx}] of every tf32, bf16 and ieee variant."""
    out_dir = tmp_path_factory.mktemp("lstm_tensor_cores")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(out_dir / "triton_cache")
    script = out_dir / "compile_lstm_row.py"
    script.write_text(_COMPILE_SCRIPT)
    result = subprocess.run([sys.executable, str(script), str(KERNELS_DIR), str(out_dir),
                             *VARIANTS], capture_output=True, text=True, env=env, timeout=900)
    if result.returncode != 0:
        pytest.fail(f"the AOT compile subprocess failed:\n{result.stdout}\n{result.stderr}")
    entries = json.loads((out_dir / "manifest.json").read_text())
    for e in entries:
        e["text"] = Path(e["ptx"]).read_text()
    return entries


def _entries(compiled, variant, kernel, capability):
    found = [e for e in compiled if e["variant"] == variant and e["kernel"] == kernel
             and e["capability"] == capability]
    assert found, f"no {variant} variant of {kernel} for sm_{capability}"
    return found


@requires_triton
@pytest.mark.slow
@pytest.mark.parametrize("capability", CAPABILITIES)
@pytest.mark.parametrize("kernel", KERNEL_NAMES)
@pytest.mark.parametrize("variant", ["tf32", "bf16"])
def test_tensor_core_instructions(compiled, variant, kernel, capability):
    for e in _entries(compiled, variant, kernel, capability):
        assert TENSOR_CORE[variant].search(e["text"]), \
            f"{e['name']} for sm_{capability} has no {variant} mma.sync / wgmma"


@requires_triton
@pytest.mark.slow
@pytest.mark.parametrize("capability", CAPABILITIES)
@pytest.mark.parametrize("kernel", KERNEL_NAMES)
def test_ieee_float32_has_no_tf32(compiled, kernel, capability):
    for e in _entries(compiled, "ieee", kernel, capability):
        assert not ANY_TF32.search(e["text"]), f"{e['name']} uses TF32 with TF32 off"


@requires_triton
@pytest.mark.slow
@pytest.mark.skipif(not os.access(PTXAS, os.X_OK), reason=f"{PTXAS} not found")
def test_no_spills(compiled):
    from genfast.kernels import _aot

    spilled = []
    for e in compiled:
        usage = _aot.ptxas_usage(PTXAS, e["ptx"], e["capability"])
        print(f"  {e['name']:<36} sm_{e['capability']}: {usage['registers']} registers, "
              f"{usage['spill_stores']}/{usage['spill_loads']} B spilled")
        if usage["spill_stores"] or usage["spill_loads"]:
            spilled.append(f"{e['name']} sm_{e['capability']}")
    assert len(compiled) == len(VARIANTS) * 5 * len(CAPABILITIES)
    assert not spilled, f"register spills: {spilled}"


# ----------------------------------------------------------------------------- launch choices

@pytest.fixture
def matmul_tf32():
    """Sets torch.backends.cuda.matmul.allow_tf32 for a test, restoring it afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32

    def set_flag(value: bool):
        torch.backends.cuda.matmul.allow_tf32 = value

    yield set_flag
    torch.backends.cuda.matmul.allow_tf32 = saved


def test_variant_follows_the_matmul_tf32_flag(matmul_tf32):
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    matmul_tf32(True)
    assert kernels._variant(torch.float32, cuda) == "tf32"
    assert kernels._variant(torch.float32, cpu) == "ieee"  # the interpreter: IEEE float32
    matmul_tf32(False)
    assert kernels._variant(torch.float32, cuda) == "ieee"
    for dtype, variant in ((torch.bfloat16, "bf16"), (torch.float16, "fp16"),
                           (torch.float64, "fp64")):
        assert kernels._variant(dtype, cuda) == variant
    assert kernels._dot_options("tf32", cuda) == {"PRECISION": "tf32", "DOT_IN_FP32": False}
    assert kernels._dot_options("bf16", cuda)["DOT_IN_FP32"] is False
    assert kernels._dot_options("bf16", cpu)["DOT_IN_FP32"] is True


@pytest.mark.parametrize("hidden, length", [(64, 28), (128, 28), (96, 55)])
def test_grid_fills_an_h100_at_batch_16(monkeypatch, hidden, length):
    """Batch 16 on a 132-SM GPU: the per-row grid has at least as many programs as SMs."""
    monkeypatch.setattr(kernels, "_sm_count", lambda device: 132)
    grid, block_l = kernels.row_grid(16, hidden, length, "tf32", torch.device("cuda"))
    assert grid[0] * grid[1] * grid[2] >= 128
    assert grid[1] * kernels.ROW_BLOCKS["tf32"][0] >= hidden
    assert grid[2] * block_l >= length and block_l in kernels.L_CHOICES


def test_grid_on_the_interpreter_takes_the_widest_tile():
    """On the CPU interpreter, fewer programs are faster: the narrowest tile holding the row."""
    grid, block_l = kernels.row_grid(16, 64, 28, "ieee", torch.device("cpu"))
    assert (grid, block_l) == ((16, 4, 1), 32)


@requires_triton
@pytest.mark.slow
def test_launches_per_call(monkeypatch):
    """R launches forward, R + 1 backward (rows in reverse, then grad_h0), one grad-weight."""
    launches = []

    class Counted:
        def __init__(self, name, kernel):
            self.name, self.kernel = name, kernel

        def __getitem__(self, grid):
            launches.append((self.name, tuple(grid)))
            return self.kernel[grid]

    for name in ("_forward_row_kernel", "_backward_row_kernel", "_grad_weight_kernel"):
        monkeypatch.setattr(kernels, name, Counted(name, getattr(kernels, name)))
    torch.manual_seed(0)
    batch, hidden, rows, length = 2, 5, 4, 7
    gates_in = torch.randn(batch, 4 * hidden, rows, length, dtype=torch.float64,
                           requires_grad=True)
    weight = torch.randn(4 * hidden, hidden, 3, dtype=torch.float64, requires_grad=True)
    h, c = genfast.lstm_rows(gates_in, weight, backend="triton")
    assert [name for name, _ in launches] == ["_forward_row_kernel"] * rows
    launches.clear()
    grads = torch.autograd.grad(h.sum() + c.sum(), [gates_in, weight])
    assert [name for name, _ in launches] == \
        ["_backward_row_kernel"] * (rows + 1) + ["_grad_weight_kernel"]
    h_ref, c_ref = lstm_rows_ref(gates_in, weight)
    grads_ref = torch.autograd.grad(h_ref.sum() + c_ref.sum(), [gates_in, weight])
    for got, want in zip((h, c, *grads), (h_ref, c_ref, *grads_ref)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- on a GPU

def _relative_error(got, want64):
    return ((got.double() - want64).abs().max() / want64.abs().max()).item()


@requires_cuda
@pytest.mark.parametrize("tf32", [False, True], ids=["ieee", "tf32"])
def test_float32_follows_the_matmul_tf32_flag(matmul_tf32, tf32):
    """IEEE float32 accuracy with TF32 off; TF32 accuracy (10-bit mantissa) with it on."""
    if not genfast.backends()["triton"].available:
        pytest.skip("triton unavailable")
    matmul_tf32(tf32)
    torch.manual_seed(0)
    gates_in = torch.randn(16, 256, 28, 28, device="cuda", requires_grad=True)
    weight = (torch.randn(256, 64, 3, device="cuda") / 192 ** 0.5).requires_grad_()
    h, c = genfast.lstm_rows(gates_in, weight, backend="triton")
    grads = torch.autograd.grad(h.sum() + c.sum(), [gates_in, weight])
    gates64, weight64 = (t.detach().double().requires_grad_() for t in (gates_in, weight))
    h64, c64 = lstm_rows_ref(gates64, weight64)
    grads64 = torch.autograd.grad(h64.sum() + c64.sum(), [gates64, weight64])
    errors = [_relative_error(a, b) for a, b in zip((h, c, *grads), (h64, c64, *grads64))]
    if tf32:
        assert max(errors) < 1e-2, errors
    else:
        assert max(errors) < 1e-5, errors
