"""Every Triton kernel variant compiles ahead of time for sm_80 and sm_90, and does not spill.

Each kernels/*.py module lists the variants its launchers run in ``AOT_SPECS`` (see
kernels/_aot.py), so kernels added later are checked without touching this file. Triton compiles
for a named GPU target without a GPU, so this runs on any machine with triton; the register and
spill counts come from ``ptxas -v`` of the CUDA toolkit and are skipped without it.

The test session runs Triton under its interpreter (tests/conftest.py sets TRITON_INTERPRET=1
without a GPU), which replaces jit functions with Python ones, so the compiling happens in one
fresh subprocess with TRITON_INTERPRET removed. That subprocess loads kernels/ on its own,
without importing genfast, so only triton and torch need to work for it.
"""
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

KERNELS_DIR = Path(__file__).resolve().parent.parent / "kernels"
CAPABILITIES = (80, 90)
PTXAS = "/usr/local/cuda/bin/ptxas"
# Compiling every variant for two targets takes about 40 s on 2 cores.
pytestmark = pytest.mark.slow

# Runs in the subprocess: argv = [kernels dir, output dir, capabilities...]. Writes one .ptx per
# (variant, capability the variant is set up for) and manifest.json listing them, or the error
# each one raised; "variants" counts the compiles per module.
_COMPILE_SCRIPT = r"""
import importlib, importlib.util, json, os, sys, traceback
from concurrent.futures import ProcessPoolExecutor

kernels_dir, out_dir, caps = sys.argv[1], sys.argv[2], [int(c) for c in sys.argv[3:]]
PKG = "genfast_aot_kernels"  # kernels/ loaded as a package of its own, so relative imports work
spec = importlib.util.spec_from_file_location(
    PKG, os.path.join(kernels_dir, "__init__.py"), submodule_search_locations=[kernels_dir])
package = importlib.util.module_from_spec(spec)
sys.modules[PKG] = package
spec.loader.exec_module(package)
aot = importlib.import_module(PKG + "._aot")

def load(stem):
    return importlib.import_module(f"{PKG}.{stem}")

def compile_one(job):
    stem, index, cap = job
    aot_spec = load(stem).AOT_SPECS[index]
    entry = {"module": stem, "variant": aot_spec.name, "capability": cap}
    try:
        ptx = aot.compile_ptx(aot_spec, cap)
        path = os.path.join(out_dir, f"{stem}.{aot_spec.name}.sm{cap}.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        entry["ptx"] = path
    except Exception:
        entry["error"] = traceback.format_exc()
    return entry

if __name__ == "__main__":
    stems = sorted(f[:-3] for f in os.listdir(kernels_dir)
                   if f.endswith(".py") and not f.startswith("_"))
    jobs, missing, counts = [], [], {}
    for stem in stems:
        specs = getattr(load(stem), "AOT_SPECS", None)
        if specs is None:
            missing.append(stem)
            continue
        # A spec names the targets its launch settings are for (kernels/_aot.py).
        stem_jobs = [(stem, i, cap) for i, s in enumerate(specs) for cap in caps
                     if cap in s.capabilities]
        counts[stem] = len(stem_jobs)
        jobs += stem_jobs
    workers = max(1, min(8, os.cpu_count() or 1))
    with ProcessPoolExecutor(workers) as pool:
        entries = list(pool.map(compile_one, jobs))
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump({"missing_aot_specs": missing, "variants": counts, "entries": entries}, f)
"""


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """The manifest of one subprocess that compiles every variant for every capability."""
    out_dir = tmp_path_factory.mktemp("triton_aot")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(out_dir / "triton_cache")  # compile afresh, not from a cache
    script = out_dir / "compile_kernels.py"
    script.write_text(_COMPILE_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), str(KERNELS_DIR), str(out_dir), *map(str, CAPABILITIES)],
        capture_output=True, text=True, env=env, timeout=900)
    if result.returncode != 0:
        pytest.fail(f"the AOT compile subprocess failed:\n{result.stdout}\n{result.stderr}")
    manifest = json.loads((out_dir / "manifest.json").read_text())
    manifest["out_dir"] = str(out_dir)
    return manifest


