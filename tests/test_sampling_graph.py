"""Cached sampling replayed from a CUDA graph (genfast.models.sampling_graph): the same images as
the eager cached sampler for the same seed, on the first call (capture) and on later ones
(replay), after in-place parameter updates and after the parameters are replaced. The GPU
tests skip here; the noise bookkeeping they rely on is checked on the CPU."""
import pytest
import torch

from genfast.models import build_model
from genfast.models.sampling import draw_images, draw_row, row_noise, uniform_noise

from test_sampling import MODELS, conditioning, make

requires_cuda = pytest.mark.requires_cuda
# The cached samplers of test_sampling.py's small models (one per kind of network).
GRAPH_MODELS = sorted(set(MODELS) - {"independent", "gated_pixelcnn"})


def test_row_noise_is_the_row_by_row_noise():
    shape, n = (3, 4, 5), 7
    upfront = row_noise(shape, n, torch.Generator().manual_seed(3), "cpu")
    generator = torch.Generator().manual_seed(3)
    by_row = [uniform_noise((shape[2], shape[0], n), generator, "cpu") for _ in range(shape[1])]
    assert upfront.shape == (shape[1], shape[2], shape[0], n)
    assert torch.equal(upfront, torch.stack(by_row))


def test_draw_rows_from_upfront_noise_is_draw_images():
    """What the graph replays (draw_row over noise drawn up front) draws what the eager loop
    draws."""
    model = make("pixelcnn", "rgb").eval()
    n = 3
    with torch.inference_mode():
        eager = draw_images(model.cached_stepper(n, None), n, model.image_shape,
                            torch.Generator().manual_seed(5), "cpu", False, "test")
        noise = row_noise(model.image_shape, n, torch.Generator().manual_seed(5), "cpu")
        images = torch.zeros_like(eager)
        stepper = model.cached_stepper(n, None)
        for i in range(model.image_shape[1]):
            draw_row(stepper, images, i, noise[i])
    assert torch.equal(images, eager)


def test_cuda_graph_needs_a_cuda_model_and_the_cached_method():
    model = build_model("pixelcnn", image_shape=(1, 4, 4), levels=3, channels=4, blocks=1)
    with pytest.raises(ValueError, match="CUDA device"):
        model.sample(2, cuda_graph=True)
    with pytest.raises(ValueError, match="method='cached'"):
        model.sample(2, method="naive", cuda_graph=True)


def _sample(model, n, seed, cond, cuda_graph):
    generator = torch.Generator(device="cuda").manual_seed(seed)
    return model.sample(n, generator=generator, conditioning=cond, cuda_graph=cuda_graph)


@requires_cuda
@pytest.mark.parametrize("key", GRAPH_MODELS)
def test_graph_draws_the_eager_cached_samples(key):
    model = make(key, "rgb").cuda()
    n = 5
    cond = conditioning(key, n)
    cond = None if cond is None else cond.cuda()
    for seed in (0, 1):  # capture, then replay
        assert torch.equal(_sample(model, n, seed, cond, True),
                           _sample(model, n, seed, cond, False))
    with torch.no_grad():  # in place, as an optimiser: the same graph, new weights
        for p in model.parameters():
            p.mul_(1.5)
    assert torch.equal(_sample(model, n, 2, cond, True), _sample(model, n, 2, cond, False))
    model.cpu().cuda()  # new parameter tensors: captured anew
    assert torch.equal(_sample(model, n, 3, cond, True), _sample(model, n, 3, cond, False))


@requires_cuda
def test_graph_replay_is_independent_of_the_returned_images():
    model = make("pixelcnn", "grey").cuda()
    first = _sample(model, 4, 0, None, True)
    kept = first.clone()
    _sample(model, 4, 1, None, True)
    assert torch.equal(first, kept)

