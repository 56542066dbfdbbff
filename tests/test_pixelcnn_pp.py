"""PixelCNN++ (genfast.models.pixelcnn_pp): shapes, causality of both streams, learning on
digits, cached sampling against naive sampling (the same integers, and per pixel the same
mixture parameters as the whole network), checkpoints, errors and torch.compile."""
import math
import zlib

import pytest
import torch

import genfast
from genfast.data import load_dataset
from genfast.models import build_model
from genfast.ops.logistic_mixture import logistic_mixture_nll_ref
from genfast.ops.logistic_mixture import params_per_mixture
from genfast.train.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint

needs_cpu_backend = pytest.mark.skipif(not genfast.backends()["cpu"].available,
                                       reason="the cpu backend (genfast._C) is not available")

# (C, H, W), levels: digits, RGB with odd sides, grey 256 levels with an H not divisible by 4.
DATA = {"digits": ((1, 8, 8), 17), "rgb": ((3, 5, 7), 5), "grey": ((1, 6, 5), 256)}


def tiny(data="digits", backend=None, seed=None, **hparams):
    image_shape, levels = DATA[data] if isinstance(data, str) else data
    torch.manual_seed(zlib.crc32(f"{data}-{seed}".encode()))
    config = {**dict(filters=8, nr_resnet=1, mixtures=3, dropout=0.0), **hparams}
    model = build_model("pixelcnn_pp", image_shape=image_shape, levels=levels,
                        backend=backend, **config)
    with torch.no_grad():  # spread the mixtures so the draws depend on the model
        for p in model.parameters():
            p.mul_(2.0)
    return model


def draw(model, n, method, seed=7):
    return model.sample(n, generator=torch.Generator().manual_seed(seed), method=method)


@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("data", sorted(DATA))
def test_shapes(data, batch):
    model = tiny(data, mixtures=4)
    (c, h, w), levels = DATA[data]
    images = torch.randint(0, levels, (batch, c, h, w))
    assert model.params(images).shape == (batch, 4 * params_per_mixture(c), h, w)
    u, ul = model.streams(model.scaled(images))
    assert u.shape == ul.shape == (batch, 8, h, w)
    nll = model.evaluate(images)["nll_nats"]
    assert nll.shape == (batch,) and bool((nll > 0).all())
    torch.testing.assert_close(model(images), nll.mean())


def pixel_jacobians(out: torch.Tensor, x: torch.Tensor, positions: int) -> torch.Tensor:
    """out [P, F, H, W] computed image by image from x [P, C, H, W], P copies of one image:
    [P, H * W], entry (p, q) the summed |d out[p, :, pixel p] / d x[p, :, pixel q]|, from one
    backward pass (image p's outputs depend on image p's input alone)."""
    chosen = out.flatten(2)[torch.arange(positions), :, torch.arange(positions)]
    grad, = torch.autograd.grad(chosen.sum(), x, retain_graph=True)
    return grad.abs().sum(dim=1).flatten(1)


@pytest.mark.parametrize("data", ["digits", "rgb"])
def test_both_streams_see_only_earlier_pixels(data):
    """Through autograd: u at row i depends on rows < i only, ul and the output at (i, j) on
    the pixels before (i, j) in raster order only (every colour of the pixel itself hidden),
    and on some of them; u on the row above."""
    model = tiny(data, nr_resnet=2).double()
    (c, h, w), _ = DATA[data]
    positions = h * w
    x = torch.randn(1, c, h, w, dtype=torch.float64).expand(positions, -1, -1, -1)
    x = x.clone().requires_grad_(True)
    u, ul = model.streams(x)
    later = torch.ones(positions, positions).triu().bool()  # (p, q): q >= p
    rows = torch.arange(positions) // w
    for name, out in (("u", u), ("ul", ul), ("params", model.network(x))):
        reach = pixel_jacobians(out, x, positions)
        hidden = rows[None, :] >= rows[:, None] if name == "u" else later
        assert float(reach[hidden].sum()) == 0, name
        seen = reach.sum(dim=1)
        if name == "u":  # u sees the row above
            above = (rows[None, :] == rows[:, None] - 1).double()
            assert bool(((reach * above).sum(dim=1) > 0)[w:].all())
        else:
            assert bool((seen[1:] > 0).all()), name


