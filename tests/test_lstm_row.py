"""The PixelRNN row recurrence lstm_rows: every fast backend against the reference, forward and
backward, plus gradcheck, opcheck, torch.compile, the one-row step and bad input."""
import zlib

import pytest
import torch

import genfast
from genfast.ops import lstm_row_step, lstm_row_step_ref, lstm_rows, lstm_rows_ref
from genfast.ops.lstm_row import _FORWARD_OPS, IMPLEMENTED
from conftest import LOW_PRECISION, assert_all_close, assert_close

# (batch, hidden, rows, length, k, pad_left): batch 1, one- and two-pixel rows, a single row,
# non-square, hidden sizes off multiples of 8 (and of a SIMD vector), kernels 1, 2, 3, 5 with
# every kind of padding (centred, causal pad_left = k - 1, none), rows longer than a vector.
CASES = [
    (2, 5, 3, 7, 3, 1),
    (1, 13, 4, 1, 2, 0),
    (3, 8, 5, 2, 3, 2),
    (2, 3, 1, 6, 5, 4),
    (1, 4, 6, 9, 1, 0),
    (2, 16, 4, 19, 5, 2),
    (4, 6, 2, 33, 2, 1),
    (1, 17, 3, 4, 3, 0),
]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def _seed(*key):
    torch.manual_seed(zlib.crc32(repr(key).encode()))


def _skip_unimplemented(name, device="cpu", dtype=torch.float32):
    # float16 / bfloat16 run on the Triton interpreter too: the kernels keep their maths in
    # float32 and widen tl.dot's operands there (kernels/lstm_row_step.py, DOT_IN_FP32).
    if name not in IMPLEMENTED:
        pytest.skip(f"lstm_rows has no {name} backend in this build")


def _inputs(case, device, states=True, scale=1.0):
    """float64 gates_in, weight, bias, h0, c0 (the states None unless asked for)."""
    b, d, r, length, k, _ = case
    f64 = dict(dtype=torch.float64, device=device)
    gates_in = scale * torch.randn(b, 4 * d, r, length, **f64)
    weight = torch.randn(4 * d, d, k, **f64) / (d * k) ** 0.5
    bias = 0.5 * torch.randn(4 * d, **f64)
    h0 = torch.randn(b, d, length, **f64).tanh() if states else None
    c0 = torch.randn(b, d, length, **f64) if states else None
    return gates_in, weight, bias, h0, c0