def test_every_kernel_module_declares_aot_specs(compiled):
    assert not compiled["missing_aot_specs"], (
        f"kernels/{compiled['missing_aot_specs']} lack AOT_SPECS: list the variants the "
        "launchers run (an empty list if the module has no kernels)")
    assert compiled["variants"].get("reparam", 0) > 0


def test_every_variant_compiles(compiled):
    failed = [e for e in compiled["entries"] if "error" in e]
    assert not failed, "\n\n".join(
        f"{e['module']}.{e['variant']} for sm_{e['capability']}:\n{e['error']}" for e in failed)
    assert len(compiled["entries"]) == sum(compiled["variants"].values())


@pytest.mark.skipif(not os.access(PTXAS, os.X_OK),
                    reason=f"{PTXAS} not found: registers and spills need the CUDA toolkit's ptxas")
def test_no_register_spills(compiled):
    from genfast.kernels import _aot

    entries = [e for e in compiled["entries"] if "ptx" in e]
    with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as pool:
        usages = list(pool.map(
            lambda e: _aot.ptxas_usage(PTXAS, e["ptx"], e["capability"]), entries))
    report = [{**{k: e[k] for k in ("module", "variant", "capability")}, **u}
              for e, u in zip(entries, usages)]
    report_path = Path(compiled["out_dir"]) / "ptxas_usage.json"
    report_path.write_text(json.dumps(report, indent=1))
    print(f"\nptxas -v ({PTXAS}); also written to {report_path}")
    for r in report:
        print(f"  {r['module']}.{r['variant']:<40} sm_{r['capability']}: "
              f"{r['registers']:3d} registers, {r['stack_bytes']:3d} B stack, "
              f"{r['spill_stores']} B spill stores, {r['spill_loads']} B spill loads")
    spilled = [r for r in report if r["spill_stores"] or r["spill_loads"]]
    assert not spilled, f"register spills (see {report_path}): " + ", ".join(
        f"{r['module']}.{r['variant']} sm_{r['capability']}" for r in spilled)


# The masked convolution's variants (kernels/masked_conv.py) by the precision in their tag, and
# the tensor-core instruction each must contain on sm_80 (mma.sync) and sm_90 (wgmma for the
# one-warpgroup tensor-core variants; Hopper has no float64 wgmma, so DMMA's mma.sync stays).
_TENSOR_CORE_OPERANDS = {"tf32": "tf32.tf32", "bf16": "bf16.bf16", "fp16": "f16.f16",
                         "fp64": "f64.f64"}
_MMA = {80: r"mma\.sync\.aligned\.\S*{}", 90: r"wgmma\.mma_async\.\S*{}"}


def _masked_conv_ptx(compiled, precision):
    entries = [e for e in compiled["entries"] if e["module"] == "masked_conv" and "ptx" in e
               and precision in re.split(r"[\[\]-]", e["variant"])]
    assert entries, f"no masked_conv variant in {precision} was compiled"
    return [(e, Path(e["ptx"]).read_text()) for e in entries]


@pytest.mark.parametrize("precision", _TENSOR_CORE_OPERANDS)
def test_masked_conv_runs_on_tensor_cores(compiled, precision):
    """Forward, grad-input and grad-weight of every storage order run their products on
    tensor cores: TF32 when torch allows it, bfloat16/float16 as they are, DMMA for float64."""
    for entry, ptx in _masked_conv_ptx(compiled, precision):
        cap = 80 if precision == "fp64" else entry["capability"]
        pattern = _MMA[cap].format(re.escape(_TENSOR_CORE_OPERANDS[precision]))
        assert re.search(pattern, ptx), (
            f"{entry['variant']} on sm_{entry['capability']} has no {pattern} instruction")


def test_masked_conv_ieee_float32_is_not_tf32(compiled):
    """With TF32 off (torch.backends.cudnn.allow_tf32 = False) float32 runs as IEEE FMAs: no
    TF32 tensor-core instruction, so the result is honest float32."""
    for entry, ptx in _masked_conv_ptx(compiled, "ieee"):
        assert "tf32" not in ptx, f"{entry['variant']} uses TF32 on sm_{entry['capability']}"
        assert not re.search(r"\bw?gmma|\bmma\.", ptx), entry["variant"]
        assert re.search(r"\bfma\.rn\.f32", ptx), entry["variant"]
