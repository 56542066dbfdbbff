"""PixelCNN++'s discretized logistic mixture: every fast backend's NLL and gradient against the
reference (shapes, dtypes, edge bins, the tiny-probability branch), the three mandatory checks,
bad input, and the sampler (the same images on every backend for a seed, and its statistics)."""
import math
import zlib

import pytest
import torch

import genfast
from conftest import LOW_PRECISION, assert_close
from genfast.ops import logistic_mixture as lm
from genfast.ops.logistic_mixture import (logistic_mixture_nll, logistic_mixture_nll_ref,
                                          logistic_mixture_sample, logistic_mixture_sample_ref,
                                          params_per_mixture)

# (batch, channels, mixtures, height, width, levels): batch 1, grey and RGB, 1/5/10 components,
# odd sizes, images of one pixel and of more than one 64-pixel CPU tile, 2, 17 and 256 levels.
CASES = [
    (1, 1, 1, 1, 1, 256),
    (2, 3, 5, 5, 7, 256),
    (1, 3, 10, 3, 11, 17),
    (3, 1, 5, 4, 4, 2),
    (2, 3, 10, 9, 9, 256),
    (1, 3, 1, 13, 11, 256),
    (2, 1, 10, 1, 17, 17),
    (1, 3, 5, 2, 3, 2),
]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def _seed(*key):
    torch.manual_seed(zlib.crc32(repr(key).encode()))


def _skip_low_precision_on_interpreter(name, device, dtype):
    if name == "triton" and device == "cpu" and dtype in LOW_PRECISION:
        pytest.skip("the Triton CPU interpreter has no float16/bfloat16 maths")


def make_inputs(batch, channels, mixtures, height, width, levels, device="cpu", edges=0.2):
    """Random images (a fraction ``edges`` of the values at 0 or L - 1) and float64 params
    whose components sit near the data with scales of a few levels, as a trained network's."""
    images = torch.randint(0, levels, (batch, channels, height, width), device=device)
    at_edge = torch.rand(images.shape, device=device) < edges
    images = torch.where(at_edge, (levels - 1) * torch.randint_like(images, 0, 2), images)
    p = params_per_mixture(channels)
    params = torch.randn(batch, p * mixtures, height, width, dtype=torch.float64, device=device)
    m, cm = mixtures, channels * mixtures
    params[:, m + cm:m + 2 * cm] = params[:, m + cm:m + 2 * cm] * 0.7 - 2.5  # log scales
    params[:, m:m + cm] *= 0.6                                                # means
    return images, params


def tail_params(images, mixtures, levels, shift=0.4):
    """Params whose every component sits ``shift`` away from each pixel's value with the
    smallest scale: the middle bins fall in the far tails (the tiny-probability branch). Some
    log scales lie below the clamp at -7, whose gradient must then be zero."""
    batch, channels, height, width = images.shape
    x = images.double() * (2.0 / (levels - 1)) - 1.0
    params = torch.randn(batch, params_per_mixture(channels) * mixtures, height, width,
                         dtype=torch.float64)
    m, cm = mixtures, channels * mixtures
    sign = torch.where(torch.rand(batch, cm, height, width) < 0.5, -1.0, 1.0).double()
    params[:, m:m + cm] = x.repeat_interleave(mixtures, dim=1) + shift * sign
    params[:, m + cm:m + 2 * cm] = -6.9 + 0.3 * torch.randn(batch, cm, height, width)
    params[:, m + 2 * cm:] = 0.0  # no coupling: the shift stays as given
    return params


def tiny_branch_fraction(images, params, levels):
    """The fraction of middle-bin (channel, component) terms below the tiny probability."""
    channels = images.shape[1]
    _, means, log_scales, _ = lm.split_params(params.double(), channels)
    x = (images.double() * (2.0 / (levels - 1)) - 1.0).unsqueeze(2)
    h = 1.0 / (levels - 1)
    inv = torch.exp(-log_scales)
    delta = torch.sigmoid(inv * (x - means + h)) - torch.sigmoid(inv * (x - means - h))
    level = images.unsqueeze(2).expand_as(delta)
    middle = (level > 0) & (level < levels - 1)
    return ((delta < lm.TINY_BIN_PROBABILITY) & middle).sum().item() / middle.sum().item()


def _run(fn, images, params64, dtype, grad64, **kwargs):
    params = params64.detach().to(dtype).requires_grad_()
    nll = fn(images, params, **kwargs)
    (grad,) = torch.autograd.grad(nll, params, grad64.to(nll.dtype))
    return nll.detach(), grad


