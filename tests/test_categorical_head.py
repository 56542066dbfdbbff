"""The fused categorical output head (genfast.ops.categorical_head): every fast backend against
the reference, forward and backward, and the autoregressive models' losses and gradients
unchanged by it."""
import zlib

import pytest
import torch
import torch.nn.functional as F

from conftest import LOW_PRECISION, assert_close
from genfast.models import build_model
from genfast.ops import categorical_head as head_ops
from genfast.ops.categorical_head import categorical_head_nll, categorical_head_nll_ref

# (batch, feature channels, colours, levels, height, width, colour layout): batch 1, primes,
# odd sides, a 2-way and a 17-way softmax, and 256 levels with more pixels than one CPU chunk.
CASES = [
    (1, 5, 1, 2, 3, 4, "contiguous"),
    (2, 7, 1, 17, 5, 3, "contiguous"),
    (3, 6, 3, 17, 4, 5, "contiguous"),
    (2, 9, 3, 17, 3, 7, "interleaved"),
    (2, 13, 1, 256, 7, 5, "contiguous"),
    (1, 6, 3, 256, 3, 1, "interleaved"),
]
LARGE_CASE = (2, 8, 3, 256, 19, 23, "contiguous")  # 437 pixels: two chunks of the CPU kernel
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def _inputs(case, device, seed_text):
    torch.manual_seed(zlib.crc32(seed_text.encode()))
    b, cin, c, levels, h, w, layout = case
    features = torch.randn(b, cin, h, w, dtype=torch.float64, device=device).relu()
    weight = torch.randn(c * levels, cin, 1, 1, dtype=torch.float64, device=device) / cin**0.5
    bias = 0.3 * torch.randn(c * levels, dtype=torch.float64, device=device)
    images = torch.randint(0, levels, (b, c, h, w), device=device)
    grad_nll = torch.randn(b, dtype=torch.float64, device=device)
    return features, weight, bias, images, grad_nll


def _run(fn, case, tensors, dtype, **kwargs):
    """NLL and the gradients of sum(nll * grad_nll) on copies of the float64 inputs in dtype."""
    _, _, c, levels, _, _, layout = case
    features, weight, bias, images, grad_nll = tensors
    leaves = [t.to(dtype).requires_grad_() for t in (features, weight, bias)]
    nll = fn(*leaves, images, levels, c, layout, **kwargs)
    nll.backward(grad_nll.to(nll.dtype))
    return [nll.detach()] + [t.grad for t in leaves]


def _check_against_reference(backend, case, dtype):
    name, device = backend
    if name == "triton" and device == "cpu" and dtype in LOW_PRECISION:
        pytest.skip("the Triton CPU interpreter has no float16/bfloat16 maths")
    tensors = _inputs(case, device, repr((case, str(dtype))))
    fast = _run(categorical_head_nll, case, tensors, dtype, backend=name)
    ref = _run(categorical_head_nll_ref, case, tensors, dtype)
    # The float64 oracle sees the inputs rounded to dtype, as the low-precision runs do.
    rounded = [t.to(dtype).double() for t in tensors[:3]] + list(tensors[3:])
    ref64 = _run(categorical_head_nll_ref, case, rounded, torch.float64)
    for got, want, want64 in zip(fast, ref, ref64):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert torch.isfinite(got).all()
        assert_close(got, want, want64)


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_matches_reference(backend, case, dtype):
    _check_against_reference(backend, case, dtype)


def test_matches_reference_over_several_chunks(backend):
    _check_against_reference(backend, LARGE_CASE, torch.float32)


@pytest.mark.parametrize("layout", ["contiguous", "interleaved"])
def test_gradcheck(backend, layout):
    name, device = backend
    case = (2, 6, 3, 5, 3, 2, layout)
    features, weight, bias, images, _ = _inputs(case, device, f"gradcheck {layout}")
    leaves = [t.requires_grad_() for t in (features, weight, bias)]

    def fn(features, weight, bias):
        return categorical_head_nll(features, weight, bias, images, 5, 3, layout, backend=name)

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-6)


def test_without_bias_and_without_grad(backend):
    """No bias; and with grad off, no gradients are computed, the NLL is the same."""
    name, device = backend
    case = CASES[3]
    features, weight, _, images, _ = _inputs(case, device, "no bias")
    _, _, c, levels, _, _, layout = case
    want = categorical_head_nll_ref(features, weight, None, images, levels, c, layout)
    with torch.no_grad():
        got = categorical_head_nll(features, weight, None, images, levels, c, layout,
                                   backend=name)
    assert_close(got, want)
    op = head_ops._FORWARD_OPS[name]
    nll, gx, gw, gb = op(features, weight.flatten(1), None, images, levels,
                         layout == "interleaved", [False, False, False])
    assert_close(nll, want)
    assert gx.numel() == gw.numel() == gb.numel() == 0


