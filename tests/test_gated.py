"""The Gated PixelCNN gate tanh(a) * sigmoid(b): every fast backend against the reference."""
import zlib

import pytest
import torch

import genfast
from genfast.ops.gated import gated_activation_ref
from conftest import LOW_PRECISION, assert_close

# (shape, dim). Odd on purpose: batch 1, 2 * odd channels, primes, dim = -1 and 0, 5-d, and
# sizes that take each CPU path: short rows (gathered into tiles), long rows (in place), and
# enough elements to be split over threads.
CASES = [
    ((1, 2, 1, 1), 1),
    ((2, 6, 5, 7), 1),
    ((1, 14, 3, 11), 1),
    ((5, 22), -1),
    ((3, 4, 2, 10), -1),
    ((8, 3), 0),
    ((1, 6, 3, 4, 5), 1),
    ((2, 3, 2, 5, 6), -1),
    ((2, 130, 3, 3), 1),
    ((4, 64, 16, 17), 1),
]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def _skip_low_precision_on_interpreter(name, device, dtype):
    if name == "triton" and device == "cpu" and dtype in LOW_PRECISION:
        pytest.skip("the Triton CPU interpreter has no float16/bfloat16 maths")


def _run(fn, x64, dtype, grad64, dim, view, **kwargs):
    """Output and dL/dx of fn on view(x64 cast to dtype)."""
    x = view(x64.detach().to(dtype)).requires_grad_()
    y = fn(x, dim, **kwargs)
    (grad_x,) = torch.autograd.grad(y, x, grad64.to(dtype))
    return y.detach(), grad_x


def _check_against_reference(name, device, x64, dtype, dim, view=lambda t: t):
    """The fast backend's y and dL/dx on view(x64) against the reference's, returned."""
    grad64 = torch.randn(gated_activation_ref(view(x64), dim).shape, dtype=torch.float64,
                         device=device)
    fast = _run(genfast.gated_activation, x64, dtype, grad64, dim, view, backend=name)
    ref = _run(gated_activation_ref, x64, dtype, grad64, dim, view)
    ref64 = _run(gated_activation_ref, x64, torch.float64, grad64, dim, view)
    for got, want, want64 in zip(fast, ref, ref64):
        assert got.dtype == dtype and got.shape == want.shape
        assert_close(got, want, want64)
    return fast


