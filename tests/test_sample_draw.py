"""The samplers' categorical draws (genfast.ops.sample_draw): the C++ kernels against the
reference and against the probabilities they draw from; the fused output-layer draw against
the layer followed by the draw; opcheck, torch.compile and clear errors."""
import zlib

import pytest
import torch

import genfast
from genfast.ops.sample_draw import (categorical_draw, categorical_draw_ref, has_cpu_kernels,
                                     pointwise_categorical_draw)

needs_kernels = pytest.mark.skipif(not has_cpu_kernels(torch.device("cpu"), torch.float32),
                                   reason="the extension lacks the draw kernels")


def _seed(*key):
    torch.manual_seed(zlib.crc32(repr(key).encode()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("levels", [2, 17, 256])
@pytest.mark.parametrize("draw", [categorical_draw, categorical_draw_ref],
                         ids=["dispatch", "reference"])
def test_draws_follow_the_softmax(draw, levels, dtype):
    _seed("follow", levels, dtype)
    logits = torch.randn(levels, dtype=dtype) * 2
    n = 40000
    values = draw(logits.expand(n, levels), torch.rand(n, dtype=torch.float64))
    assert values.dtype == torch.int64 and int(values.min()) >= 0 and int(values.max()) < levels
    frequencies = torch.bincount(values, minlength=levels).double() / n
    torch.testing.assert_close(frequencies, logits.double().softmax(0), atol=0.012, rtol=0)


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(1, 2), (16, 256), (7, 17), (33, 5)])
def test_cpu_kernel_matches_the_reference_away_from_boundaries(shape, dtype):
    """Both draw exactly from the logits up to rounding: they agree wherever u is not within
    rounding of a cumulative-probability boundary."""
    _seed("match", shape, dtype)
    n, levels = shape
    logits = (torch.randn(n, levels, dtype=dtype) * 3)[:, ::1]
    uniform = torch.rand(n, dtype=torch.float64)
    got = torch.ops.genfast.categorical_draw(logits, uniform)
    want = categorical_draw_ref(logits, uniform)
    cdf = logits.double().softmax(1).cumsum(1)
    margin = (cdf - uniform[:, None]).abs().min(1).values
    clear = margin > 1e-5
    assert clear.sum() > n // 2
    assert torch.equal(got[clear], want[clear])


@needs_kernels
def test_strided_logits_draw_like_contiguous_ones():
    _seed("strided")
    logits = torch.randn(16, 3, 9)[:, 1]  # [16, 9] with strides (27, 1)
    uniform = torch.rand(16, dtype=torch.float64)
    assert torch.equal(categorical_draw(logits, uniform),
                       categorical_draw(logits.contiguous(), uniform))


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("colours,levels,cin", [(1, 256, 64), (3, 17, 66), (3, 2, 9), (1, 5, 13)])
@pytest.mark.parametrize("n", [1, 16, 19])
def test_fused_output_draw_is_the_layer_then_the_draw(n, colours, levels, cin, dtype):
    _seed("fused", n, colours, levels, cin, dtype)
    x = torch.randn(n, cin, 1, 1, dtype=dtype)
    weight = torch.randn(colours * levels, cin, 1, 1, dtype=dtype)
    bias = torch.randn(colours * levels, dtype=dtype)
    logits = genfast.masked_conv2d(x, weight, bias, "B", colours, backend="cpu")
    for colour in range(colours):
        uniform = torch.rand(n, dtype=torch.float64)
        block = logits.view(n, colours, levels)[:, colour]
        want = categorical_draw(block, uniform)
        got = pointwise_categorical_draw(x, weight, bias, colours, colour, uniform)
        assert torch.equal(got, want)
    no_bias = genfast.masked_conv2d(x, weight, None, "B", colours, backend="cpu")
    uniform = torch.rand(n, dtype=torch.float64)
    assert torch.equal(pointwise_categorical_draw(x, weight, None, colours, 0, uniform),
                       categorical_draw(no_bias.view(n, colours, levels)[:, 0], uniform))


@needs_kernels
def test_opcheck():
    _seed("opcheck")
    logits, uniform = torch.randn(5, 7), torch.rand(5, dtype=torch.float64)
    torch.library.opcheck(torch.ops.genfast.categorical_draw.default, (logits, uniform))
    x, weight = torch.randn(5, 6, 1, 1), torch.randn(21, 6, 1, 1)
    torch.library.opcheck(torch.ops.genfast.pointwise_categorical_draw.default,
                          (x, weight, torch.randn(21), 3, 2, uniform))


@needs_kernels
def test_compiles_with_fullgraph():
    _seed("compile")
    torch._dynamo.reset()
    logits, uniform = torch.randn(6, 11), torch.rand(6, dtype=torch.float64)
    compiled = torch.compile(categorical_draw, fullgraph=True)
    assert torch.equal(compiled(logits, uniform), categorical_draw(logits, uniform))


@needs_kernels
def test_clear_errors():
    logits = torch.randn(4, 5)
    with pytest.raises(ValueError, match=r"uniform must be float64 \[4\]"):
        categorical_draw(logits, torch.rand(4))
    with pytest.raises(ValueError, match="logits must be a tensor"):
        categorical_draw(torch.randn(4), torch.rand(4, dtype=torch.float64))
    with pytest.raises(TypeError, match="floating point"):
        categorical_draw(torch.ones(4, 5, dtype=torch.int64), torch.rand(4, dtype=torch.float64))
    x, weight = torch.randn(4, 6, 1, 1), torch.randn(15, 6, 1, 1)
    with pytest.raises(RuntimeError, match="colour must be in"):
        pointwise_categorical_draw(x, weight, None, 3, 3, torch.rand(4, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="one pixel per image"):
        pointwise_categorical_draw(torch.randn(4, 6, 2, 1), weight, None, 3, 0,
                                   torch.rand(4, dtype=torch.float64))
