"""Wiring shared by genfast's torch.library ops: fake kernels and autograd for a forward op
whose backward is an op of its own (extension-cpp's pattern), and a cheaper eager path to the
same op and formula for the public functions."""
import importlib.util

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode


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


def eager_call(forward_op, backward_op, setup_context, make_backward):
    """``call(*args)`` = ``forward_op(*args)`` (a torch.library op registered with
    register_fake_and_autograd) with the same setup_context and backward, for the public
    functions.

    torch.library's autograd kernel wraps every call in Python (an autograd.Function applied
    with the schema's defaults re-filled, then a redispatch), and runs that wrapper even when no
    gradient is wanted: 25-40 us per forward+backward of a small op on a CPU, more than its
    kernels. Here a gradient-recording call applies one autograd.Function that runs the op below
    autograd, and any other call goes below autograd directly. While torch.compile traces or a
    dispatch mode (FakeTensor, make_fx) is active, the registered op is called as it is, so
    compiled graphs and tracers see the torch.library op; opcheck tests that op itself.
    """
    forward_op, backward_op = _overload(forward_op), _overload(backward_op)
    below_autograd = torch._C._AutoDispatchBelowAutograd
    save, compute_grads = setup_context, make_backward(backward_op)

    class Call(torch.autograd.Function):
        # The registered formula's own pieces: both paths save and compute the same. forward
        # takes ctx itself: with a separate setup_context, apply binds the arguments through
        # inspect.signature on every call (about 20 us).
        @staticmethod
        def forward(ctx, *args):
            with below_autograd():
                output = forward_op(*args)
            save(ctx, args, output)
            return output

        backward = staticmethod(compute_grads)

    def call(*args):
        if torch.compiler.is_compiling() or _get_current_dispatch_mode() is not None:
            return forward_op(*args)
        if torch.is_grad_enabled() and torch._C._any_requires_grad(*args):
            return Call.apply(*args)
        with below_autograd():
            return forward_op(*args)
    return call


def _overload(op):
    """An op's default overload: calling it skips the packet's overload resolution."""
    return op.default if isinstance(op, torch._ops.OpOverloadPacket) else op


def triton_kernels_exist(stem: str) -> bool:
    """Whether genfast.kernels.<stem> (the Triton kernels of an op family) is installed; it is
    found without importing it, so that triton is only imported when a kernel runs."""
    return importlib.util.find_spec(f"genfast.kernels.{stem}") is not None
