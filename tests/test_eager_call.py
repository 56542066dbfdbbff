"""The public functions' eager path (genfast.ops._library.eager_call) against the registered
torch.library ops it stands in for: the same outputs and gradients, its own float64 gradcheck,
and no torch.library autograd wrapper in the graph. torch.compile still sees the library op
(test_compile.py and the ops' own compile tests)."""
import pytest
import torch

import genfast
from genfast.ops import gated, reparam


def _grads(outputs, inputs, cotangents):
    return torch.autograd.grad(outputs, inputs, cotangents)


def _reparam_args(device, dtype=torch.float32):
    torch.manual_seed(0)
    mu = torch.randn(5, 7, device=device, dtype=dtype, requires_grad=True)
    logvar = torch.randn(5, 7, device=device, dtype=dtype, requires_grad=True)
    return mu, logvar, None, torch.tensor([3, 4]), 2, True, reparam.KL_ELEMENTWISE


@pytest.mark.parametrize("op", ["reparam", "gated"])
def test_matches_the_library_op(backend, op):
    name, device = backend
    if op == "reparam":
        args = _reparam_args(device)
        calls, library = reparam._CALLS[name], reparam._FORWARD_OPS[name]
        leaves = args[:2]
    else:
        x = torch.randn(3, 10, 4, device=device, requires_grad=True)
        args, calls, library, leaves = (x, 1), gated._CALLS[name], gated._FORWARD_OPS[name], (x,)
    ours, theirs = calls(*args), library(*args)
    ours, theirs = (ours, theirs) if isinstance(ours, tuple) else ((ours,), (theirs,))
    cotangents = [torch.randn_like(t) for t in theirs]
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)
        assert not type(a.grad_fn).__name__.startswith("GeneratedBackwardFor")
    for a, b in zip(_grads(ours, leaves, cotangents), _grads(theirs, leaves, cotangents)):
        assert torch.equal(a, b)
    with torch.no_grad():
        assert all(t.grad_fn is None for t in
                   (calls(*args) if op == "reparam" else (calls(*args),)))


def test_gradcheck_float64(backend):
    name, device = backend
    args = _reparam_args(device, torch.float64)
    call = reparam._CALLS[name]
    assert torch.autograd.gradcheck(lambda mu, logvar: call(mu, logvar, *args[2:]), args[:2])
    x = torch.randn(2, 6, 3, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: gated._CALLS[name](t, 1), (x,))


def test_public_functions_take_the_eager_path():
    x = torch.randn(2, 4, requires_grad=True)
    assert type(genfast.gated_activation(x, backend="cpu").grad_fn).__name__ == "CallBackward"
    z, kl = genfast.reparameterize_kl(x, x, backend="cpu")
    assert type(z.grad_fn).__name__ == "CallBackward"
