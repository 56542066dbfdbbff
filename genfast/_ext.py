"""Loads the compiled extension genfast._C once and remembers why, if it could not."""
import warnings

import torch  # noqa: F401  (loads libtorch and libc10, which _C links against)

try:
    from genfast import _C  # noqa: F401  (importing it registers the genfast:: C++ ops)

    LOAD_ERROR = None
except (ImportError, OSError) as exc:
    _C = None
    LOAD_ERROR = f"genfast._C did not load ({type(exc).__name__}: {exc})"
    warnings.warn(
        f"{LOAD_ERROR}; the cpu and cuda backends are off and genfast falls back to triton or "
        "the reference. Rebuild with: pip install --no-build-isolation -e .",
        RuntimeWarning,
        stacklevel=2,
    )

try:
    from genfast import _build_info as BUILD_INFO
except ImportError:
    BUILD_INFO = None


def has_kernel(op: str, dispatch_key: str) -> bool:
    """Whether the extension registered a kernel for ``genfast::op`` under ``dispatch_key``."""
    import torch

    return _C is not None and torch._C._dispatch_has_kernel_for_dispatch_key(
        f"genfast::{op}", dispatch_key
    )


def has_op(op: str) -> bool:
    """Whether the loaded extension defines ``genfast::op`` (a stale build may lack it)."""
    import torch

    return _C is not None and hasattr(torch.ops.genfast, op)