@pytest.mark.parametrize("shape,dim", CASES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_matches_reference(backend, shape, dim, dtype):
    name, device = backend
    _skip_low_precision_on_interpreter(name, device, dtype)
    torch.manual_seed(zlib.crc32(repr((shape, dim, dtype)).encode()))  # the same every run
    x = 2.0 * torch.randn(shape, dtype=torch.float64, device=device)
    _check_against_reference(name, device, x, dtype, dim)


@pytest.mark.parametrize("shape,memory_format", [
    ((2, 6, 5, 7), torch.channels_last),
    ((1, 4, 3, 3), torch.channels_last),
    ((3, 130, 4, 2), torch.channels_last),
    ((2, 10, 3, 4, 2), torch.channels_last_3d),
], ids=str)
@pytest.mark.parametrize("dim", [1, 2, -1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_channels_last(backend, shape, memory_format, dim, dtype):
    """Channels-last input: the right values, and y and dL/dx stay channels-last."""
    name, device = backend
    _skip_low_precision_on_interpreter(name, device, dtype)
    shape = list(shape)
    shape[dim] = 2 * shape[dim]  # even along the split dimension
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=torch.float64, device=device)
    y, grad_x = _check_against_reference(name, device, x, dtype, dim,
                                         lambda t: t.contiguous(memory_format=memory_format))
    assert y.is_contiguous(memory_format=memory_format)
    assert grad_x.is_contiguous(memory_format=memory_format)


def test_non_contiguous_input(backend):
    name, device = backend
    base = torch.randn(3, 9, 8, 10, dtype=torch.float64, device=device)
    for view, dim in [(lambda t: t[:, 1:7, :, ::2], 1),       # sliced channels, strided width
                      (lambda t: t.transpose(1, 3), 1),        # [3, 10, 8, 9], a dense permutation
                      (lambda t: t[::2].permute(0, 2, 3, 1)[..., :8], -1)]:
        assert not view(base).is_contiguous()
        _check_against_reference(name, device, base, torch.float32, dim, view)


def test_large_and_special_values(backend):
    """|x| up to 50 (and inf) gives the saturated limits, never NaN or inf; NaN stays NaN."""
    name, device = backend
    values = torch.tensor([-50.0, -30.0, -15.0, -9.0, -1e-3, 0.0, 1e-3, 9.0, 15.0, 30.0, 50.0],
                          dtype=torch.float64, device=device)
    a, b = torch.meshgrid(values, values, indexing="ij")
    x64 = torch.stack([a.flatten(), b.flatten()], dim=0)  # dim 0: a = x[0], b = x[1]
    y, grad_x = _check_against_reference(name, device, x64, torch.float32, 0)
    assert torch.isfinite(y).all() and torch.isfinite(grad_x).all()

    special = torch.tensor([[float("inf"), -float("inf"), 1.0, float("nan"), 0.5],
                            [float("inf"), float("inf"), -float("inf"), 0.0, float("nan")]],
                           device=device)
    y = genfast.gated_activation(special, 0, backend=name)
    torch.testing.assert_close(y, gated_activation_ref(special, 0), equal_nan=True)
    x = special[:, :3].clone().requires_grad_()
    (grad_x,) = torch.autograd.grad(genfast.gated_activation(x, 0, backend=name), x,
                                    torch.ones(1, 3, device=device))
    assert torch.equal(grad_x, torch.zeros_like(grad_x))  # both gates saturated


@pytest.mark.parametrize("shape,dim", [((0, 4), 1), ((2, 0, 3), 1), ((3, 4, 0), 1)], ids=str)
def test_empty_tensors(backend, shape, dim):
    name, device = backend
    x = torch.randn(shape, device=device, requires_grad=True)
    y = genfast.gated_activation(x, dim, backend=name)
    assert y.shape == gated_activation_ref(x, dim).shape
    y.sum().backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("dim", [1, -1])
def test_gradcheck_float64(backend, dim):
    name, device = backend
    torch.manual_seed(1)
    op = genfast.ops.gated._FORWARD_OPS[name]
    for x in (torch.randn(2, 6, 3, 4, dtype=torch.float64, device=device),
              torch.randn(1, 4, 3, 2, dtype=torch.float64, device=device)
              .contiguous(memory_format=torch.channels_last)):
        x.requires_grad_()
        assert torch.autograd.gradcheck(lambda t: op(t, dim), (x,))


def test_opcheck(backend):
    name, device = backend
    op = genfast.ops.gated._FORWARD_OPS[name]
    x = torch.randn(2, 6, 3, 4, device=device, requires_grad=True)
    x_cl = torch.randn(2, 8, 3, 5, device=device).contiguous(memory_format=torch.channels_last)
    for args in [(x, 1), (x, -1), (x.double(), 1), (x_cl.requires_grad_(), 1),
                 (torch.randn(4, 3, device=device, requires_grad=True), 0)]:
        torch.library.opcheck(op, args)


def test_torch_compile_fullgraph(backend):
    name, device = backend
    torch.manual_seed(2)
    conv = torch.nn.Conv2d(3, 8, 3, padding=1).to(device)

    def block(x, gate):
        return gate(conv(x), 1).square().mean()

    x = torch.randn(2, 3, 5, 5, device=device)
    torch._dynamo.reset()
    compiled = torch.compile(block, fullgraph=True)
    loss = compiled(x, lambda t, d: genfast.gated_activation(t, d, backend=name))
    grads = torch.autograd.grad(loss, list(conv.parameters()))
    loss_ref = block(x, gated_activation_ref)
    grads_ref = torch.autograd.grad(loss_ref, list(conv.parameters()))
    torch.testing.assert_close(loss, loss_ref, rtol=1e-5, atol=1e-6)
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-6)


def test_reference_backend_and_export():
    x = torch.randn(2, 6, 3)
    assert genfast.gated_activation is genfast.ops.gated_activation
    torch.testing.assert_close(genfast.gated_activation(x, backend="reference"),
                               torch.tanh(x[:, :3]) * torch.sigmoid(x[:, 3:]))


class TestBadInput:
    @pytest.mark.parametrize("x,dim,error,match", [
        (torch.randn(2, 5, 3), 1, ValueError, "must be even"),
        (torch.randn(2, 4, 3), -1, ValueError, "must be even"),
        (torch.randint(0, 3, (2, 4)), 1, TypeError, "must be float16"),
        (torch.randn(2, 4), 2, ValueError, "out of range"),
        (torch.randn(2, 4), -3, ValueError, "out of range"),
        (torch.tensor(1.0), 0, ValueError, "at least one dimension"),
        (torch.randn(2, 4), 1.0, TypeError, "dim must be an int"),
        ([1.0, 2.0], 0, TypeError, "must be a torch.Tensor"),
    ])
    def test_clear_errors(self, backend, x, dim, error, match):
        with pytest.raises(error, match=match):
            genfast.gated_activation(x, dim, backend=backend[0])

    def test_op_checks_its_arguments(self, backend):
        """The ops called directly (as torch.compile would) still refuse bad input."""
        name, device = backend
        op = genfast.ops.gated._FORWARD_OPS[name]
        with pytest.raises((RuntimeError, ValueError), match="must be even"):
            op(torch.randn(2, 5, device=device), 1)
        with pytest.raises(IndexError):
            op(torch.randn(2, 4, device=device), 2)
