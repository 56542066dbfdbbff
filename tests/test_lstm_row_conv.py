"""lstm_rows_conv, lstm_rows with its input-to-state convolution fused in: the cpu kernel against
the reference (conv_rows then the Python loop), forward and backward, plus gradcheck, opcheck,
torch.compile, thread-count independence, the other backends' composition and bad input."""
import zlib

import pytest
import torch

from genfast.ops import lstm_row_conv as fused
from genfast.ops.lstm_row_conv import lstm_rows_conv, lstm_rows_conv_ref
from conftest import assert_all_close, assert_close

needs_kernel = pytest.mark.skipif(not fused.HAS_CPU_KERNEL,
                                  reason="the extension has no lstm_rows_conv cpu kernel")

# (batch, in_channels, hidden, rows, length, k_in, in_pad_left, k, pad_left): batch 1, one- and
# two-pixel rows, a single row, non-square, channel counts off multiples of 8, the Row LSTM's
# mask-B (2 taps, in_pad_left 1) and mask-A (1 tap left of the pixel, in_pad_left = k_in) input
# kernels, the Diagonal BiLSTM's 1 x 1 one (with k = 2, pad_left = 1), wide kernels, and an odd row
# longer than two SIMD vectors.
CASES = [
    (2, 5, 3, 4, 7, 2, 1, 3, 1),
    (1, 3, 5, 4, 5, 1, 1, 3, 1),
    (3, 4, 6, 5, 20, 1, 0, 2, 1),
    (1, 7, 9, 3, 1, 2, 1, 3, 1),
    (2, 2, 4, 1, 2, 3, 2, 3, 1),
    (4, 6, 8, 6, 28, 2, 1, 3, 1),
    (2, 9, 4, 3, 19, 5, 2, 5, 4),
    (1, 4, 3, 2, 9, 3, 3, 2, 0),
    (2, 3, 5, 3, 37, 2, 1, 3, 1),
]
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def _seed(*key):
    torch.manual_seed(zlib.crc32(repr(key).encode()))


def _inputs(case, states=True):
    """float64 x, in_weight, weight, bias, h0, c0 (the states None unless asked for)."""
    b, cin, d, r, length, kin, _, k, _ = case
    f64 = dict(dtype=torch.float64)
    x = torch.randn(b, cin, r, length, **f64)
    in_weight = torch.randn(4 * d, cin, kin, **f64) / (cin * kin) ** 0.5
    weight = torch.randn(4 * d, d, k, **f64) / (d * k) ** 0.5
    bias = 0.5 * torch.randn(4 * d, **f64)
    h0 = torch.randn(b, d, length, **f64).tanh() if states else None
    c0 = torch.randn(b, d, length, **f64) if states else None
    return x, in_weight, weight, bias, h0, c0


def _run(fn, inputs, grads, dtype, pads, **kwargs):
    """(h, c, then the gradient of every input) of fn on the inputs cast to dtype."""
    leaves = [None if t is None else t.detach().to(dtype).requires_grad_() for t in inputs]
    h, c = fn(*leaves, *pads, **kwargs)
    wanted = [t for t in leaves if t is not None]
    got = torch.autograd.grad((h, c), wanted, (grads[0].to(h.dtype), grads[1].to(c.dtype)))
    it = iter(got)
    return [h.detach(), c.detach()] + [None if t is None else next(it) for t in leaves]


def _check_against_reference(inputs, grads, dtype, geometry):
    """The cpu kernel and the reference in dtype (and the reference in float64, for the
    low-precision rule) on the same inputs and output gradients."""
    fast = _run(lstm_rows_conv, inputs, grads, dtype, geometry, backend="cpu")
    ref = _run(lstm_rows_conv_ref, inputs, grads, dtype, geometry)
    ref64 = _run(lstm_rows_conv_ref, [None if t is None else t.to(dtype).double() for t in inputs],
                 grads, torch.float64, geometry)
    assert_all_close(fast, ref, ref64, dtype)


