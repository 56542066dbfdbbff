"""Statistics of the in-kernel Gaussian generator, drawn through the public API.

Every seed is fixed, so each check has one deterministic outcome: the bounds are wide enough
(about 5 standard errors) that a correct generator passes and a broken one does not.
"""
import math

import pytest
import torch
from scipy import stats

import genfast


def _noise(backend, numel, num_samples=None, seed=0):
    name, device = backend
    # The interpreter is slow: keep its draws small.
    numel = min(numel, 1 << 14) if device == "cpu" and name == "triton" else numel
    zeros = torch.zeros(numel, device=device)
    torch.manual_seed(seed)
    z = genfast.reparameterize(zeros, zeros, num_samples=num_samples, backend=name)
    return z.double().cpu()


def test_mean_and_variance(backend):
    z = _noise(backend, 1 << 20)
    n = z.numel()
    assert abs(z.mean().item()) < 5 / math.sqrt(n)
    # The sample variance of n normals has standard error sqrt(2 / n).
    assert abs(z.var().item() - 1.0) < 5 * math.sqrt(2 / n)
    # Fourth moment of a normal is 3: catches a wrong shape with the right variance.
    assert abs((z**4).mean().item() - 3.0) < 5 * math.sqrt(96 / n)


def test_kolmogorov_smirnov_against_the_normal(backend):
    z = _noise(backend, 1 << 18, seed=1)
    assert stats.kstest(z.numpy(), "norm").pvalue > 1e-4


@pytest.mark.parametrize("lag", [1, 2, 3, 4, 5, 64])
def test_neighbours_are_uncorrelated(backend, lag):
    """Lags 1-3 fall inside one philox block (and one Box-Muller pair for lag 1); 4 and 5 cross
    into the next counter."""
    z = _noise(backend, 1 << 20, seed=2)
    r = torch.corrcoef(torch.stack([z[:-lag], z[lag:]]))[0, 1].item()
    assert abs(r) < 5 / math.sqrt(z.numel())


def test_samples_are_uncorrelated(backend):
    z = _noise(backend, 1 << 16, num_samples=4, seed=3)
    corr = torch.corrcoef(z)
    off_diagonal = corr[~torch.eye(4, dtype=torch.bool)]
    assert off_diagonal.abs().max().item() < 5 / math.sqrt(z.shape[1])


def test_box_muller_pairs_are_independent(backend):
    """Squares of the two halves of a pair share their radius: check they are uncorrelated."""
    z = _noise(backend, 1 << 20, seed=4)
    pairs = z[: z.numel() // 2 * 2].view(-1, 2)
    r = torch.corrcoef((pairs**2).t())[0, 1].item()
    assert abs(r) < 5 / math.sqrt(pairs.shape[0])


def test_seeds_give_repeatable_and_distinct_streams(backend):
    a, b, c = _noise(backend, 4096, seed=5), _noise(backend, 4096, seed=5), _noise(backend, 4096, seed=6)
    assert torch.equal(a, b)
    assert abs(torch.corrcoef(torch.stack([a, c]))[0, 1].item()) < 5 / math.sqrt(4096)
