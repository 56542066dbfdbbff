"""torch.compile(fullgraph=True) of a small VAE training step that uses the fused op."""
import pytest
import torch
from torch import nn

import genfast
from genfast.ops.reparam import reparameterize_kl_ref

from conftest import requires_cuda

COMPILED_BACKENDS = [pytest.param(b, marks=[requires_cuda] if b == "cuda" else [])
                     for b in ("cpu", "cuda") if genfast.backends()[b].available]


class TinyVAE(nn.Module):
    def __init__(self, data=16, latent=4):
        super().__init__()
        self.encoder = nn.Linear(data, 2 * latent)
        self.decoder = nn.Linear(latent, data)

    def loss(self, x, sample_kl):
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        z, kl = sample_kl(mu, logvar)
        reconstruction = nn.functional.mse_loss(self.decoder(z), x, reduction="sum") / x.shape[0]
        return reconstruction + kl


def _step(loss_fn, model, x, sample_kl):
    model.zero_grad()
    loss = loss_fn(x, sample_kl)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.slow
@pytest.mark.parametrize("name", COMPILED_BACKENDS or [pytest.param("cpu", marks=pytest.mark.skip(
    reason="no compiled genfast backend available"))])
def test_compiled_vae_step(name):
    device = "cuda" if name == "cuda" else "cpu"
    torch.manual_seed(0)
    model = TinyVAE().to(device)
    x = torch.randn(8, 16, device=device)
    eps = torch.randn(8, 4, device=device)

    def fused(mu, logvar, eps=None):
        return genfast.reparameterize_kl(mu, logvar, eps=eps, reduction="batchmean", backend=name)

    torch._dynamo.reset()
    # The forward compiles as one graph; AOTAutograd compiles its backward.
    compiled_loss = torch.compile(model.loss, fullgraph=True)
    # With fixed noise the compiled step must equal eager PyTorch on the reference.
    loss, grads = _step(compiled_loss, model, x, lambda m, lv: fused(m, lv, eps))
    loss_ref, grads_ref = _step(model.loss, model, x, lambda m, lv: reparameterize_kl_ref(
        m, lv, eps=eps, reduction="batchmean"))
    torch.testing.assert_close(loss, loss_ref, rtol=1e-5, atol=1e-5)
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-5)

    # With in-kernel noise (the seed drawn inside the graph) it still traces whole, and trains.
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for _ in range(30):
        loss, _ = _step(compiled_loss, model, x, fused)
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) < sum(losses[:5])
