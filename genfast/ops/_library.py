"""Wiring shared by genfast's torch.library ops: fake kernels and autograd for a forward op
whose backward is an op of its own (extension-cpp's pattern)."""
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
