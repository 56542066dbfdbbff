"""Cached sampling (genfast.models.sampling) against the naive sampler: the same integers for
the same seed, for every autoregressive model, grey and RGB, conditional or not, batch 1 and
16; and, pixel by pixel, the same logits as the whole network on the partly drawn image."""
import zlib

import pytest
import torch

import genfast
from genfast.models import build_model
from genfast.models.sampling import draw_categorical

# Cached and naive draws agree to the bit on the cpu backend (see genfast.models.sampling); the
# reference rounds differently by shape, so without the extension these checks cannot hold.
needs_cpu_backend = pytest.mark.skipif(not genfast.backends()["cpu"].available,
                                       reason="the cpu backend (genfast._C) is not available")

# Small versions of each model: (registry name, hyperparameters).
MODELS = {
    "pixelcnn": ("pixelcnn", dict(channels=12, blocks=2, head_channels=18)),
    "gated_pixelcnn": ("gated_pixelcnn", dict(channels=9, layers=3, head_channels=18)),
    "gated_pixelcnn_conditional": ("gated_pixelcnn", dict(channels=9, layers=3,
                                                          head_channels=18, num_classes=4)),
    "pixelrnn_row": ("pixelrnn", dict(layer="row", hidden=6, layers=2, head_channels=18)),
    "pixelrnn_diagonal": ("pixelrnn", dict(layer="diagonal", hidden=6, layers=2,
                                           head_channels=18)),
    "independent": ("independent", {}),
}
# (C, H, W), levels: grey 256-way (on a small image), RGB, and binary (a Bernoulli per value).
DATA = {"grey": ((1, 5, 6), 256), "rgb": ((3, 4, 3), 5), "binary": ((1, 6, 5), 2)}


def make(key, data, backend=None):
    name, hparams = MODELS[key]
    image_shape, levels = DATA[data]
    torch.manual_seed(zlib.crc32(f"{key}-{data}".encode()))
    model = build_model(name, image_shape=image_shape, levels=levels, backend=backend,
                        **hparams)
    with torch.no_grad():  # spread the logits so the draws depend on the model
        for p in model.parameters():
            p.mul_(2.0)
    return model


def conditioning(key, n):
    return torch.arange(n) % 4 if key.endswith("conditional") else None


def draw(model, n, method, seed, cond=None):
    return model.sample(n, generator=torch.Generator().manual_seed(seed), method=method,
                        conditioning=cond)


@needs_cpu_backend
@pytest.mark.parametrize("n", [1, 16])
@pytest.mark.parametrize("data", sorted(DATA))
@pytest.mark.parametrize("key", sorted(MODELS))
def test_cached_and_naive_draw_the_same_integers(key, data, n):
    model = make(key, data)
    cond = conditioning(key, n)
    naive = draw(model, n, "naive", 7, cond)
    cached = draw(model, n, "cached", 7, cond)
    c, h, w = model.image_shape
    assert naive.shape == (n, c, h, w) and naive.dtype == torch.int64
    assert int(naive.min()) >= 0 and int(naive.max()) < model.levels
    assert torch.equal(cached, naive)
    assert torch.equal(draw(model, n, "cached", 7, cond), cached)  # the seed fixes the draws
    if n == 16:  # 16 images of many values: a degenerate model would repeat one
        assert len(torch.unique(cached.flatten(1), dim=0)) > 1


def partly_drawn_logits(model, stepper, images, labels, check):
    """Walks ``stepper`` over ``images`` value by value; at each, ``check(cached, full)`` with
    the stepper's logits and those of the whole network on the image drawn so far."""
    c, h, w = model.image_shape
    partial = torch.zeros_like(images)
    with torch.no_grad():
        for i in range(h):
            stepper.start_row(i)
            for j in range(w):
                for k in range(c):
                    full = model.logits(partial, labels)[:, :, k, i, j]
                    check(stepper.logits(i, j, k), full)
                    partial[:, k, i, j] = images[:, k, i, j]
                    stepper.set_value(i, j, k, images[:, k, i, j])