def test_opcheck(backend):
    name, device = backend
    case = (2, 6, 3, 7, 3, 4, "interleaved")
    features, weight, bias, images, _ = _inputs(case, device, "opcheck")
    args = (features.float().requires_grad_(), weight.flatten(1).float().requires_grad_(),
            bias.float().requires_grad_(), images, 7, True, [True, True, True])
    torch.library.opcheck(head_ops._FORWARD_OPS[name], args)


def test_compile_fullgraph(backend):
    name, device = backend
    if name != "cpu":
        pytest.skip("one compile test per op: the cpu backend's")
    case = CASES[2]
    tensors = _inputs(case, device, "compile")
    fn = torch.compile(categorical_head_nll, fullgraph=True)
    got = _run(fn, case, tensors, torch.float32, backend=name)
    want = _run(categorical_head_nll_ref, case, tensors, torch.float32)
    for g, w in zip(got, want):
        assert_close(g, w)


def test_bad_input():
    features = torch.randn(2, 6, 3, 4)
    weight = torch.randn(3 * 5, 6, 1, 1)
    bias = torch.randn(15)
    images = torch.randint(0, 5, (2, 3, 3, 4))
    good = (features, weight, bias, images, 5, 3)
    out_of_range = r"image values must be in \[0, 5\)"
    categorical_head_nll(*good, backend="reference")
    bad = [
        ((features.long(), *good[1:]), TypeError, "features must be float"),
        ((features, weight.double(), *good[2:]), TypeError, "weight must have the features'"),
        ((features, weight, bias, images.float(), 5, 3), TypeError, "images must be integers"),
        ((features[0], *good[1:]), ValueError, r"features must be \[B, Cin, H, W\]"),
        ((features, weight, bias, images[:, :, :2], 5, 3), ValueError, "images must be"),
        ((features, weight[:12], bias, images, 5, 3), ValueError, "weight must be"),
        ((features, weight, bias[:3], images, 5, 3), ValueError, "bias must be"),
        ((features, weight, bias, images, 1, 3), ValueError, "levels must be"),
        ((features, weight, bias, images + 5, 5, 3), ValueError, out_of_range),
        ((features, weight, bias, images - 1, 5, 3), ValueError, out_of_range),
        ((features, weight, bias, images[:, :1], 5, 1), ValueError, "weight must be"),
        ((*good, "diagonal"), ValueError, "colour_layout must be"),
    ]
    for args, error, message in bad:
        with pytest.raises(error, match="genfast: " + message):
            categorical_head_nll(*args)
    with pytest.raises(ValueError, match="genfast: unknown backend"):
        categorical_head_nll(*good, backend="fortran")


# ----------------------------------------------------------------------------- in the models

TINY = {
    "pixelcnn": dict(channels=12, blocks=1, head_channels=24),
    "gated_pixelcnn": dict(channels=8, layers=2, head_channels=24),
    "pixelrnn": dict(layer="row", hidden=6, layers=1, head_channels=24),
}


def _loss_and_grads(model, images, fused):
    """The mean NLL and every parameter's gradient: through model.nll (fused on the fast
    backends) or through the logits and F.cross_entropy, as the models computed it before."""
    model.zero_grad()
    if fused:
        loss = model(images)
    else:
        logits = model.logits(images)
        loss = F.cross_entropy(logits, images, reduction="none").flatten(1).sum(1).mean()
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}


@pytest.mark.parametrize("colours,layout", [(1, "contiguous"), (3, "contiguous"),
                                            (3, "interleaved")])
@pytest.mark.parametrize("name", sorted(TINY))
def test_models_loss_and_gradients_unchanged(backend, name, colours, layout):
    backend_name, device = backend
    torch.manual_seed(zlib.crc32(f"{name} {colours} {layout}".encode()))
    model = build_model(name, image_shape=(colours, 5, 6), levels=17, backend=backend_name,
                        colour_layout=layout, **TINY[name]).to(device)
    assert model.output_layer is not None
    images = torch.randint(0, 17, (3, colours, 5, 6), device=device)
    loss, grads = _loss_and_grads(model, images, fused=True)
    want_loss, want_grads = _loss_and_grads(model, images, fused=False)
    torch.testing.assert_close(loss, want_loss, rtol=1e-5, atol=1e-5)
    for key, grad in grads.items():
        torch.testing.assert_close(grad, want_grads[key], rtol=1e-4, atol=1e-5, msg=key)
    with torch.no_grad():
        evaluated = model.evaluate(images)["nll_nats"]
    torch.testing.assert_close(evaluated.mean(), want_loss, rtol=1e-5, atol=1e-5)


def test_models_state_dict_unchanged():
    """The head stays a MaskedConv2d: the same keys as before the fused loss."""
    model = build_model("pixelcnn", image_shape=(1, 4, 4), levels=17, **TINY["pixelcnn"])
    assert "head.3.weight" in model.state_dict() and "head.3.bias" in model.state_dict()
    model = build_model("gated_pixelcnn", image_shape=(3, 4, 4), levels=17,
                        **TINY["gated_pixelcnn"])
    assert "head_out.weight" in model.state_dict()
