"""The latent-variable models: VAE, AutoEncoder and DCGAN (standard and LSGAN losses).

Tiny networks trained for a few steps on scikit-learn's digits, so the file runs in well under
a minute on one CPU core.
"""
import io
import math

import pytest
import torch

import genfast
from genfast.data import load_dataset
from genfast.models import MODELS, build_model
from genfast.models.linear_probe import few_label_accuracy, pick_per_class
from genfast.models.nearest_neighbour import nearest_rms_distances
from genfast.ops import gaussian_kl_ref

TINY = {"vae": {"latent_dim": 4, "width": 8, "iw_samples": 8},
        "autoencoder": {"latent_dim": 8, "width": 8},
        "dcgan": {"latent_dim": 8, "width": 8}}
FAST_VAE_BACKENDS = ["reference"] + (["cpu"] if genfast.backends()["cpu"].available else [])


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train")


@pytest.fixture(scope="module")
def digits_test():
    return load_dataset("digits", "test")


def tiny(name, data, **overrides):
    torch.manual_seed(0)
    return build_model(name, image_shape=data.image_shape, levels=data.levels,
                       **{**TINY[name], **overrides})


def batch(data, n=64, start=0):
    return data.images[start:start + n].long()


def train(model, images, steps, lr=3e-3, stages=None):
    """A few Adam steps on one batch, stage by stage; returns each stage's losses."""
    stages = stages or model.stages
    optimizers = {s: torch.optim.Adam(model.stage_parameters(s), lr=lr, betas=(0.5, 0.999))
                  for s in stages}
    losses = {s: [] for s in stages}
    for _ in range(steps):
        for s in stages:
            optimizers[s].zero_grad(set_to_none=True)
            loss = model(images, stage=s)
            loss.backward()
            optimizers[s].step()
            losses[s].append(loss.item())
    return losses


def mean_loss(model, images, stage, draws=8):
    """The stage's loss averaged over a few noise draws, so a decrease is not luck."""
    torch.manual_seed(1)
    with torch.no_grad():
        return sum(model(images, stage=stage).item() for _ in range(draws)) / draws


# ----------------------------------------------------------------------------- training

@pytest.mark.parametrize("binarize", [False, True], ids=["categorical", "bernoulli"])
@pytest.mark.parametrize("backend", FAST_VAE_BACKENDS)
def test_vae_loss_goes_down(backend, binarize):
    data = load_dataset("digits", "train", binarize=binarize)
    model, images = tiny("vae", data, backend=backend), batch(data)
    before = mean_loss(model, images, "loss")
    train(model, images, steps=40)
    after = mean_loss(model, images, "loss")
    assert after < 0.85 * before, (before, after)


def test_autoencoder_loss_goes_down(digits):
    model, images = tiny("autoencoder", digits), batch(digits)
    before = model.evaluate(images)["recon_mse"].mean().item()
    train(model, images, steps=40)
    after = model.evaluate(images)["recon_mse"].mean().item()
    assert after < 0.7 * before, (before, after)


@pytest.mark.parametrize("loss", ["standard", "lsgan"])
def test_dcgan_players_each_improve_and_train_together(digits, loss):
    model, images = tiny("dcgan", digits, loss=loss), batch(digits)
    # Against a frozen generator the discriminator learns to tell real from fake ...
    d_before = mean_loss(model, images, "discriminator")
    train(model, images, steps=15, stages=("discriminator",))
    d_after = mean_loss(model, images, "discriminator")
    assert d_after < 0.8 * d_before, (d_before, d_after)
    # ... and against that frozen discriminator the generator learns to fool it.
    g_before = mean_loss(model, images, "generator")
    discriminator = [p.clone() for p in model.discriminator.parameters()]
    train(model, images, steps=15, stages=("generator",))
    assert mean_loss(model, images, "generator") < g_before
    for p, p0 in zip(model.discriminator.parameters(), discriminator):
        assert torch.equal(p, p0), "the generator stage must not step the discriminator"
    # Alternating, both stages move their own parameters and the held-out score is finite.
    generator = [p.clone() for p in model.generator.parameters()]
    losses = train(model, images, steps=5)
    assert all(math.isfinite(v) for vs in losses.values() for v in vs)
    assert any(not torch.equal(p, p0) for p, p0 in zip(model.generator.parameters(), generator))
    model.eval()
    scores = model.evaluate(batch(digits, 32, start=64))
    assert set(scores) == {"nn_sample_to_test", "nn_test_to_sample"}
    for value in scores.values():
        assert value.shape == (32,) and torch.isfinite(value).all()
        assert (value >= 0).all() and (value <= 1).all()