def check_against_reference(name, images, params64, dtype, levels):
    """The backend's NLL and dL/dparams against the reference run in dtype and in float64."""
    grad64 = torch.rand(images.shape[0], dtype=torch.float64, device=params64.device) + 0.5
    fast = _run(logistic_mixture_nll, images, params64, dtype, grad64, levels=levels,
                backend=name)
    ref = _run(logistic_mixture_nll_ref, images, params64, dtype, grad64, levels=levels)
    ref64 = _run(logistic_mixture_nll_ref, images, params64.to(dtype).double(), torch.float64,
                 grad64, levels=levels)
    for got, want, want64 in zip(fast, ref, ref64):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert torch.isfinite(got).all()
        assert_mixture_close(got, want, want64)
    return fast


def assert_mixture_close(got, want, want64):
    """conftest.assert_close, except in float64: there the reference's F(plus) - F(minus)
    cancels (relative error up to 1e-16 / 1e-5 at the tiny-branch threshold) where the kernels
    take the difference from the logistic's small side, so they agree to about 1e-9."""
    if got.dtype == torch.float64:
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    else:
        assert_close(got, want, want64)


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_matches_reference(backend, case, dtype):
    name, device = backend
    _skip_low_precision_on_interpreter(name, device, dtype)
    _seed("match", case, str(dtype))
    images, params = make_inputs(*case, device=device)
    check_against_reference(name, images, params, dtype, case[-1])


@pytest.mark.parametrize("levels", [17, 256])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_tails_and_edge_bins(backend, levels, channels, dtype):
    """Components far from the data: the tiny-probability branch for middle bins, saturated
    sigmoids for the edge bins 0 and L - 1, and log scales below the clamp."""
    name, device = backend
    _seed("tails", levels, channels, str(dtype))
    images, _ = make_inputs(2, channels, 3, 5, 6, levels, edges=0.3)
    params = tail_params(images, 3, levels)
    assert tiny_branch_fraction(images, params, levels) > 0.9
    assert (images == 0).any() and (images == levels - 1).any()
    images, params = images.to(device), params.to(device)
    _, grad = check_against_reference(name, images, params, dtype, levels)
    clamped = params.clone()
    clamped[:, 3 + 3 * channels:3 + 6 * channels] = -8.0  # every log scale below the clamp
    _, grad = check_against_reference(name, images, clamped, dtype, levels)
    assert (grad[:, 3 + 3 * channels:3 + 6 * channels] == 0).all()


def test_bins_sum_to_one(backend):
    """Over all L^C images of one pixel the likelihoods sum to 1 (both edge bins included;
    where the tiny branch's density stands in for a bin, to about 1e-7)."""
    name, device = backend
    _seed("sum_to_one")
    levels, channels = 5, 3
    grid = torch.cartesian_prod(*[torch.arange(levels)] * channels)  # [L^3, 3]
    images = grid.view(-1, channels, 1, 1).to(device)
    one = torch.randn(1, params_per_mixture(channels) * 4, 1, 1, dtype=torch.float64)
    params = one.expand(images.shape[0], -1, -1, -1).contiguous().to(device)
    total = torch.exp(-logistic_mixture_nll(images, params, levels, backend=name)).sum().item()
    want = torch.exp(-logistic_mixture_nll_ref(images, params, levels)).sum().item()
    assert abs(total - want) < 1e-12 and abs(total - 1.0) < 1e-6


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_reductions(backend, reduction):
    name, device = backend
    _seed("reduction", reduction)
    images, params = make_inputs(3, 3, 2, 4, 5, 256, device=device)
    nll = logistic_mixture_nll(images, params, reduction=reduction, backend=name)
    per_image = logistic_mixture_nll_ref(images, params)
    want = {"none": per_image, "sum": per_image.sum(), "mean": per_image.mean()}[reduction]
    torch.testing.assert_close(nll, want)


def test_non_contiguous_and_integer_dtypes(backend):
    name, device = backend
    _seed("strided")
    images, params = make_inputs(2, 3, 2, 6, 8, 256, device=device)
    strided = params.float()[:, :, :, ::2]
    for imgs in (images[:, :, :, ::2], images[:, :, :, ::2].to(torch.uint8),
                 images[:, :, :, ::2].int()):
        torch.testing.assert_close(logistic_mixture_nll(imgs, strided, backend=name),
                                   logistic_mixture_nll_ref(imgs, strided), rtol=1e-5, atol=1e-3)


