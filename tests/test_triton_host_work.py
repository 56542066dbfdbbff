"""The Triton launchers do no host work per call after the first (issue 19, CONVENTIONS.md).

Each Triton op runs twice with identical inputs, forward and backward. During the second run,
no code of genfast's (its launchers in genfast.kernels, the op wrappers in genfast.ops) may
build a tensor from Python data (torch.tensor, torch.arange, ...), move one to a device
(Tensor.to(device)) or read one back to the host (.item(), .tolist(), .cpu(), .numpy()), and
every cached table of kernels/_host.py must be a hit. Calls from Triton's own interpreter are
not counted: only frames of genfast's modules are, so the check means the same on a GPU.
The one read allowed is the reparameterization's seed, a CPU int64[2] drawn from torch's CPU
generator: turning it into the kernel's integers costs no device synchronisation. The reference
masked convolution, auto's choice on CUDA, is held to the same rule.
"""
import sys

import pytest
import torch

import genfast
from genfast.kernels import _host

requires_triton = pytest.mark.skipif(not genfast.backends()["triton"].available,
                                     reason=f"triton unavailable: "
                                            f"{genfast.backends()['triton'].reason}")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TENSOR_FACTORIES = ("tensor", "as_tensor", "arange", "from_numpy", "frombuffer")
TENSOR_READS = ("item", "tolist", "cpu", "numpy")


def _is_seed(t) -> bool:
    return t.device.type == "cpu" and t.dtype == torch.int64 and tuple(t.shape) == (2,)


@pytest.fixture
def host_work(monkeypatch):
    """A list that collects (what, caller module) for each host-side call genfast makes."""
    calls = []

    def from_genfast() -> str | None:
        module = sys._getframe(2).f_globals.get("__name__", "")
        return module if module.startswith("genfast") else None

    def watch(owner, name, counts=lambda *args, **kwargs: True):
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            module = from_genfast()
            if module and counts(*args, **kwargs):
                calls.append((name, module))
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, wrapper)

    for name in TENSOR_FACTORIES:
        watch(torch, name)
    for name in TENSOR_READS:
        watch(torch.Tensor, name, lambda t, *a, **k: not _is_seed(t))
    watch(torch.Tensor, "to", _moves_device)
    watch(torch.cuda, "synchronize")
    return calls


def _moves_device(t, *args, **kwargs) -> bool:
    """Whether a Tensor.to call names a device (or a tensor whose device it takes)."""
    return "device" in kwargs or any(
        isinstance(a, (torch.device, str, int, torch.Tensor)) and not isinstance(a, bool)
        for a in args)


def _masked_conv(window=None, bias=True):
    def run():
        torch.manual_seed(0)
        x = torch.randn(2, 6, 5, 7, device=DEVICE, requires_grad=True)
        weight = torch.randn(6, 6, 5, 5, device=DEVICE, requires_grad=True)
        b = torch.randn(6, device=DEVICE, requires_grad=True) if bias else None
        y = genfast.masked_conv2d(x, weight, b, "A", data_channels=3, window=window,
                                  backend="triton")
        return (y, *torch.autograd.grad(y.square().sum(), [x, weight]))
    return run


def _lstm_rows():
    torch.manual_seed(0)
    gates = torch.randn(2, 12, 4, 5, device=DEVICE, requires_grad=True)
    weight = torch.randn(12, 3, 3, device=DEVICE, requires_grad=True)
    h, c = genfast.lstm_rows(gates, weight, backend="triton")
    return (h, c, *torch.autograd.grad((h.sum() + c.square().sum()), [gates, weight]))


def _lstm_rows_grouped():
    torch.manual_seed(0)
    gates = torch.randn(4, 12, 4, 5, device=DEVICE, requires_grad=True)
    weight = torch.randn(2, 12, 3, 2, device=DEVICE, requires_grad=True)
    bias = torch.randn(2, 12, device=DEVICE, requires_grad=True)
    h, c = genfast.ops.lstm_rows_grouped(gates, weight, bias, pad_left=1, backend="triton")
    return (h, c, *torch.autograd.grad((h.sum() + c.square().sum()), [gates, weight, bias]))


def _reparam():
    mu = torch.linspace(-1, 1, 48, device=DEVICE).view(6, 8).requires_grad_()
    logvar = torch.linspace(-2, 1, 48, device=DEVICE).view(6, 8).requires_grad_()
    z, kl = genfast.reparameterize_kl(mu, logvar, generator=torch.Generator().manual_seed(3),
                                      backend="triton")
    return (z, kl, *torch.autograd.grad(z.square().sum() + kl, [mu, logvar]))


def _gated():
    x = torch.linspace(-3, 3, 2 * 8 * 3 * 5, device=DEVICE).view(2, 8, 3, 5).requires_grad_()
    y = genfast.gated_activation(x, backend="triton")
    return (y, *torch.autograd.grad(y.square().sum(), [x]))


OPS = {
    "masked_conv2d": _masked_conv(),
    "masked_conv2d-window-no-bias": _masked_conv(window=(1, 3, 2, 6), bias=False),
    "lstm_rows": _lstm_rows,
    "lstm_rows_grouped": _lstm_rows_grouped,
    "reparameterize_kl": _reparam,
    "gated_activation": _gated,
}


@requires_triton
@pytest.mark.parametrize("op", OPS)
def test_second_call_does_no_host_work(op, host_work):
    first = OPS[op]()
    host_work.clear()
    misses = {name: info.misses for name, info in _host.cache_info().items()}
    second = OPS[op]()
    assert host_work == [], f"host work in the second call of {op}: {host_work}"
    now = _host.cache_info()
    assert {name: info.misses for name, info in now.items()} == misses
    for got, want in zip(second, first):
        assert torch.equal(got, want), "a cached table changed a result"


def test_the_reference_masked_conv_keeps_its_mask(host_work):
    """auto's masked convolution on CUDA is the reference: its mask is built once, not copied
    from the host per call (the watch is the same; it needs no Triton)."""
    x, weight = torch.randn(1, 6, 5, 5, device=DEVICE), torch.randn(6, 6, 3, 3, device=DEVICE)
    first = genfast.masked_conv2d(x, weight, mask_type="A", data_channels=3, dilation=3,
                                  backend="reference")
    host_work.clear()
    second = genfast.masked_conv2d(x, weight, mask_type="A", data_channels=3, dilation=3,
                                   backend="reference")
    assert host_work == [] and torch.equal(first, second)


@requires_triton
def test_the_watch_sees_host_work(host_work):
    """The fixture counts genfast's calls: with the caches emptied, a call builds its tables."""
    for cache in _host.CACHES:
        cache.cache_clear()
    misses = sum(info.misses for info in _host.cache_info().values())
    x = torch.randn(1, 3, 4, 4, device=DEVICE)
    genfast.masked_conv2d(x, torch.randn(3, 3, 3, 3, device=DEVICE), mask_type="B",
                          dilation=2, backend="triton")
    assert any(module.startswith("genfast.kernels") for _, module in host_work), host_work
    assert sum(info.misses for info in _host.cache_info().values()) > misses


def test_caches_are_bounded():
    assert all(c.cache_info().maxsize is not None for c in _host.CACHES)