def _run(fn, inputs, grads, dtype, pad_left, **kwargs):
    """(h, c, dgates_in, dweight, dbias, dh0, dc0) of fn on the inputs cast to dtype."""
    leaves = [None if t is None else t.detach().to(dtype).requires_grad_() for t in inputs]
    h, c = fn(*leaves, pad_left=pad_left, **kwargs)
    wanted = [t for t in leaves if t is not None]
    got = torch.autograd.grad((h, c), wanted, (grads[0].to(h.dtype), grads[1].to(c.dtype)))
    it = iter(got)
    return [h.detach(), c.detach()] + [None if t is None else next(it) for t in leaves]


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("states", [True, False], ids=["states", "zero_states"])
def test_matches_reference(backend, case, dtype, states):
    name, device = backend
    _skip_unimplemented(name, device, dtype)
    _seed(case, str(dtype), states)
    inputs = _inputs(case, device, states)
    b, d, r, length, _, pad_left = case
    grads = [torch.randn(b, d, r, length, dtype=torch.float64, device=device) for _ in range(2)]
    fast = _run(lstm_rows, inputs, grads, dtype, pad_left, backend=name)
    ref = _run(lstm_rows_ref, inputs, grads, dtype, pad_left)
    # The float64 oracle sees the inputs rounded to dtype, as the low-precision run does.
    rounded = [None if t is None else t.to(dtype).double() for t in inputs]
    grads64 = [g.to(dtype).double() for g in grads]
    ref64 = _run(lstm_rows_ref, rounded, grads64, torch.float64, pad_left)
    assert fast[0].dtype == dtype
    assert fast[1].dtype == (torch.float32 if dtype in LOW_PRECISION else dtype)
    assert_all_close(fast, ref, ref64, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_saturated_gates(backend, dtype):
    """Pre-activations far into the tails: no overflow or NaN, the reference's values."""
    name, device = backend
    _skip_unimplemented(name, device, dtype)
    _seed("saturated", str(dtype))
    case = (2, 6, 3, 5, 3, 1)
    inputs = _inputs(case, device, scale=40.0)
    grads = [torch.randn(2, 6, 3, 5, dtype=torch.float64, device=device) for _ in range(2)]
    fast = _run(lstm_rows, inputs, grads, dtype, 1, backend=name)
    ref = _run(lstm_rows_ref, inputs, grads, dtype, 1)
    for got, want in zip(fast, ref):
        assert torch.isfinite(got).all()
        assert_close(got, want)


@pytest.mark.parametrize("loss", ["sum", "h_only", "c_only"])
def test_uniform_and_missing_output_gradients(backend, loss):
    """h.sum() gives an expanded gradient, an unused output none at all."""
    name, device = backend
    _skip_unimplemented(name, device)
    _seed("uniform", loss)
    gates_in, weight, bias, h0, c0 = _inputs((2, 5, 4, 6, 3, 1), device)
    results = []
    for fn, kw in ((lstm_rows, dict(backend=name)), (lstm_rows_ref, {})):
        leaves = [t.detach().clone().requires_grad_() for t in (gates_in, weight, bias, h0, c0)]
        h, c = fn(*leaves, **kw)
        value = {"sum": h.sum() + 2 * c.sum(), "h_only": (h * h).sum(), "c_only": c.sum()}[loss]
        results.append(torch.autograd.grad(value, leaves))
    for got, want in zip(*results):
        assert_close(got, want)


def _small_leaves(device, bias=True, states=True, k=3, length=5):
    _seed("small", bias, states, k, length)
    gates_in, weight, b, h0, c0 = _inputs((2, 3, 3, length, k, 0), device, states)
    leaves = [gates_in, weight, b if bias else None, h0, c0]
    return [None if t is None else t.requires_grad_() for t in leaves]


@pytest.mark.parametrize("bias,states,k,pad_left", [(True, True, 3, 1), (False, True, 2, 0),
                                                    (True, False, 2, 1), (True, True, 1, 0),
                                                    (False, False, 3, 2)])
def test_gradcheck(backend, bias, states, k, pad_left):
    name, device = backend
    _skip_unimplemented(name, device)
    leaves = _small_leaves(device, bias, states, k)
    inputs = [t for t in leaves if t is not None]

    def fn(*args):
        it = iter(args)
        full = [None if t is None else next(it) for t in leaves]
        return lstm_rows(*full, pad_left=pad_left, backend=name)

    # The Triton interpreter is slow: check a random projection of the Jacobian there.
    fast_mode = name == "triton" and device == "cpu"
    assert torch.autograd.gradcheck(fn, inputs, fast_mode=fast_mode)


def test_opcheck(backend):
    name, device = backend
    _skip_unimplemented(name, device)
    _seed("opcheck")
    gates_in, weight, bias, h0, c0 = _inputs((2, 4, 3, 5, 3, 1), device)
    args = [t.float().requires_grad_() for t in (gates_in, weight, bias, h0, c0)]
    op = _FORWARD_OPS[name]
    torch.library.opcheck(op, (*args, 1))
    torch.library.opcheck(op, (args[0], args[1], None, args[3], args[4], 0))
    h, c, gates = op(*[t.detach() for t in args], 1)
    backward = torch.ops.genfast.lstm_rows_triton_backward if name == "triton" \
        else torch.ops.genfast.lstm_rows_backward
    torch.library.opcheck(backward, (torch.randn_like(h), torch.randn_like(c), args[1].detach(),
                                     h, c, gates, args[3].detach(), args[4].detach(), 1))


def test_gates_output_is_not_differentiable(backend):
    name, device = backend
    _skip_unimplemented(name, device)
    gates_in, weight, bias, h0, c0 = _inputs((1, 2, 2, 3, 3, 1), device)
    gates_in.requires_grad_()
    _, _, gates = _FORWARD_OPS[name](gates_in, weight, bias, h0, c0, 1)
    assert not gates.requires_grad


@pytest.mark.slow
def test_compile_fullgraph(backend):
    name, device = backend
    _skip_unimplemented(name, device)
    if name == "triton" and device == "cpu":
        pytest.skip("torch.compile does not run Triton kernels on the CPU interpreter")
    _seed("compile")
    gates_in, weight, bias, h0, c0 = (t.float() for t in _inputs((2, 6, 4, 7, 3, 1), device))

    def loss(x, w, b, h_init, c_init, fn, **kw):
        # Some PyTorch around the op, as a layer would have it.
        h, c = fn(torch.tanh(x) * 2, w, b, h_init, c_init, **kw)
        return (h * h).sum() + c.mean()

    leaves = [t.clone().requires_grad_() for t in (gates_in, weight, bias, h0, c0)]
    torch._dynamo.reset()
    compiled = torch.compile(loss, fullgraph=True)
    value = compiled(*leaves, lstm_rows, backend=name)
    grads = torch.autograd.grad(value, leaves)
    ref_leaves = [t.clone().requires_grad_() for t in (gates_in, weight, bias, h0, c0)]
    value_ref = loss(*ref_leaves, lstm_rows_ref)
    grads_ref = torch.autograd.grad(value_ref, ref_leaves)
    assert_close(value.detach(), value_ref.detach())
    for got, want in zip(grads, grads_ref):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_row_steps_chain_into_rows(backend, dtype):
    """lstm_row_step is lstm_rows with R = 1, and stepping row by row (carrying h and the
    float32 c of low-precision runs) gives lstm_rows over all rows."""
    name, device = backend
    _skip_unimplemented(name, device, dtype)
    _seed("steps", str(dtype))
    gates_in, weight, bias, h0, c0 = (t.to(dtype) for t in _inputs((2, 5, 4, 6, 3, 1), device))
    h1, c1 = lstm_row_step(gates_in[:, :, 0], h0, c0, weight, bias, backend=name)
    h_rows, c_rows = lstm_rows(gates_in[:, :, :1], weight, bias, h0, c0, backend=name)
    assert h1.shape == h0.shape and c1.shape == c0.shape
    assert torch.equal(h1, h_rows[:, :, 0]) and torch.equal(c1, c_rows[:, :, 0])
    h_ref, c_ref = lstm_row_step_ref(gates_in[:, :, 0], h0, c0, weight, bias)
    assert h_ref.dtype == h1.dtype and c_ref.dtype == c1.dtype
    h_all, c_all = lstm_rows(gates_in, weight, bias, h0, c0, backend=name)
    h, c = h0, c0
    for r in range(gates_in.shape[2]):
        h, c = lstm_row_step(gates_in[:, :, r], h, c, weight, bias, backend=name)
        torch.testing.assert_close(h, h_all[:, :, r], rtol=0, atol=0)
        torch.testing.assert_close(c, c_all[:, :, r], rtol=0, atol=0)
    # Zero states by default.
    h_none, c_none = lstm_row_step(gates_in[:, :, 0], weight=weight, bias=bias, backend=name)
    h_zero, c_zero = lstm_row_step(gates_in[:, :, 0], torch.zeros_like(h0), torch.zeros_like(c0),
                                   weight, bias, backend=name)
    assert torch.equal(h_none, h_zero) and torch.equal(c_none, c_zero)


def test_non_contiguous_inputs(backend):
    name, device = backend
    _skip_unimplemented(name, device)
    _seed("strided")
    gates_in, weight, bias, h0, c0 = _inputs((2, 4, 5, 6, 3, 1), device)
    # The same values behind other strides: rows and positions swapped back, a strided weight.
    g_t = gates_in.transpose(2, 3).contiguous().transpose(2, 3)
    w_t = weight.transpose(0, 2).contiguous().transpose(0, 2)
    h0_t = h0.transpose(1, 2).contiguous().transpose(1, 2)
    fast = lstm_rows(g_t, w_t, bias, h0_t, c0, backend=name)
    ref = lstm_rows_ref(gates_in, weight, bias, h0, c0)
    for got, want in zip(fast, ref):
        assert_close(got, want)


def test_empty_shapes(backend):
    name, device = backend
    _skip_unimplemented(name, device)
    weight = torch.randn(8, 2, 3, device=device, requires_grad=True)
    for b, r, length in [(0, 3, 4), (2, 0, 4), (2, 3, 0)]:
        gates_in = torch.randn(b, 8, r, length, device=device, requires_grad=True)
        h0 = torch.randn(b, 2, length, device=device, requires_grad=True)
        h, c = lstm_rows(gates_in, weight, None, h0, None, backend=name)
        assert h.shape == c.shape == (b, 2, r, length)
        (h.sum() + c.sum()).backward()
        assert gates_in.grad.shape == gates_in.shape and not h0.grad.any()


def test_deterministic_and_independent_of_threads():
    if "cpu" not in IMPLEMENTED or not genfast.backends()["cpu"].available:
        pytest.skip("the cpu backend is not built")
    _seed("determinism")
    leaves = [t.float().requires_grad_() for t in _inputs((5, 8, 6, 11, 3, 1), "cpu")]
    grads = [torch.randn(5, 8, 6, 11) for _ in range(2)]

    def run():
        h, c = lstm_rows(*leaves, backend="cpu")
        return [h, c, *torch.autograd.grad((h, c), leaves, grads)]

    threads = torch.get_num_threads()
    first = run()
    try:
        torch.set_num_threads(1)
        single = run()
        torch.set_num_threads(max(3, threads))
        many = run()
    finally:
        torch.set_num_threads(threads)
    for a, b, c in zip(first, single, many):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_bad_input_is_a_clear_error():
    gates_in, weight = torch.randn(2, 8, 3, 5), torch.randn(8, 2, 3)
    h0 = torch.zeros(2, 2, 5)
    with pytest.raises(ValueError, match="batch, 4 \\* hidden, rows, length"):
        lstm_rows(gates_in[0], weight)
    with pytest.raises(ValueError, match="batch, 4 \\* hidden, rows, length"):
        lstm_rows(torch.randn(2, 7, 3, 5), weight)
    with pytest.raises(ValueError, match="weight"):
        lstm_rows(gates_in, weight[0])
    with pytest.raises(ValueError, match="weight must have shape"):
        lstm_rows(gates_in, torch.randn(8, 3, 3))
    with pytest.raises(TypeError, match="float16, bfloat16"):
        lstm_rows(gates_in.long(), weight.long())
    with pytest.raises(TypeError, match="weight must have dtype"):
        lstm_rows(gates_in, weight.double())
    with pytest.raises(ValueError, match="bias must have shape"):
        lstm_rows(gates_in, weight, torch.randn(4))
    with pytest.raises(ValueError, match="h0 must have shape"):
        lstm_rows(gates_in, weight, None, torch.zeros(2, 2, 4))
    with pytest.raises(TypeError, match="c0 must have dtype"):
        lstm_rows(gates_in, weight, None, h0, h0.double())
    with pytest.raises(ValueError, match="pad_left"):
        lstm_rows(gates_in, weight, pad_left=3)
    with pytest.raises(ValueError, match="pad_left"):
        lstm_rows(gates_in, weight, pad_left=-1)
    with pytest.raises(ValueError, match="no taps"):
        lstm_rows(gates_in, torch.randn(8, 2, 0))
    with pytest.raises(ValueError, match="no 'nope' backend|unknown backend"):
        lstm_rows(gates_in, weight, backend="nope")
    with pytest.raises(ValueError, match="gates_in_row"):
        lstm_row_step(gates_in, h0, h0, weight)
    with pytest.raises(TypeError, match="weight"):
        lstm_row_step(gates_in[:, :, 0], h0, h0)
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="is on"):
            lstm_rows(gates_in.cuda(), weight)