def test_empty_batch_and_image(backend):
    name, device = backend
    for b, h, w in [(0, 3, 3), (2, 0, 4)]:
        images = torch.zeros(b, 3, h, w, dtype=torch.long, device=device)
        params = torch.randn(b, 20, h, w, device=device, requires_grad=True)
        nll = logistic_mixture_nll(images, params, backend=name)
        assert nll.shape == (b,) and (nll == 0).all()
        nll.sum().backward()
        assert params.grad.shape == params.shape


def test_gradcheck_float64(backend):
    name, device = backend
    op = lm._FORWARD_OPS[name]
    _seed("gradcheck")
    for case in [(2, 3, 2, 2, 3, 256), (1, 1, 3, 3, 2, 2), (1, 3, 1, 1, 2, 17)]:
        images, params = make_inputs(*case, device=device, edges=0.3)
        params.requires_grad_()
        assert torch.autograd.gradcheck(lambda p: op(images, p, case[-1]), (params,))
    images, _ = make_inputs(1, 3, 2, 2, 3, 17, edges=0.0)
    params = tail_params(images, 2, 17, shift=0.3).to(device).requires_grad_()
    assert torch.autograd.gradcheck(lambda p: op(images.to(device), p, 17), (params,))


def test_opcheck(backend):
    name, device = backend
    op = lm._FORWARD_OPS[name]
    _seed("opcheck")
    images, params = make_inputs(2, 3, 2, 3, 4, 256, device=device)
    grey, grey_params = make_inputs(1, 1, 5, 2, 5, 17, device=device)
    for args in [(images, params.float().requires_grad_(), 256),
                 (images, params.requires_grad_(), 256),
                 (grey.int(), grey_params.float().requires_grad_(), 17)]:
        torch.library.opcheck(op, args)


def test_torch_compile_fullgraph(backend):
    name, device = backend
    _seed("compile")
    images, params = make_inputs(2, 3, 4, 5, 6, 256, device=device)
    head = torch.nn.Conv2d(8, params.shape[1], 1).to(device)
    features = torch.randn(2, 8, 5, 6, device=device)

    def loss(nll_fn):
        return nll_fn(images, head(features)).sum() / images.numel()

    torch._dynamo.reset()
    compiled = torch.compile(loss, fullgraph=True)
    value = compiled(lambda i, p: logistic_mixture_nll(i, p, backend=name))
    grads = torch.autograd.grad(value, list(head.parameters()))
    value_ref = loss(logistic_mixture_nll_ref)
    grads_ref = torch.autograd.grad(value_ref, list(head.parameters()))
    torch.testing.assert_close(value, value_ref, rtol=1e-5, atol=1e-5)
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-5)


class TestBadInput:
    def _args(self):
        return make_inputs(2, 3, 2, 3, 4, 256)

    @pytest.mark.parametrize("change,error,match", [
        (lambda i, p: (i.float(), p), TypeError, "integer levels"),
        (lambda i, p: (i, p.long()), TypeError, "params must be float16"),
        (lambda i, p: (i, p[:, :-1]), ValueError, r"M \* 10 channels"),
        (lambda i, p: (i[:, :2], p), ValueError, r"M \* 6 channels"),
        (lambda i, p: (i, p[:, :, :2]), ValueError, "must agree"),
        (lambda i, p: (i[0], p), ValueError, r"\[B, C, H, W\]"),
        (lambda i, p: (torch.zeros(2, 5, 3, 4, dtype=torch.long), p), ValueError, "1 to 4"),
        (lambda i, p: (i + 256, p), ValueError, r"levels in \[0, 256\)"),
        (lambda i, p: (i - 1, p), ValueError, r"levels in \[0, 256\)"),
        (lambda i, p: (i.tolist(), p), TypeError, "must be a torch.Tensor"),
    ])
    def test_clear_errors(self, backend, change, error, match):
        images, params = change(*self._args())
        with pytest.raises(error, match=match):
            logistic_mixture_nll(images, params, backend=backend[0])

    @pytest.mark.parametrize("levels,reduction,match", [
        (1, "none", "levels must be"), (256.0, "none", "levels must be"),
        (256, "batchmean", "reduction must be"),
    ])
    def test_bad_levels_and_reduction(self, backend, levels, reduction, match):
        with pytest.raises(ValueError, match=match):
            logistic_mixture_nll(*self._args(), levels, reduction, backend=backend[0])

    def test_op_checks_its_arguments(self, backend):
        """The ops called directly (as torch.compile would) still refuse bad input."""
        name, device = backend
        if name == "triton":
            pytest.skip("the Triton op trusts the public function's checks")
        op = lm._FORWARD_OPS[name]
        images, params = self._args()
        with pytest.raises(ValueError, match="channels"):
            op(images, params[:, :-1], 256)
        with pytest.raises(ValueError, match="levels in"):
            op(images + 300, params, 256)