def test_loss_goes_down_on_digits():
    torch.manual_seed(0)
    data = load_dataset("digits", "train")
    model = build_model("pixelcnn_pp", image_shape=(1, 8, 8), levels=17, filters=8,
                        dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    images, _ = data.__getitems__(list(range(128)))
    with torch.no_grad():
        before = float(model(images))
    for step in range(8):
        batch = slice(32 * (step % 4), 32 * (step % 4 + 1))
        optimizer.zero_grad()
        model(images[batch]).backward()
        optimizer.step()
    with torch.no_grad():
        after = float(model(images))
    assert after < before - 10, (before, after)


@needs_cpu_backend
@pytest.mark.parametrize("n", [1, 16])
@pytest.mark.parametrize("data", sorted(DATA))
def test_cached_and_naive_draw_the_same_integers(data, n):
    model = tiny(data)
    naive = draw(model, n, "naive")
    cached = draw(model, n, "cached")
    (c, h, w), levels = DATA[data]
    assert naive.shape == (n, c, h, w) and naive.dtype == torch.int64
    assert int(naive.min()) >= 0 and int(naive.max()) < levels
    assert torch.equal(cached, naive)
    assert torch.equal(draw(model, n, "cached"), cached)  # the seed fixes the draws
    assert not torch.equal(draw(model, n, "cached", seed=8), cached)
    if n == 16:  # a degenerate model would repeat one image
        assert len(torch.unique(cached.flatten(1), dim=0)) > 1


@needs_cpu_backend
@pytest.mark.slow
def test_cached_and_naive_draw_the_same_integers_at_28x28():
    model = tiny(((1, 28, 28), 256), nr_resnet=1)
    assert torch.equal(draw(model, 2, "cached"), draw(model, 2, "naive"))


def walk_pixels(model, stepper, images, check):
    """Walks ``stepper`` over ``images`` pixel by pixel; at each, ``check(cached, full)`` with
    the stepper's mixture parameters and those of the whole network on the image so far."""
    _, h, w = model.image_shape
    partial = torch.zeros_like(images)
    with torch.inference_mode():
        for i in range(h):
            stepper.start_row(i)
            for j in range(w):
                check(stepper.params(i, j), model.params(partial)[:, :, i:i + 1, j:j + 1])
                partial[:, :, i, j] = images[:, :, i, j]
                stepper.set_pixel(i, j, images[:, :, i, j])


@needs_cpu_backend
@pytest.mark.parametrize("data", ["digits", "rgb"])
def test_cached_parameters_are_the_networks_bit_for_bit_on_the_cpu_backend(data):
    model = tiny(data, backend="cpu", nr_resnet=2).eval()
    (c, h, w), levels = DATA[data]
    images = torch.randint(0, levels, (3, c, h, w))

    def check(cached, full):
        assert torch.equal(cached, full), (cached - full).abs().max()

    walk_pixels(model, model.cached_stepper(3), images, check)


@pytest.mark.parametrize("backend_name", [
    "reference", pytest.param("triton", marks=pytest.mark.slow)])
def test_cached_parameters_match_the_network_on_other_backends(backend_name):
    """The reference's dense convolutions round differently with the image size, so other
    backends agree to rounding, not to the bit."""
    if not genfast.backends()[backend_name].available:
        pytest.skip(genfast.backends()[backend_name].reason)
    data = ((3, 4, 5), 5)
    model = tiny(data, backend=backend_name).eval()
    (c, h, w), levels = data
    images = torch.randint(0, levels, (2, c, h, w))

    def check(cached, full):
        torch.testing.assert_close(cached, full, rtol=1e-5, atol=1e-5)

    walk_pixels(model, model.cached_stepper(2), images, check)


def test_reference_backend_draws_the_same_integers():
    """Rounding differences of the reference move a draw only where it falls within ~1e-6 of
    a bin edge: on this seed none does."""
    model = tiny(((1, 4, 5), 17), backend="reference")
    assert torch.equal(draw(model, 2, "cached"), draw(model, 2, "naive"))


def test_reference_and_fast_backend_agree():
    fast = tiny("digits", backend="cpu" if genfast.backends()["cpu"].available else None)
    reference = tiny("digits", backend="reference")
    reference.load_state_dict(fast.state_dict())
    images, _ = load_dataset("digits", "test").__getitems__(list(range(16)))
    torch.testing.assert_close(fast(images), reference(images), rtol=1e-5, atol=1e-3)


def test_nll_is_the_mixture_likelihood_of_the_network_output():
    model = tiny("rgb")
    images = torch.randint(0, 5, (3, 3, 5, 7))
    torch.testing.assert_close(model.evaluate(images)["nll_nats"],
                               logistic_mixture_nll_ref(images, model.params(images), 5),
                               rtol=1e-5, atol=1e-4)


def test_checkpoint_round_trip(tmp_path):
    model = tiny("rgb", mixtures=2)
    path = str(tmp_path / "checkpoint.pt")
    save_checkpoint(path, {"model": model.name, "config": model.config,
                           "state_dict": model.state_dict()})
    loaded = model_from_checkpoint(load_checkpoint(path))
    assert loaded.config == model.config and type(loaded) is type(model)
    images = torch.randint(0, 5, (2, 3, 5, 7))
    assert torch.equal(loaded.evaluate(images)["nll_nats"], model.evaluate(images)["nll_nats"])
    assert torch.equal(draw(loaded, 2, "cached"), draw(model, 2, "cached"))


def test_dropout_acts_in_training_only():
    model = tiny("digits", dropout=0.5)
    images = torch.randint(0, 17, (2, 1, 8, 8))
    model.train()
    assert not torch.equal(model(images), model(images))
    model.eval()
    assert torch.equal(model(images), model(images))


@pytest.mark.parametrize("hparams, message", [
    (dict(filters=0), "filters to be an int >= 1"),
    (dict(nr_resnet=1.5), "nr_resnet to be an int >= 1"),
    (dict(mixtures=-2), "mixtures to be an int >= 1"),
    (dict(dropout=1.0), r"dropout in \[0, 1\)"),
    (dict(backend="gpu"), "backend='gpu'"),
    (dict(image_shape=(2, 8, 8)), r"grey \(C=1\) or RGB"),
    (dict(levels=1), "levels must be at least 2"),
    (dict(nr_filters=8), "bad model hyperparameter for pixelcnn_pp"),
])
def test_bad_configs_give_clear_errors(hparams, message):
    config = {"image_shape": (1, 8, 8), "levels": 17, **hparams}
    with pytest.raises(ValueError, match=message):
        build_model("pixelcnn_pp", **config)


def test_bad_calls_give_clear_errors():
    model = tiny("digits")
    with pytest.raises(ValueError, match=r"built for images of shape \(1, 8, 8\)"):
        model(torch.zeros(2, 1, 7, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match="integer images"):
        model(torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="method must be one of"):
        model.sample(2, method="fast")
    with pytest.raises(ValueError, match="not conditional"):
        model.sample(2, conditioning=torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="positive int"):
        model.sample(0)


@pytest.mark.slow
def test_compiled_network_matches_eager():
    model = tiny("digits").eval()
    x = model.scaled(torch.randint(0, 17, (2, 1, 8, 8)))
    compiled = torch.compile(model.network, fullgraph=True)
    torch.testing.assert_close(compiled(x), model.network(x), rtol=1e-4, atol=1e-4)


def test_sampling_keeps_the_training_mode():
    model = tiny(((1, 4, 4), 5)).train()
    for method in ("cached", "naive"):
        images = model.sample(2, method=method)
        assert images.shape == (2, 1, 4, 4)
        assert model.training


def test_the_bench_estimates_naive_sampling_by_whole_pixels():
    """genfast bench's naive estimate steps a pixel at a time through model.naive_stepper."""
    from genfast.benchmark.sampling import estimate_naive_s

    model = tiny("rgb").eval()
    seconds = estimate_naive_s(model, 2, "cpu", steps=2)
    assert math.isfinite(seconds) and seconds > 0
