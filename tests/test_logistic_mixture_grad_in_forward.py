"""The logistic mixture NLL's training path (genfast/ops/_gradient_in_forward.py): where autograd
will want the gradient, genfast::logistic_mixture_nll_with_grad computes the NLL and its gradient
in one pass and the backward scales it. Its NLL must equal the forward op's, its gradient the
recomputing backward op's and the reference's, a second backward must recompute, and one call
must hold no more than one params-sized buffer."""
import pytest
import torch

from genfast import _ext
from genfast.benchmark.memory import peak_bytes
from genfast.ops.logistic_mixture import logistic_mixture_nll, logistic_mixture_nll_ref
from test_logistic_mixture import _seed, assert_mixture_close, make_inputs, tail_params

from genfast.ops import logistic_mixture as lm

# backend -> (with_grad op, forward op, backward op)
OPS = {}
if _ext.has_op("logistic_mixture_nll_with_grad"):
    OPS["cpu"] = (torch.ops.genfast.logistic_mixture_nll_with_grad,
                  torch.ops.genfast.logistic_mixture_nll,
                  torch.ops.genfast.logistic_mixture_nll_backward)
if "triton" in lm.IMPLEMENTED:
    OPS["triton"] = (torch.ops.genfast.logistic_mixture_nll_triton_with_grad,
                     torch.ops.genfast.logistic_mixture_nll_triton,
                     torch.ops.genfast.logistic_mixture_nll_triton_backward)
BACKENDS = sorted(OPS)
needs_cpu = pytest.mark.skipif("cpu" not in OPS, reason="the extension lacks "
                               "genfast::logistic_mixture_nll_with_grad")
CASES = [(1, 1, 1, 1, 1, 256), (2, 3, 5, 5, 7, 256), (1, 3, 10, 9, 9, 17), (3, 1, 5, 4, 13, 2)]


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_one_pass_equals_the_forward_and_backward_ops(name, case, dtype):
    if name == "triton" and dtype == torch.bfloat16:
        pytest.skip("the Triton CPU interpreter has no bfloat16 maths")
    with_grad, forward, backward = OPS[name]
    _seed("with_grad", case, str(dtype))
    images, params64 = make_inputs(*case)
    params = params64.to(dtype)
    nll, grad = with_grad(images, params, case[-1])
    assert torch.equal(nll, forward(images, params, case[-1]))
    ones = torch.ones(case[0], dtype=nll.dtype)
    recomputed = backward(ones, images, params, case[-1])
    assert grad.dtype == params.dtype and grad.shape == params.shape
    torch.testing.assert_close(grad, recomputed, rtol=0, atol=0)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_training_path_and_second_backward_match_the_reference(name, dtype):
    """The first backward scales the stash, a retained graph's second one recomputes; both give
    the reference's gradient for their own upstream gradients (tails included)."""
    _seed("retain", str(dtype))
    images, params64 = make_inputs(3, 3, 5, 6, 7, 256)
    params64[:, :] = torch.where(torch.rand(params64.shape) < 0.5, params64,
                                 tail_params(images, 5, 256))
    params = params64.to(dtype).requires_grad_()
    reference = params64.to(dtype).requires_grad_()
    reference64 = params64.to(dtype).double().requires_grad_()
    nll = logistic_mixture_nll(images, params, backend=name)
    nll_ref = logistic_mixture_nll_ref(images, reference)
    nll_ref64 = logistic_mixture_nll_ref(images, reference64)
    assert_mixture_close(nll.detach(), nll_ref.detach(), nll_ref64.detach())
    for upstream in (torch.rand(3, dtype=torch.float64) + 0.5, torch.randn(3, dtype=torch.float64)):
        (grad,) = torch.autograd.grad(nll, params, upstream.to(nll.dtype), retain_graph=True)
        (want,) = torch.autograd.grad(nll_ref, reference, upstream.to(nll.dtype),
                                      retain_graph=True)
        (want64,) = torch.autograd.grad(nll_ref64, reference64, upstream, retain_graph=True)
        assert_mixture_close(grad, want, want64)


@needs_cpu
def test_gradcheck_through_the_training_path():
    """gradcheck's repeated backwards of one graph: the stash first, then recomputation."""
    _seed("gradcheck_train")
    images, params = make_inputs(2, 3, 2, 2, 3, 256, edges=0.3)
    params.requires_grad_()
    assert torch.autograd.gradcheck(lambda p: logistic_mixture_nll(images, p, backend="cpu"),
                                    (params,))


@pytest.mark.parametrize("name", BACKENDS)
def test_opcheck_and_fake(name):
    _seed("opcheck_with_grad")
    images, params = make_inputs(2, 3, 2, 3, 4, 256)
    grey, grey_params = make_inputs(1, 1, 5, 2, 5, 17)
    grey_dtype = torch.float32 if name == "triton" else torch.bfloat16  # the interpreter's maths
    for args in [(images, params.float(), 256), (images, params, 256),
                 (grey.int(), grey_params.to(grey_dtype), 17)]:
        torch.library.opcheck(OPS[name][0].default, args)


@needs_cpu
def test_no_gradient_wanted_takes_the_forward_op_alone():
    """Under no_grad, or for params that need no gradient, nothing is stashed."""
    _seed("no_grad")
    images, params = make_inputs(2, 3, 5, 8, 8, 256)
    params = params.float()
    fwd_bytes = peak_bytes(lambda: logistic_mixture_nll(images, params, backend="cpu"), "cpu")
    assert fwd_bytes < params.numel() * params.element_size() / 4


@needs_cpu
def test_peak_memory_is_one_params_sized_buffer():
    """Forward and backward together hold the gradient buffer, scaled in place, and little more."""
    _seed("memory")
    images, params = make_inputs(4, 3, 10, 16, 16, 256)
    params = params.float().requires_grad_()

    def step():
        torch.autograd.grad(logistic_mixture_nll(images, params, backend="cpu"), params,
                            torch.rand(4))

    size = params.numel() * params.element_size()
    assert size <= peak_bytes(step, "cpu") < 1.1 * size


@needs_cpu
def test_rejects_what_the_forward_rejects():
    images, params = make_inputs(1, 3, 2, 2, 2, 256)
    with pytest.raises(ValueError, match="levels in"):
        OPS["cpu"][0](images + 300, params.float(), 256)
    with pytest.raises(ValueError):
        OPS["cpu"][0](images, params.float()[:, :7], 256)