@needs_kernel
@pytest.mark.parametrize("states", [True, False], ids=["states", "zero_states"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_reference(case, dtype, states):
    _seed(case, str(dtype), states)
    inputs = _inputs(case, states)
    b, _, d, r, length, _, in_pad_left, _, pad_left = case
    grads = [torch.randn(b, d, r, length, dtype=torch.float64) for _ in range(2)]
    _check_against_reference(inputs, grads, dtype, (in_pad_left, pad_left))


@needs_kernel
@pytest.mark.parametrize("skewed", [False, True], ids=["rows", "skewed"])
def test_forward_bits_do_not_depend_on_grad_mode(skewed):
    """The forward under no_grad, with no input requiring grad, and recorded for a backward
    gives the same bits: the cached samplers reproduce inference's, training reads the same."""
    _seed("grad mode", skewed)
    if skewed:
        inputs = [t.float() for t in _skewed_inputs(SKEWED[5])] + [None, None]
        geometry = (0, 1, SKEWED[5][4])
    else:
        inputs = [t.float() for t in _inputs(CASES[5])]
        geometry = (CASES[5][6], CASES[5][8])

    def leaves():
        return [None if t is None else t.clone().requires_grad_() for t in inputs]

    with torch.no_grad():
        no_grad = lstm_rows_conv(*leaves(), *geometry, backend="cpu")
    plain = lstm_rows_conv(*inputs, *geometry, backend="cpu")
    recorded = lstm_rows_conv(*leaves(), *geometry, backend="cpu")
    for other in (plain, recorded):
        for got, want in zip(other, no_grad):
            assert torch.equal(got, want)


@needs_kernel
def test_backward_keeps_non_finite_gradients_non_finite():
    """An infinite or NaN output gradient reaches dL/dx and dL/dh0 as non-finite values, never
    as finite numbers."""
    case = (2, 4, 8, 3, 6, 2, 1, 3, 1)
    _seed("non-finite")
    inputs = [t.float() for t in _inputs(case)]
    for bad in (float("inf"), float("nan")):
        grads = [torch.randn(2, 8, 3, 6), torch.zeros(2, 8, 3, 6)]
        grads[0][1, 3, 2, 4] = bad
        got = _run(lstm_rows_conv, inputs, grads, torch.float32, (1, 1), backend="cpu")
        dx, dh0 = got[2], got[6]
        assert not dx[1].isfinite().all() and dx[0].isfinite().all()
        assert not dh0[1].isfinite().all() and dh0[0].isfinite().all()


@needs_kernel
def test_backward_with_subnormal_gradients():
    """Output gradients of the odd hidden channels scaled into float32's subnormal range: their
    gate gradients, summed with normal ones in the gathers and the weight gradients, stay
    finite and match the reference."""
    case = (2, 4, 8, 3, 6, 2, 1, 3, 1)
    _seed("subnormal")
    inputs = _inputs(case)
    grads = [torch.randn(2, 8, 3, 6, dtype=torch.float64) for _ in range(2)]
    for g in grads:
        g[:, 1::2] *= 1e-39
    fast = _run(lstm_rows_conv, inputs, grads, torch.float32, (1, 1), backend="cpu")
    ref = _run(lstm_rows_conv_ref, inputs, grads, torch.float32, (1, 1))
    for got, want in zip(fast, ref):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@needs_kernel
@pytest.mark.parametrize("bias,states,case", [
    (True, True, (2, 3, 2, 3, 5, 2, 1, 3, 1)),
    (False, False, (1, 2, 3, 4, 4, 1, 0, 2, 1)),
    (True, False, (2, 2, 2, 2, 3, 1, 1, 3, 1)),
])
def test_gradcheck(bias, states, case):
    _seed("gradcheck", bias, states, case)
    x, in_weight, weight, b, h0, c0 = _inputs(case, states)
    leaves = [x, in_weight, weight, b if bias else None, h0, c0]
    leaves = [None if t is None else t.requires_grad_() for t in leaves]
    inputs = [t for t in leaves if t is not None]

    def fn(*args):
        it = iter(args)
        full = [None if t is None else next(it) for t in leaves]
        return lstm_rows_conv(*full, case[6], case[8], backend="cpu")

    assert torch.autograd.gradcheck(fn, inputs)


@needs_kernel
def test_opcheck():
    _seed("opcheck")
    x, in_weight, weight, bias, h0, c0 = (t.float() for t in _inputs((2, 3, 4, 3, 5, 2, 1, 3, 1)))
    args = [t.requires_grad_() for t in (x, in_weight, weight, bias, h0, c0)]
    op = torch.ops.genfast.lstm_rows_conv
    torch.library.opcheck(op, (*args, 1, 1))
    torch.library.opcheck(op, (args[0], args[1], args[2], None, args[4], args[5], 2, 0))
    detached = [t.detach() for t in args]
    h, c, gates = op(*detached, 1, 1)
    assert not gates.requires_grad
    torch.library.opcheck(torch.ops.genfast.lstm_rows_conv_backward,
                          (torch.randn_like(h), torch.randn_like(c), detached[0], detached[1],
                           detached[2], h, c, gates, detached[4], detached[5], 1, 1))


@needs_kernel
@pytest.mark.slow
def test_compile_fullgraph():
    _seed("compile")
    x, in_weight, weight, bias, h0, c0 = (t.float() for t in _inputs((2, 3, 5, 4, 7, 2, 1, 3, 1)))

    def loss(x, wi, w, b, h_init, c_init, fn, **kw):
        h, c = fn(torch.tanh(x) * 2, wi, w, b, h_init, c_init, 1, 1, **kw)
        return (h * h).sum() + c.mean()

    leaves = [t.clone().requires_grad_() for t in (x, in_weight, weight, bias, h0, c0)]
    torch._dynamo.reset()
    value = torch.compile(loss, fullgraph=True)(*leaves, lstm_rows_conv, backend="cpu")
    grads = torch.autograd.grad(value, leaves)
    ref_leaves = [t.clone().requires_grad_() for t in (x, in_weight, weight, bias, h0, c0)]
    value_ref = loss(*ref_leaves, lstm_rows_conv_ref)
    grads_ref = torch.autograd.grad(value_ref, ref_leaves)
    assert_close(value.detach(), value_ref.detach())
    for got, want in zip(grads, grads_ref):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@needs_kernel
@pytest.mark.parametrize("skewed", [False, True], ids=["rows", "skewed"])
def test_same_bits_on_any_thread_count(skewed):
    """Batch chunks and the weight-gradient reduction never depend on the thread count."""
    _seed("threads", skewed)
    if skewed:
        inputs = [t.float() for t in _skewed_inputs((7, 6, 8, 9, 6))] + [None, None]
        geometry, shape = (0, 1, 6), (7, 8, 14, 9)
    else:
        inputs = [t.float() for t in _inputs((7, 6, 8, 5, 13, 2, 1, 3, 1))]
        geometry, shape = (1, 1), (7, 8, 5, 13)
    grads = [torch.randn(shape) for _ in range(2)]
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            results.append(_run(lstm_rows_conv, inputs, grads, torch.float32, geometry,
                                backend="cpu"))
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for got, want in zip(other, results[0]):
            assert (got is None and want is None) or torch.equal(got, want)


@needs_kernel
@pytest.mark.parametrize("batch,hidden,length", [(16, 64, 28), (16, 64, 27), (7, 5, 9)])
def test_each_image_gets_the_bits_it_gets_alone(batch, hidden, length):
    """The kernel interleaves the images of a batch chunk (chunk sizes set by the shape: 4 images
    of a 28-wide row fill whole SIMD vectors; float32 chunks of 4 take their own cell maths, which
    read and write the tensors through transposes), yet every value of an image sums the same
    terms in the same order as when the image runs alone: h, c and the gradients of x, h0 and c0
    match bit for bit."""
    case = (batch, 8, hidden, 2, length, 2, 1, 3, 1)
    _seed("alone", case)
    inputs = [t.float() for t in _inputs(case)]
    grads = [torch.randn(batch, hidden, 2, length) for _ in range(2)]
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            whole = _run(lstm_rows_conv, inputs, grads, torch.float32, (1, 1), backend="cpu")
            for b in (0, batch // 2, batch - 1):
                pick = [t[b:b + 1] if t.shape[0] == batch else t for t in inputs]
                alone = _run(lstm_rows_conv, pick, [g[b:b + 1] for g in grads], torch.float32,
                             (1, 1), backend="cpu")
                # h, c, dL/dx, dL/dh0, dL/dc0 (not the weights' and bias's: sums over images)
                for i in (0, 1, 2, 6, 7):
                    assert torch.equal(alone[i], whole[i][b:b + 1])
    finally:
        torch.set_num_threads(threads)


def test_reference_backend_composes_the_two_ops():
    _seed("reference")
    inputs = _inputs((2, 3, 4, 3, 6, 2, 1, 3, 1))
    h, c = lstm_rows_conv(*inputs, 1, 1, backend="reference")
    h_ref, c_ref = lstm_rows_conv_ref(*inputs, 1, 1)
    assert torch.equal(h, h_ref) and torch.equal(c, c_ref)


@pytest.mark.parametrize("change,error,match", [
    (lambda a: a.update(x=a["x"][0]), ValueError, "x must be"),
    (lambda a: a.update(x=a["x"].int()), TypeError, "x must be float"),
    (lambda a: a.update(in_weight=a["in_weight"][:, :2]), ValueError, "in_weight must be"),
    (lambda a: a.update(in_weight=a["in_weight"].double()), TypeError, "in_weight must match"),
    (lambda a: a.update(in_pad_left=3), ValueError, "in_pad_left"),
    (lambda a: a.update(in_pad_left=-1), ValueError, "in_pad_left"),
    (lambda a: a.update(weight=a["weight"][0]), ValueError, "weight must be"),
    (lambda a: a.update(weight=a["weight"][:, :3]), ValueError, "weight must have shape"),
    (lambda a: a.update(h0=a["h0"][:1]), ValueError, "h0 must have shape"),
    (lambda a: a.update(pad_left=3), ValueError, "pad_left"),
])
@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_bad_input(change, error, match, backend):
    if backend == "cpu" and not fused.HAS_CPU_KERNEL:
        pytest.skip("the extension has no lstm_rows_conv cpu kernel")
    x, in_weight, weight, bias, h0, c0 = (t.float() for t in _inputs((2, 3, 4, 3, 5, 2, 1, 3, 1)))
    args = dict(x=x, in_weight=in_weight, weight=weight, bias=bias, h0=h0, c0=c0, in_pad_left=1,
                pad_left=1)
    change(args)
    with pytest.raises(error, match=match):
        lstm_rows_conv(**args, backend=backend)


@needs_kernel
def test_empty_batch():
    x, in_weight, weight, bias, _, _ = (t.float() for t in _inputs((2, 3, 4, 3, 5, 2, 1, 3, 1)))
    x = x[:0].requires_grad_()
    h, c = lstm_rows_conv(x, in_weight, weight, bias, in_pad_left=1, pad_left=1, backend="cpu")
    assert h.shape == (0, 4, 3, 5) and c.shape == (0, 4, 3, 5)
    (grad,) = torch.autograd.grad(h.sum(), x)
    assert grad.shape == x.shape


@needs_kernel
@pytest.mark.parametrize("layer", ["row", "diagonal"])
def test_layers_run_the_fused_op_on_the_cpu_backend(layer):
    """RowLSTM and DiagonalBiLSTM take the fused kernel (their tests hold them to the reference)."""
    from genfast.nn import DiagonalBiLSTM, RowLSTM

    module = RowLSTM(3, 4, backend="cpu") if layer == "row" else DiagonalBiLSTM(3, 4,
                                                                                backend="cpu")
    x = torch.randn(2, 3, 5, 6, requires_grad=True)
    with torch.profiler.profile() as profile:
        module(x).sum().backward()
    names = {event.name for event in profile.events()}
    assert {"genfast::lstm_rows_conv", "genfast::lstm_rows_conv_backward"} <= names
    assert "genfast::lstm_rows" not in names


# (batch, in_channels, hidden, height, width) of skewed maps: square, wide, tall, one-row and
# one-column images, channel counts off multiples of 8.
SKEWED = [(2, 3, 4, 5, 5), (1, 2, 3, 4, 7), (3, 5, 6, 7, 3), (2, 3, 5, 1, 4), (2, 3, 5, 6, 1),
          (4, 9, 8, 12, 12), (1, 4, 3, 20, 9)]


def _skewed_inputs(case):
    b, cin, d, height, width = case
    rows = height + width - 1
    x = torch.randn(b, cin, rows, height, dtype=torch.float64)  # random at the padding too
    in_weight = torch.randn(4 * d, cin, 1, dtype=torch.float64) / cin ** 0.5
    weight = torch.randn(4 * d, d, 2, dtype=torch.float64) / (2 * d) ** 0.5
    bias = 0.5 * torch.randn(4 * d, dtype=torch.float64)
    return x, in_weight, weight, bias


@needs_kernel
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", SKEWED, ids=str)
def test_skewed_map_matches_reference(case, dtype):
    """skew_width: the kernel computes a row's pixels and one padding position; the reference
    computes the whole skewed map (x zeroed at the padding) and masks h and c the same way."""
    _seed("skewed", case, str(dtype))
    x, in_weight, weight, bias = _skewed_inputs(case)
    b, _, d, height, width = case
    grads = [torch.randn(b, d, height + width - 1, height, dtype=torch.float64)
             for _ in range(2)]
    inputs = (x, in_weight, weight, bias, None, None)
    _check_against_reference(inputs, grads, dtype, (0, 1, width))


@needs_kernel
def test_skewed_map_gradcheck_and_opcheck():
    _seed("skewed gradcheck")
    x, in_weight, weight, bias = (t.requires_grad_() for t in _skewed_inputs((2, 3, 2, 4, 3)))
    assert torch.autograd.gradcheck(
        lambda *args: lstm_rows_conv(*args, None, None, 0, 1, 3, backend="cpu"),
        (x, in_weight, weight, bias))
    args = [t.detach().float().requires_grad_() for t in (x, in_weight, weight, bias)]
    zeros = torch.zeros(2, 2, 4)
    torch.library.opcheck(torch.ops.genfast.lstm_rows_conv, (*args, zeros, zeros, 0, 1, 3))


@needs_kernel
def test_skewed_map_is_the_diagonal_lstm_of_the_full_map():
    """Every pixel of the skewed map (what the Diagonal BiLSTM reads) is what lstm_rows gives on
    the whole map, and the masked positions are zero."""
    _seed("skewed full")
    x, in_weight, weight, bias = (t.float() for t in _skewed_inputs((3, 4, 5, 6, 8)))
    live, kept = fused.skewed_extent(x.shape[2], x.shape[3], 8)
    x = x * live
    h, c = lstm_rows_conv(x, in_weight, weight, bias, None, None, 0, 1, 8, backend="cpu")
    h_full, c_full = lstm_rows_conv(x, in_weight, weight, bias, None, None, 0, 1, backend="cpu")
    torch.testing.assert_close(h[..., live], h_full[..., live], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(c[..., kept], c_full[..., kept], rtol=1e-5, atol=1e-6)
    assert not h[..., ~kept].any() and not c[..., ~kept].any()


@pytest.mark.parametrize("change,match", [
    (dict(skew_width=-1), "skew_width"),
    (dict(skew_width=4), "rows"),
    (dict(pad_left=0), "Diagonal"),
    (dict(h0=True), "zero states"),
])
def test_skewed_map_bad_input(change, match):
    x, in_weight, weight, bias = (t.float() for t in _skewed_inputs((2, 3, 4, 5, 5)))
    args = dict(x=x, in_weight=in_weight, weight=weight, bias=bias, h0=None, c0=None,
                in_pad_left=0, pad_left=1, skew_width=5)
    args.update(change)
    if args["h0"] is True:
        args["h0"] = torch.zeros(2, 4, 5)
    with pytest.raises(ValueError, match=match):
        lstm_rows_conv(**args, backend="cpu")
