"""Ahead-of-time compilation of genfast's Triton kernels, for checks that need no GPU.

Each kernel module lists the exact variants its launchers run as ``AOT_SPECS``: the jit function,
the Triton type of every runtime argument, the constexpr values and ``num_warps``. Triton can
compile such a description for any NVIDIA target without a device, so tests can prove that every
variant compiles for sm_80 and sm_90 and read its register and spill counts from ``ptxas -v``.

Compiling needs real ``@triton.jit`` functions: run it in a process where TRITON_INTERPRET is
unset, because the interpreter replaces jit functions with Python ones.
"""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from typing import Any

_TL_DTYPE_NAMES = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32", "float64": "fp64",
                   "int32": "i32", "int64": "i64"}


def triton_type(torch_dtype, pointer: bool = True) -> str:
    """'*fp32' for a pointer to torch.float32, 'i64' for a scalar torch.int64, and so on."""
    name = _TL_DTYPE_NAMES[str(torch_dtype).replace("torch.", "")]
    return "*" + name if pointer else name


@dataclass(frozen=True)
class AotSpec:
    """One compiled variant of a Triton kernel, as its launcher runs it."""

    fn: Any                    # the @triton.jit function
    signature: dict[str, str]  # runtime argument name -> Triton type ("*fp32", "i32", "i64")
    constexprs: dict[str, Any]  # constexpr argument name -> value
    num_warps: int = 4
    num_stages: int = 3  # Triton's default on NVIDIA targets
    # Arguments the launcher normally passes 16-byte aligned (pointers) or divisible by 16 (ints):
    # Triton's launcher specializes on this at run time, so the AOT compile assumes it too.
    divisible_by_16: tuple[str, ...] = ()
    tag: str = field(default="")  # tells this variant from the kernel's others, e.g. "fp32-noise1"
    # The targets this variant's launch settings are for; a kernel whose settings differ per
    # target lists one spec per target.
    capabilities: tuple[int, ...] = (80, 90)

    @property
    def name(self) -> str:
        return f"{self.fn.__name__}[{self.tag}]" if self.tag else self.fn.__name__


def full_signature(spec: AotSpec) -> dict[str, str]:
    """Every argument of the kernel in order, constexprs typed 'constexpr', as ASTSource wants."""
    arg_names = list(spec.fn.arg_names)
    given = set(spec.signature) | set(spec.constexprs)
    if given != set(arg_names) or set(spec.signature) & set(spec.constexprs):
        raise ValueError(f"{spec.name}: signature and constexprs must name each argument of "
                         f"{arg_names} exactly once, got {sorted(spec.signature)} and "
                         f"{sorted(spec.constexprs)}")
    return {a: "constexpr" if a in spec.constexprs else spec.signature[a] for a in arg_names}


def compile_ptx(spec: AotSpec, capability: int) -> str:
    """The PTX Triton generates for ``spec`` on compute capability ``capability`` (80, 90)."""
    if capability not in spec.capabilities:
        raise ValueError(f"{spec.name} is set up for {spec.capabilities}, not sm_{capability}")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    arg_names = list(spec.fn.arg_names)
    attrs = {(arg_names.index(a),): [["tt.divisibility", 16]] for a in spec.divisible_by_16}
    source = ASTSource(fn=spec.fn, signature=full_signature(spec), constexprs=spec.constexprs,
                       attrs=attrs)
    compiled = triton.compile(source, target=GPUTarget("cuda", capability, 32),
                              options={"num_warps": spec.num_warps,
                                       "num_stages": spec.num_stages})
    return compiled.asm["ptx"]


def ptxas_arch(capability: int) -> str:
    """The ptxas -arch Triton itself targets: sm_90 and later use the 'a' (accelerated) form."""
    return f"sm_{capability}a" if capability >= 90 else f"sm_{capability}"


_REGISTERS = re.compile(r"Used (\d+) registers")
_SPILLS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")


def ptxas_usage(ptxas: str, ptx_path: str, capability: int) -> dict[str, int]:
    """Registers, stack frame and spill bytes of the one kernel in ``ptx_path``, from ptxas -v."""
    result = subprocess.run([ptxas, f"-arch={ptxas_arch(capability)}", "-v", ptx_path,
                             "-o", "/dev/null"], capture_output=True, text=True, timeout=300)
    log = result.stdout + result.stderr
    if result.returncode != 0:
        raise RuntimeError(f"ptxas failed on {ptx_path}:\n{log}")
    registers, spills = _REGISTERS.search(log), _SPILLS.search(log)
    if registers is None or spills is None:
        raise RuntimeError(f"could not read ptxas -v output for {ptx_path}:\n{log}")
    return {"registers": int(registers.group(1)), "stack_bytes": int(spills.group(1)),
            "spill_stores": int(spills.group(2)), "spill_loads": int(spills.group(3))}