def test_stage_parameters_split_the_gan(digits):
    model = tiny("dcgan", digits)
    d = {id(p) for p in model.stage_parameters("discriminator")}
    g = {id(p) for p in model.stage_parameters("generator")}
    assert d and g and not d & g and d | g == {id(p) for p in model.parameters()}


# ----------------------------------------------------------------------------- VAE bounds

def test_vae_importance_sampled_nll_is_below_the_elbo(digits):
    model = tiny("vae", digits)
    train(model, batch(digits), steps=30)
    torch.manual_seed(2)
    metrics = model.evaluate(batch(digits, 32, start=64), iw_samples=200)
    elbo, iw = metrics["elbo_nats"], metrics["iw_nll_nats"]
    assert elbo.shape == iw.shape == (32,)
    assert iw.mean() < elbo.mean()
    assert (iw <= elbo + 0.5).all()


def test_vae_one_importance_sample_is_the_elbo_in_expectation(digits):
    model = tiny("vae", digits)
    train(model, batch(digits), steps=10)
    torch.manual_seed(3)
    images = batch(digits, 16).repeat(128, 1, 1, 1)
    metrics = model.evaluate(images, iw_samples=1)
    # With k = 1 the two differ only by a sampled KL against the closed form (mean zero).
    difference = metrics["iw_nll_nats"] - metrics["elbo_nats"]
    standard_error = difference.std() / math.sqrt(difference.numel())
    assert difference.mean().abs() < 4 * standard_error + 1e-6


@pytest.mark.parametrize("binarize", [False, True], ids=["categorical", "bernoulli"])
def test_vae_uniform_decoder_gives_log_levels_per_dimension(binarize):
    data = load_dataset("digits", "train", binarize=binarize)
    model, images = tiny("vae", data, iw_samples=64), batch(data, 16)
    last = model.decoder[-1]
    with torch.no_grad():  # zero logits: every level equally likely, whatever z is
        last.weight.zero_()
        last.bias.zero_()
    mu, logvar = model.posterior(images)
    kl = gaussian_kl_ref(mu, logvar, reduction="none").sum(-1).detach()
    dims_times_log_levels = math.prod(data.image_shape) * math.log(data.levels)
    metrics = model.evaluate(images)
    torch.testing.assert_close(metrics["elbo_nats"], dims_times_log_levels + kl)
    # With q(z|x) = p(z) as well (zero encoder output: mu = 0, logvar = 0) every importance
    # weight is exactly p(x|z) = levels^-dims, so the estimate is exact and equals the ELBO.
    with torch.no_grad():
        model.encoder[-1].weight.zero_()
        model.encoder[-1].bias.zero_()
    metrics = model.evaluate(images)
    exact = torch.full((16,), dims_times_log_levels)
    torch.testing.assert_close(metrics["elbo_nats"], exact)
    torch.testing.assert_close(metrics["iw_nll_nats"], exact)


def test_vae_backends_compute_the_same_model(digits):
    if len(FAST_VAE_BACKENDS) < 2:
        pytest.skip("genfast's cpu backend is not available")
    reference = tiny("vae", digits, backend="reference")
    fast = tiny("vae", digits, backend="cpu")
    fast.load_state_dict(reference.state_dict())
    images = batch(digits, 32)
    torch.manual_seed(4)
    a = reference.evaluate(images, iw_samples=64)["iw_nll_nats"].mean()
    b = fast.evaluate(images, iw_samples=64)["iw_nll_nats"].mean()
    torch.testing.assert_close(a, b, rtol=0.02, atol=0.0)


