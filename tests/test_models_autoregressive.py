"""The autoregressive models (PixelCNN, Gated PixelCNN, PixelRNN row/diagonal) and the
independent baseline: causality, closed-form likelihoods, learning on digits, sampling, the
reference and fast backends agreeing, and clear errors for input they were not built for."""
import math
import re

import pytest
import torch

from genfast.data import load_dataset
from genfast.models import MODELS, build_model
from genfast.train.evaluate import evaluate

# Tiny versions of each model, fast on one core.
TINY = {
    "pixelcnn": dict(channels=12, blocks=1, head_channels=24),
    "gated_pixelcnn": dict(channels=8, layers=2, head_channels=24),
    "gated_pixelcnn_conditional": dict(channels=8, layers=2, head_channels=24, num_classes=10),
    "pixelrnn_row": dict(layer="row", hidden=6, layers=1, head_channels=24),
    "pixelrnn_diagonal": dict(layer="diagonal", hidden=6, layers=1, head_channels=24),
}
NETWORKS = sorted(TINY)


def tiny(key, image_shape=(1, 8, 8), levels=17, **extra):
    registry_name = key.rsplit("_", 1)[0] if key.startswith(("pixelrnn_", "gated_pixelcnn_c")) \
        else key
    return build_model(registry_name, image_shape=image_shape, levels=levels,
                       **{**TINY[key], **extra})


def test_registry_has_the_autoregressive_models():
    assert {"pixelcnn", "gated_pixelcnn", "pixelrnn", "independent"} <= set(MODELS)


@pytest.mark.parametrize("colours,layout", [(1, "contiguous"), (3, "contiguous"),
                                            (3, "interleaved")])
@pytest.mark.parametrize("key", NETWORKS)
def test_logits_depend_on_earlier_pixels_and_colours_only(key, colours, layout):
    """d logits[colour c at pixel p] / d input is zero at every pixel after p and at colours
    >= c of p, and nonzero at the pixels left of and above p (the model does look back). Per
    colour layout: the layers and the logits' reshape must agree on where each colour is."""
    torch.manual_seed(0)
    h, w = 5, 6
    model = tiny(key, (colours, h, w), 4, colour_layout=layout).double()
    # Several random images, so that a ReLU dead at one input does not hide a dependence.
    x = (torch.rand(6, colours, h, w, dtype=torch.float64) * 2 - 1).requires_grad_()
    logits = model.network(x, torch.arange(6))
    assert logits.shape == (6, 4, colours, h, w)
    grad, = torch.autograd.grad(logits[0].sum(), x, retain_graph=True)
    assert grad[1:].abs().sum() == 0  # the images of a batch are independent
    for i in range(h):
        for j in range(w):
            for c in range(colours):
                grad, = torch.autograd.grad(logits[:, :, c, i, j].sum(), x, retain_graph=True)
                # [B, H * W, C]: pixels in raster order
                per_pixel = grad.permute(0, 2, 3, 1).reshape(len(x), h * w, colours).abs()
                p = i * w + j
                assert per_pixel[:, p + 1:].sum() == 0, (i, j, c)
                assert per_pixel[:, p, c:].sum() == 0, (i, j, c)
                if j > 0:  # the pixel to the left
                    assert per_pixel[:, p - 1].sum() > 0, (i, j, c)
                if i > 0:  # the pixel above
                    assert per_pixel[:, p - w].sum() > 0, (i, j, c)


@pytest.mark.parametrize("levels", [2, 17, 256])
def test_uniform_model_gives_log_levels_nats_per_dimension(levels):
    data = load_dataset("digits", "test", binarize=levels == 2)
    if levels == 256:  # the same images, read as 8-bit data
        data.images, data.levels = data.images * 15, 256
    # float64, so that "exactly" means to 1e-12
    model = build_model("independent", image_shape=data.image_shape, levels=levels).double()
    metrics = evaluate(model, data, batch_size=100, device=torch.device("cpu"))
    dims = math.prod(data.image_shape)
    assert metrics["nll_nats"] == pytest.approx(dims * math.log(levels), rel=1e-12)
    assert metrics["nll_bits_per_dim"] == pytest.approx(math.log2(levels), rel=1e-12)