# ----------------------------------------------------------------------------- the sampler

SAMPLE_BACKENDS = [pytest.param("reference", id="reference"),
                   pytest.param("cpu", id="cpu", marks=pytest.mark.skipif(
                       "cpu" not in lm.SAMPLE_IMPLEMENTED, reason="extension not built"))]


@pytest.mark.parametrize("channels,mixtures,levels,shape", [
    (3, 10, 256, (4, 5, 7)), (1, 5, 17, (3, 6, 6)), (3, 1, 2, (2, 3, 3)), (3, 5, 256, (16, 1, 1)),
], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_sample_same_on_every_backend(channels, mixtures, levels, shape, dtype):
    """One seed, one image: the reference and the C++ kernel draw the same uniforms."""
    if "cpu" not in lm.SAMPLE_IMPLEMENTED:
        pytest.skip("extension not built")
    _seed("sample", channels, mixtures, levels, shape, str(dtype))
    batch, height, width = shape
    _, params = make_inputs(batch, channels, mixtures, height, width, levels)
    params = params.to(dtype)
    draws = {}
    for name in ("reference", "cpu"):
        generator = torch.Generator().manual_seed(7)
        draws[name] = logistic_mixture_sample(params, channels, levels, generator, backend=name)
        assert draws[name].dtype == torch.int64 and draws[name].shape == (batch, channels,
                                                                          height, width)
        assert draws[name].min() >= 0 and draws[name].max() < levels
    # Equal except where a value lies within rounding of a boundary: none at these sizes.
    assert torch.equal(draws["reference"], draws["cpu"])


def test_sample_reference_uses_the_stream():
    """The reference path is logistic_mixture_sample_ref on the stream's uniforms."""
    _seed("sample_stream")
    _, params = make_inputs(2, 3, 4, 3, 5, 256)
    seed = lm.draw_seed(torch.Generator().manual_seed(3))
    uniform = lm.logistic_mixture_uniform_ref(seed, (2, 4, 3, 5))
    assert uniform.min() > 0 and uniform.max() < 1
    want = logistic_mixture_sample_ref(params, 3, uniform)
    got = logistic_mixture_sample(params, 3, generator=torch.Generator().manual_seed(3),
                                  backend="reference")
    assert torch.equal(got, want)


@pytest.mark.parametrize("name", SAMPLE_BACKENDS)
def test_sample_repeats_with_the_generator(name):
    _, params = make_inputs(2, 3, 4, 3, 5, 256)
    a = logistic_mixture_sample(params, 3, generator=torch.Generator().manual_seed(1),
                                backend=name)
    b = logistic_mixture_sample(params, 3, generator=torch.Generator().manual_seed(1),
                                backend=name)
    c = logistic_mixture_sample(params, 3, generator=torch.Generator().manual_seed(2),
                                backend=name)
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(5)
    d = logistic_mixture_sample(params, 3, backend=name)
    torch.manual_seed(5)
    assert torch.equal(d, logistic_mixture_sample(params, 3, backend=name))


def _logistic_cdf(t):
    return 1.0 / (1.0 + math.exp(-t))


@pytest.mark.parametrize("name", SAMPLE_BACKENDS)
def test_sample_histogram_matches_the_bin_probabilities(name):
    """One grey component: the histogram of 65536 draws against the exact bin probabilities
    (edge bins open to infinity), by a chi-square statistic well inside its spread."""
    levels, mean, log_scale = 9, 0.3, -1.2
    params = torch.tensor([0.0, mean, log_scale]).view(1, 3, 1, 1).expand(16, 3, 64, 64)
    draws = logistic_mixture_sample(params, 1, levels, torch.Generator().manual_seed(11),
                                    backend=name)
    counts = torch.bincount(draws.flatten(), minlength=levels).double()
    h, s = 1.0 / (levels - 1), math.exp(log_scale)
    edges = [-math.inf] + [2.0 * k / (levels - 1) - 1.0 + h for k in range(levels - 1)] + [
        math.inf]
    cdf = [0.0 if e == -math.inf else 1.0 if e == math.inf else _logistic_cdf((e - mean) / s)
           for e in edges]
    expected = torch.tensor([cdf[k + 1] - cdf[k] for k in range(levels)]) * counts.sum()
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    dof = levels - 1
    assert chi2 < dof + 6 * math.sqrt(2 * dof), (counts, expected)
    # The same bins are the likelihood's: its probabilities are these.
    nll = logistic_mixture_nll_ref(torch.arange(levels).view(levels, 1, 1, 1),
                                   params[:1, :, :1, :1].expand(levels, 3, 1, 1).double(), levels)
    torch.testing.assert_close(torch.exp(-nll) * counts.sum(), expected.double(), rtol=1e-6,
                               atol=1e-6)


@pytest.mark.parametrize("name", SAMPLE_BACKENDS)
def test_sample_rgb_follows_the_coefficients(name):
    """With one component of tiny scale, green = mean_g + a * red and blue likewise."""
    a, b, c = 0.5, -0.3, 0.4
    raw = [math.atanh(v) for v in (a, b, c)]
    params = torch.tensor([0.0, 0.2, -0.1, 0.1, -7.0, -7.0, -7.0, *raw]).view(1, 10, 1, 1)
    draws = logistic_mixture_sample(params.expand(4, 10, 2, 2), 3, 256, backend=name)
    r = 0.2
    g = -0.1 + a * r
    bl = 0.1 + b * r + c * g
    want = torch.tensor([round((v + 1) * 127.5) for v in (r, g, bl)])
    assert (draws - want.view(1, 3, 1, 1)).abs().max() <= 1


def test_sample_opcheck_and_bad_input():
    if "cpu" not in lm.SAMPLE_IMPLEMENTED:
        pytest.skip("extension not built")
    _, params = make_inputs(2, 3, 2, 3, 4, 256)
    seed = torch.tensor([5, 9], dtype=torch.int64)
    torch.library.opcheck(torch.ops.genfast.logistic_mixture_sample.default,
                          (params.float(), 3, 256, seed))
    with pytest.raises(ValueError, match=r"M \* 10 channels"):
        logistic_mixture_sample(params[:, :-1], 3)
    with pytest.raises(TypeError, match="channels must be an int"):
        logistic_mixture_sample(params, 3.0)
    with pytest.raises(ValueError, match="levels must be"):
        logistic_mixture_sample(params, 3, levels=1)
    with pytest.raises(TypeError, match="params must be"):
        logistic_mixture_sample(params.long(), 3)


def test_auto_table_has_the_ops():
    for op in ("logistic_mixture_nll", "logistic_mixture_sample"):
        assert (op, "cpu") in genfast.auto_table() and (op, "cuda") in genfast.auto_table()


# ----------------------------------------------------------------------------- the benchmark

def test_peak_memory_measure_and_report():
    """genfast bench's peak memory: the profiler's allocator events of one call, in the line,
    the table and the target check."""
    from genfast.benchmark import report
    from genfast.benchmark.cases import get_cases
    from genfast.benchmark.memory import peak_bytes
    from genfast.benchmark.runner import COMPILE, REFERENCE, Result
    from genfast.benchmark.timing import Measurement

    x = torch.randn(1000, 1000)
    # x * 2 (4 MB) is alive while exp writes its 4 MB result.
    assert 8_000_000 <= peak_bytes(lambda: (x * 2).exp(), "cpu") < 8_100_000
    assert peak_bytes(lambda: None, "cpu") == 0

    case = get_cases(["logistic_mixture_nll"])[0]
    def timing(t):
        return Measurement(median=t, iqr=0.0, min=t, mean=t, number=1, blocks=3, p20=t, p80=t)

    times = {REFERENCE: timing(0.01), COMPILE: timing(0.01), "cpu": timing(0.001)}  # 10x
    for cpu_bytes, status in ((2**20, "PASS"), (2**23, "FAIL")):
        result = Result(case, case.size("large"), "fwd+bwd", "cpu", times, {},
                        peak_memory={REFERENCE: 2**24, COMPILE: 2**23, "cpu": cpu_bytes})
        assert f"cpu {cpu_bytes / 2**20:.2f} MiB ({cpu_bytes / 2**24:.3f}x)" in \
            report.format_line(result)
        checks = report.check_targets([result], "cpu")
        table = report.format_table([result], checks)
        assert "Peak memory of one call" in table and f"[{status:>10}]" in table
        assert f"peak memory {cpu_bytes / 2**24:.3f}x reference's" in checks[0].detail
