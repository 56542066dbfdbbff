"""Builds genfast and its one extension, genfast._C.

Build switches (environment variables, safe defaults):
  GENFAST_CUDA=auto|0|1   auto: build the CUDA sources whenever nvcc and a CUDA build of torch
                          are present, GPU or not (never keyed on torch.cuda.is_available()).
  TORCH_CUDA_ARCH_LIST    CUDA architectures, default "8.0;9.0".
  GENFAST_DEBUG=1         -O0 -g, for debuggers and sanitizers.
  MAX_JOBS                parallel compile jobs (read by torch's ninja build).
"""
import glob
import os
import sys

from setuptools import find_packages, setup

# torch decides CUDA_HOME when cpp_extension is imported; point it at the toolkit first.
if "CUDA_HOME" not in os.environ and os.path.exists("/usr/local/cuda/bin/nvcc"):
    os.environ["CUDA_HOME"] = "/usr/local/cuda"

import torch  # noqa: E402
from torch.utils import cpp_extension  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCHS = "8.0;9.0"


def want_cuda() -> bool:
    mode = os.environ.get("GENFAST_CUDA", "auto").lower()
    if mode not in ("auto", "0", "1"):
        sys.exit(f"GENFAST_CUDA must be auto, 0 or 1, not {mode!r}")
    have_toolkit = cpp_extension.CUDA_HOME is not None and torch.version.cuda is not None
    if mode == "1" and not have_toolkit:
        sys.exit("GENFAST_CUDA=1 but nvcc or a CUDA build of torch is missing "
                 f"(CUDA_HOME={cpp_extension.CUDA_HOME}, torch.version.cuda={torch.version.cuda})")
    return mode == "1" or (mode == "auto" and have_toolkit)


def write_build_info(with_cuda: bool, archs: str) -> None:
    """Records what was built, so genfast.build_info() can say it at run time."""
    with open(os.path.join(HERE, "genfast", "_build_info.py"), "w") as f:
        f.write('"""Written by setup.py at build time."""\n')
        f.write(f"WITH_CUDA = {with_cuda!r}\n")
        f.write(f"CUDA_ARCHS = {archs if with_cuda else ''!r}\n")
        f.write(f"TORCH_VERSION = {torch.__version__!r}\n")
        f.write(f"TORCH_CUDA_VERSION = {torch.version.cuda!r}\n")


def extension():
    with_cuda = want_cuda()
    debug = os.environ.get("GENFAST_DEBUG", "0") == "1"
    archs = os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCHS)
    write_build_info(with_cuda, archs)

    opt = ["-O0", "-g"] if debug else ["-O3"]
    # The CPU kernels hand-vectorize their maths, so errno and FP traps must not block that.
    cxx = opt + ["-std=c++20", "-Wno-psabi", "-fno-math-errno", "-fno-trapping-math",
                 "-DGENFAST_PYMODULE=_C"]
    if not debug:
        # Python's own compile flags ask for debug info, which costs about 30% of the compile
        # time of a translation unit that includes torch's headers.
        cxx.append("-g0")
    # at::parallel_for is inline OpenMP code: without -fopenmp it silently runs on one thread.
    cxx.append("-fopenmp")
    link = ["-fopenmp"]
    # csrc/cpu/isa/ holds one translation unit per CPU ISA level (each sets its own target).
    sources = sorted(glob.glob("csrc/*.cpp")) + sorted(glob.glob("csrc/cpu/*.cpp")) + sorted(
        glob.glob("csrc/cpu/isa/*.cpp"))
    if not with_cuda:
        return cpp_extension.CppExtension(
            "genfast._C", sources, extra_compile_args={"cxx": cxx}, extra_link_args=link)
    nvcc = opt + ["-std=c++20", "-lineinfo"]
    return cpp_extension.CUDAExtension(
        "genfast._C", sources + sorted(glob.glob("csrc/cuda/*.cu")),
        extra_compile_args={"cxx": cxx + ["-DGENFAST_WITH_CUDA=1"], "nvcc": nvcc},
        extra_link_args=link,
    )


setup(
    name="genfast",
    version="0.1.0",
    description="Fast drop-in PyTorch layers for PixelCNN, PixelRNN, VAE and GAN models",
    packages=find_packages(include=["genfast", "genfast.*"]) + ["genfast.kernels"],
    # Triton kernels live in kernels/ at the top of the repository and ship as genfast.kernels.
    package_dir={"genfast.kernels": "kernels"},
    ext_modules=[extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
    python_requires=">=3.10",
    install_requires=["torch>=2.6", "numpy", "tqdm", "matplotlib"],
    extras_require={"triton": ["triton>=3.2"], "test": ["pytest", "pytest-benchmark", "scipy"]},
    entry_points={"console_scripts": ["genfast=genfast.cli:main"]},
)