def test_independent_closed_form_fit_is_the_empirical_entropy():
    """With a vanishing prior, the count fit's training NLL is the sum over pixels of the
    entropy of each pixel's empirical distribution (times nothing: it is per image)."""
    data = load_dataset("digits", "train")
    model = build_model("independent", image_shape=data.image_shape, levels=data.levels)
    model.fit_counts(data.images, prior=1e-12)
    one_hot = torch.nn.functional.one_hot(data.images.long(), 17).double()
    p = one_hot.mean(0)
    entropy = -(p * torch.log(p.clamp_min(1e-300))).sum()
    nll = model.evaluate(data.images.long())["nll_nats"].double().mean()
    assert float(nll) == pytest.approx(float(entropy), rel=1e-5)


@pytest.mark.parametrize("key", NETWORKS + ["independent"])
def test_loss_goes_down_on_digits(key):
    torch.manual_seed(0)
    data = load_dataset("digits", "train")
    model = build_model("independent", image_shape=(1, 8, 8), levels=17) \
        if key == "independent" else tiny(key)
    # The baseline's logits start at zero and move by about lr per step: give it a larger lr.
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1 if key == "independent" else 1e-2)
    images, labels = data.__getitems__(list(range(256)))
    with torch.no_grad():
        before = float(model(images, labels))
    for step in range(12):
        batch = slice(32 * (step % 8), 32 * (step % 8 + 1))
        optimizer.zero_grad()
        model(images[batch], labels[batch]).backward()
        optimizer.step()
    with torch.no_grad():
        after = float(model(images, labels))
    assert after < before - 10, (before, after)


@pytest.mark.parametrize("key", NETWORKS)
def test_reference_and_fast_backend_agree(key):
    torch.manual_seed(0)
    fast = tiny(key, backend="cpu")
    reference = tiny(key, backend="reference")
    reference.load_state_dict(fast.state_dict())
    images, labels = load_dataset("digits", "test").__getitems__(list(range(16)))
    torch.testing.assert_close(fast(images, labels), reference(images, labels),
                               rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("key", ["pixelcnn", "gated_pixelcnn_conditional", "pixelrnn_row"])
def test_samples_have_the_right_shape_range_and_repeat_with_a_seed(key):
    model = tiny(key, (1, 4, 3), 5)
    draw = lambda: model.sample(7, generator=torch.Generator().manual_seed(3))  # noqa: E731
    images = draw()
    assert images.shape == (7, 1, 4, 3) and images.dtype == torch.int64
    assert int(images.min()) >= 0 and int(images.max()) < 5
    assert torch.equal(images, draw())
    assert model.training  # sampling leaves the mode as it was


def test_sampling_follows_the_model():
    """An independent model that puts all mass on one value per pixel samples exactly it."""
    model = build_model("independent", image_shape=(3, 2, 2), levels=4)
    target = torch.randint(0, 4, (3, 2, 2))
    with torch.no_grad():
        model.theta.fill_(-50.0)
        model.theta.scatter_(0, target[None], 50.0)
    assert torch.equal(model.sample(5), target.expand(5, 3, 2, 2))


def test_binarized_data_trains_with_two_levels():
    data = load_dataset("digits-binarized", "train")
    model = tiny("pixelcnn", levels=2)
    images, _ = data.__getitems__(list(range(8)))
    loss = model(images)
    assert loss.shape == () and 0 < float(loss.detach()) < 64 * math.log(2) * 2


def test_clear_errors_for_input_the_model_was_not_built_for():
    model = tiny("pixelcnn")
    with pytest.raises(ValueError, match=r"built for images of shape \(1, 8, 8\).*\(1, 7, 8\)"):
        model(torch.zeros(2, 1, 7, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match="integer images"):
        model(torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="grey \\(C=1\\) or RGB"):
        build_model("pixelcnn", image_shape=(2, 8, 8), levels=17)
    with pytest.raises(ValueError, match="multiple of 3"):
        build_model("pixelrnn", image_shape=(3, 8, 8), levels=256, hidden=16)
    with pytest.raises(ValueError, match="'row' or 'diagonal'"):
        build_model("pixelrnn", image_shape=(1, 8, 8), levels=17, layer="column")
    with pytest.raises(ValueError, match=re.escape("unknown model 'pixelcnn++'")):
        build_model("pixelcnn++", image_shape=(1, 8, 8), levels=17)
    conditional = tiny("gated_pixelcnn_conditional")
    images = torch.zeros(2, 1, 8, 8, dtype=torch.int64)
    with pytest.raises(ValueError, match="needs labels"):
        conditional(images)
    with pytest.raises(ValueError, match=r"integers in \[0, 10\)"):
        conditional(images, torch.tensor([3, 10]))