@pytest.mark.parametrize("image_shape,levels", [((1, 8, 8), 17), ((3, 12, 12), 5)])
def test_vae_channels_last_decoder_gives_the_reference_likelihood(image_shape, levels):
    """The cpu backend's channels_last decoder and its likelihood over contiguous levels:
    the same logits, log p(x|z) and parameter gradients as the reference backend's NCHW ones,
    for grey and RGB (the [B, H, W, C, levels] view)."""
    if len(FAST_VAE_BACKENDS) < 2:
        pytest.skip("genfast's cpu backend is not available")
    models = []
    for backend in ("reference", "cpu"):
        torch.manual_seed(0)
        models.append(build_model("vae", image_shape=image_shape, levels=levels, latent_dim=4,
                                  width=8, backend=backend).double())
    torch.manual_seed(1)
    z = torch.randn(5, 4, dtype=torch.float64)
    images = torch.randint(0, levels, (5, *image_shape))
    results = []
    for model in models:
        logits = model.decoder_logits(z)
        log_prob = model.reconstruction_log_prob(logits, images)
        grads = torch.autograd.grad(log_prob.sum(), list(model.decoder.parameters()))
        results.append((logits, log_prob, grads))
    (ref_logits, ref_lp, ref_grads), (logits, lp, grads) = results
    assert logits.stride(2) == 1 and ref_logits.stride(2) != 1  # the two paths ran
    torch.testing.assert_close(logits, ref_logits)
    torch.testing.assert_close(lp, ref_lp)
    for g, g_ref in zip(grads, ref_grads):
        torch.testing.assert_close(g, g_ref)


# ----------------------------------------------------------------------------- AE features

def test_autoencoder_features_feed_a_few_label_classifier(digits, digits_test):
    model = tiny("autoencoder", digits, latent_dim=16)
    train(model, batch(digits, 256), steps=60)
    model.eval()
    assert model.encode(batch(digits, 5)).shape == (5, 16)
    result = few_label_accuracy(model.encode, digits.images.long(), digits.labels,
                                digits_test.images.long(), digits_test.labels, per_class=5)
    assert result["labelled"] == 50
    # Ten classes: chance is 0.1. Both inputs must carry the digit's identity.
    assert result["features_accuracy"] > 0.5 and result["pixels_accuracy"] > 0.5


def test_pick_per_class_needs_enough_examples():
    labels = torch.tensor([0, 0, 0, 1, 1])
    assert sorted(labels[pick_per_class(labels, 2)].tolist()) == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="class 1 has 2 examples"):
        pick_per_class(labels, 3)


def test_nearest_rms_distances():
    a = torch.zeros(2, 1, 2, 2)
    b = torch.stack([torch.zeros(1, 2, 2), torch.ones(1, 2, 2), torch.full((1, 2, 2), 0.5)])
    to_b, to_a = nearest_rms_distances(a, b)
    torch.testing.assert_close(to_b, torch.zeros(2))
    torch.testing.assert_close(to_a, torch.tensor([0.0, 1.0, 0.5]))


# ----------------------------------------------------------------------------- checkpoints

