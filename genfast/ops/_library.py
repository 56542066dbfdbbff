"""Wiring shared by genfast's torch.library ops: fake kernels and autograd for a forward op
whose backward is an op of its own (extension-cpp's pattern)."""
import importlib.util

import torch


def register_fake_and_autograd(forward_name: str, backward_name: str, fake_forward,
                               fake_backward, make_backward, setup_context) -> None:
    """Registers the fake kernels of both ops, and the forward's autograd formula.

    make_backward(backward_op) returns the autograd backward that calls ``backward_name``.
    """
    torch.library.register_fake(forward_name, fake_forward)
    torch.library.register_fake(backward_name, fake_backward)
    namespace, name = backward_name.split("::")
    backward_op = getattr(getattr(torch.ops, namespace), name)
    torch.library.register_autograd(forward_name, make_backward(backward_op),
                                    setup_context=setup_context)


def triton_kernels_exist(stem: str) -> bool:
    """Whether genfast.kernels.<stem> (the Triton kernels of an op family) is installed; it is
    found without importing it, so that triton is only imported when a kernel runs."""
    return importlib.util.find_spec(f"genfast.kernels.{stem}") is not None