@needs_cpu_backend
@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("data", ["grey", "rgb"])
@pytest.mark.parametrize("key", sorted(MODELS))
def test_cached_logits_are_the_networks_bit_for_bit_on_the_cpu_backend(key, data, n):
    model = make(key, data, backend="cpu").eval()
    images = torch.randint(0, model.levels, (n, *model.image_shape))
    labels = conditioning(key, n)

    def check(cached, full):
        assert torch.equal(cached, full), (cached - full).abs().max()

    partly_drawn_logits(model, model.cached_stepper(n, labels), images, labels, check)


@pytest.mark.parametrize("backend_name", [
    "reference", pytest.param("triton", marks=pytest.mark.slow)])  # the Triton interpreter
@pytest.mark.parametrize("key", sorted(set(MODELS) - {"independent"}))
def test_cached_logits_match_the_network_on_every_backend(key, backend_name):
    """The reference backend's PyTorch ops round differently with the shape (vectorised
    loops and their scalar tails), so other backends agree to rounding, not to the bit."""
    if not genfast.backends()[backend_name].available:
        pytest.skip(genfast.backends()[backend_name].reason)
    model = make(key, "rgb", backend=backend_name).eval()
    if backend_name == "triton":  # the CPU interpreter is slow: a smaller image
        model = build_model(MODELS[key][0], image_shape=(3, 3, 2), levels=5,
                            backend=backend_name, **MODELS[key][1]).eval()
    images = torch.randint(0, model.levels, (2, *model.image_shape))
    labels = conditioning(key, 2)

    def check(cached, full):
        torch.testing.assert_close(cached, full, rtol=1e-5, atol=1e-5)

    partly_drawn_logits(model, model.cached_stepper(2, labels), images, labels, check)


@needs_cpu_backend
def test_conditioning_changes_the_samples():
    model = make("gated_pixelcnn_conditional", "grey")
    zeros, ones = torch.zeros(16, dtype=torch.int64), torch.ones(16, dtype=torch.int64)
    a, b = draw(model, 16, "cached", 3, zeros), draw(model, 16, "cached", 3, ones)
    assert not torch.equal(a, b)
    assert torch.equal(a, draw(model, 16, "naive", 3, zeros))
    assert torch.equal(b, draw(model, 16, "cached", 3, ones))
    # labels= is the same argument under the name the other models use
    assert torch.equal(a, model.sample(16, labels=zeros,
                                       generator=torch.Generator().manual_seed(3)))


def test_draw_categorical_follows_the_probabilities():
    logits = torch.log(torch.tensor([[0.1, 0.6, 0.3]])).expand(30000, 3)
    values = draw_categorical(logits, torch.Generator().manual_seed(0))
    frequencies = torch.bincount(values, minlength=3).float() / len(values)
    torch.testing.assert_close(frequencies, torch.tensor([0.1, 0.6, 0.3]), atol=0.01, rtol=0)


def test_sampling_keeps_the_training_mode_and_checks_its_arguments():
    model = make("pixelcnn", "grey")
    model.train()
    draw(model, 2, "cached", 0)
    assert model.training
    with pytest.raises(ValueError, match="method must be one of"):
        model.sample(2, method="fast")
    with pytest.raises(ValueError, match="positive int"):
        model.sample(0)
    with pytest.raises(ValueError, match="not conditional"):
        model.sample(2, conditioning=torch.zeros(2, dtype=torch.int64))
    conditional = make("gated_pixelcnn_conditional", "grey")
    with pytest.raises(ValueError, match="not both"):
        conditional.sample(2, conditioning=torch.zeros(2, dtype=torch.int64),
                           labels=torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"labels must be \[2\] integers in \[0, 4\)"):
        conditional.sample(2, conditioning=torch.tensor([0, 9]))