def _reload(model):
    buffer = io.BytesIO()
    torch.save({"name": model.name, "config": model.config, "state": model.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    copy = build_model(saved["name"], **saved["config"])
    copy.load_state_dict(saved["state"])
    return copy.eval()


@pytest.mark.parametrize("name", ["vae", "autoencoder", "dcgan"])
def test_state_dict_round_trip_gives_identical_outputs(digits, name):
    model, images = tiny(name, digits), batch(digits, 16)
    train(model, images, steps=2)  # moves the weights and the batchnorm statistics
    model.eval()
    copy = _reload(model)
    assert copy.config == model.config
    for m in (model, copy):
        torch.manual_seed(5)
        m.outputs = (m.evaluate(images), m.sample(4, data=images,
                                                  generator=torch.Generator().manual_seed(6)))
    assert torch.equal(model.outputs[1], copy.outputs[1])
    for key, value in model.outputs[0].items():
        assert torch.equal(value, copy.outputs[0][key]), key


# ----------------------------------------------------------------------------- samples

@pytest.mark.parametrize("name", ["vae", "autoencoder", "dcgan"])
@pytest.mark.parametrize("shape,levels", [((1, 8, 8), 17), ((1, 8, 8), 2), ((1, 28, 28), 256),
                                          ((3, 12, 12), 5)])
def test_sample_shapes_and_ranges(name, shape, levels):
    torch.manual_seed(0)
    model = build_model(name, image_shape=shape, levels=levels, **TINY[name]).eval()
    data = torch.randint(0, levels, (6, *shape))
    samples = model.sample(5, data=data, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (5, *shape) and samples.dtype == torch.int64
    assert samples.min() >= 0 and samples.max() < levels
    metrics = model.evaluate(data)
    assert all(v.shape == (6,) and torch.isfinite(v).all() for v in metrics.values())


@pytest.mark.parametrize("name", ["vae", "autoencoder", "dcgan"])
def test_uint8_images_as_stored_by_the_dataset(digits, name):
    model = tiny(name, digits)
    stored = digits.images[:4]  # uint8, as ImageDataset keeps them
    assert stored.dtype == torch.uint8
    torch.manual_seed(0)
    a = model(stored, stage=model.stages[0])
    torch.manual_seed(0)
    torch.testing.assert_close(a, model(stored.long(), stage=model.stages[0]))


def test_autoencoder_sample_needs_data(digits):
    model = tiny("autoencoder", digits)
    with pytest.raises(ValueError, match="needs data="):
        model.sample(3)
    with pytest.raises(ValueError, match="3 reconstructions of 2 images"):
        model.sample(3, data=batch(digits, 2))


# ----------------------------------------------------------------------------- bad input

def test_registered_names():
    assert {"vae", "autoencoder", "dcgan"} <= set(MODELS)


@pytest.mark.parametrize("name", ["vae", "autoencoder", "dcgan"])
@pytest.mark.parametrize("shape", [(1, 10, 10), (1, 8, 12), (1, 2, 2), (8, 8), (0, 8, 8)])
def test_unsupported_image_shape_is_a_clear_error(name, shape):
    with pytest.raises(ValueError, match="image_shape"):
        build_model(name, image_shape=shape, levels=17)


@pytest.mark.parametrize("name", ["vae", "autoencoder", "dcgan"])
def test_bad_batches_are_clear_errors(digits, name):
    model = tiny(name, digits)
    stage = model.stages[0]
    with pytest.raises(ValueError, match=r"built for images \[B, 1, 8, 8\]"):
        model(torch.zeros(4, 1, 28, 28, dtype=torch.long), stage=stage)
    with pytest.raises(TypeError, match="integer images"):
        model(torch.zeros(4, 1, 8, 8), stage=stage)
    with pytest.raises(ValueError, match=r"values in \[0, 17\)"):
        model(torch.full((4, 1, 8, 8), 17), stage=stage)
    with pytest.raises(ValueError, match="stage"):
        model(batch(digits, 4), stage="nonsense")
    with pytest.raises(ValueError, match="n to be an int >= 1"):
        model.sample(0, data=batch(digits, 4))


@pytest.mark.parametrize("name,hparams,match", [
    ("vae", {"latent_dim": 0}, "latent_dim"),
    ("vae", {"iw_samples": 2.5}, "iw_samples"),
    ("vae", {"backend": "gpu"}, "backend"),
    ("vae", {"levels": 1}, "levels >= 2"),
    ("autoencoder", {"width": -1}, "width"),
    ("dcgan", {"loss": "wasserstein"}, "loss must be one of"),
    ("dcgan", {"backend": "fast"}, "backend"),
])
def test_bad_hyperparameters_are_clear_errors(name, hparams, match):
    config = {"image_shape": (1, 8, 8), "levels": 17, **hparams}
    with pytest.raises(ValueError, match=match):
        build_model(name, **config)


def test_dcgan_unknown_stage_parameters(digits):
    with pytest.raises(ValueError, match="stages are"):
        tiny("dcgan", digits).stage_parameters("loss")
