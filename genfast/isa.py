"""The vector ISA level genfast's CPU kernels run at (csrc/cpu/isa.h).

Each level (``baseline``: SSE2 or the compiler's default, ``avx2``: x86-64-v3, ``avx512``:
x86-64-v4) has its own build of every CPU kernel, with its vector width and register tiles.
The best level the CPU supports is used unless the environment variable ``GENFAST_CPU_ISA``
names a lower one (read once, by the extension); ``use_cpu_isa`` switches it for a block of code,
as the tests and ``genfast bench`` do to run the AVX2 kernels on an AVX-512 machine.
"""
import contextlib

from genfast import _ext

LEVELS = ("baseline", "avx2", "avx512")
# The level in use, remembered so that backend selection on every op call costs no C++ call;
# set_cpu_isa is the only way to change it after the extension read GENFAST_CPU_ISA.
_current: str | None = None


def _ops():
    if not _ext.has_op("cpu_isa"):
        raise RuntimeError(_ext.LOAD_ERROR or "genfast._C is a stale build without cpu_isa; "
                           "rebuild with: pip install --no-build-isolation -e .")
    import torch

    return torch.ops.genfast


def cpu_isa() -> str:
    """The ISA level the CPU kernels run at now."""
    global _current
    if _current is None:
        _current = str(_ops().cpu_isa())
    return _current


def cpu_isa_levels() -> list[str]:
    """The levels this CPU can run, lowest first."""
    return [str(level) for level in _ops().cpu_isa_levels()]


def set_cpu_isa(level: str) -> None:
    """Runs the CPU kernels at ``level`` from now on (ValueError if the CPU lacks it)."""
    if level not in LEVELS:
        raise ValueError(f"unknown CPU ISA level {level!r}; the levels are {', '.join(LEVELS)}")
    if level not in cpu_isa_levels():
        raise ValueError(f"this CPU cannot run the {level!r} kernels; it supports "
                         f"{', '.join(cpu_isa_levels())}")
    global _current
    _ops().set_cpu_isa(level)
    _current = level


@contextlib.contextmanager
def use_cpu_isa(level: str):
    """Runs the CPU kernels at ``level`` inside the block, then restores the level before."""
    before = cpu_isa()
    set_cpu_isa(level)
    try:
        yield
    finally:
        set_cpu_isa(before)


def check_environment() -> None:
    """Turns a bad GENFAST_CPU_ISA into a clear error at import, not at the first kernel call."""
    if _ext.has_op("cpu_isa"):
        try:
            cpu_isa()
        except RuntimeError as exc:
            raise ValueError(f"GENFAST_CPU_ISA: {exc}".split("\n")[0]) from None
