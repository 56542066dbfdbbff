"""pytest-benchmark of sampling the autoregressive models, cached against naive.

Each case of genfast/benchmark/sampling.py at its quick (small-image) size, both methods, so
pytest-benchmark's table shows the ratio; ``genfast bench --op sample_pixelcnn`` runs the full
28x28 size the targets are set at.
"""
import pytest
import torch

from genfast.benchmark import default_device
from genfast.benchmark.sampling import CASES, case_model


@pytest.mark.parametrize("method", ["naive", "cached"])
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_sampling(benchmark, case, method):
    device = default_device()
    model = case_model(case, device, quick=True)

    def run():
        images = model.sample(case.batch, method=method,
                              generator=torch.Generator(device=device).manual_seed(1))
        if device == "cuda":
            torch.cuda.synchronize()
        return images

    benchmark.group = f"{case.name} ({case.label(quick=True)}) on {device}"
    benchmark.extra_info.update(op=case.name, method=method, device=device)
    images = benchmark.pedantic(run, rounds=3 if method == "cached" else 1, iterations=1)
    assert images.shape == (case.batch, *case.shape(quick=True))
