"""genfast: fast drop-in PyTorch layers for classic generative image models."""
from genfast import isa as _isa
from genfast import nn, ops  # noqa: F401
from genfast._backend import BACKENDS, auto_table, backends, use_backend  # noqa: F401
from genfast.ops import (  # noqa: F401
    gaussian_kl,
    masked_conv2d,
    reparameterize,
    reparameterize_kl,
)
from genfast.ops import gated_activation  # noqa: F401
from genfast.ops import lstm_row_step, lstm_rows  # noqa: F401

__version__ = "0.1.0"

cpu_isa = _isa.cpu_isa
cpu_isa_levels = _isa.cpu_isa_levels
use_cpu_isa = _isa.use_cpu_isa
_isa.check_environment()


def build_info() -> dict:
    """What genfast._C was built with (CUDA or not, architectures, torch version), and the CPU
    kernels' ISA level now and the levels this CPU can run."""
    from genfast import _ext

    info = {"extension_loaded": _ext.LOAD_ERROR is None, "load_error": _ext.LOAD_ERROR}
    if _ext.BUILD_INFO is not None:
        info.update({k.lower(): v for k, v in vars(_ext.BUILD_INFO).items() if k.isupper()})
    if _ext.has_op("cpu_isa"):
        info.update(cpu_isa=cpu_isa(), cpu_isa_levels=cpu_isa_levels())
    return info
