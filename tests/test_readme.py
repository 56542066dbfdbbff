"""The README stays what a new user needs: two commands first, at most about 150 lines, and a
usage example and a swap example that run as written."""
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import genfast
from genfast.ops.masked_conv import conv_mask

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def test_opens_with_the_two_commands():
    first = README.read_text().split("```")[1]
    commands = first.splitlines()[1:]
    assert first.startswith("sh\n") and len(commands) == 2
    assert commands[0].endswith("genfast bench") and commands[1].endswith("python -m pytest")


def test_is_short():
    assert len(README.read_text().splitlines()) <= 150


def test_usage_example_runs():
    example = _blocks("python")[0]
    namespace = {}
    exec(compile(example, str(README), "exec"), namespace)
    assert namespace["h"].shape == (16, 64, 28, 28)
    assert namespace["images"].shape == (16, 1, 28, 28)
    assert namespace["z"].shape == (32, 16) and namespace["kl"].dim() == 0


class YourMaskedConv2d(nn.Conv2d):
    """A stand-in for someone's masked convolution: (mask_type, in, out, k), an interleaved RGB
    mask kept as a buffer and multiplied into the weight."""

    def __init__(self, mask_type, in_channels, out_channels, k):
        super().__init__(in_channels, out_channels, k, padding=k // 2)
        self.mask_type = mask_type
        mask = conv_mask(out_channels, in_channels, k, k, mask_type, 3, "interleaved")
        self.register_buffer("mask", mask)

    def forward(self, x):
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


def test_swap_example_runs(tmp_path, monkeypatch):
    """The swap example on a small RGB model of such layers and its checkpoint: afterwards no
    layer of theirs is left and the model gives the outputs it gave before."""
    example = _blocks("python")[1]
    torch.manual_seed(0)
    model = nn.Sequential(YourMaskedConv2d("A", 3, 12, 5), nn.ReLU(),
                          YourMaskedConv2d("B", 12, 6, 3))
    torch.save(model.state_dict(), tmp_path / "checkpoint.pt")
    x = torch.randn(2, 3, 5, 6)
    before = model(x).detach()
    monkeypatch.chdir(tmp_path)
    namespace = {"torch": torch, "genfast": genfast, "model": model,
                 "YourMaskedConv2d": YourMaskedConv2d}
    exec(compile(example, str(README), "exec"), namespace)
    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(layers) == 2 and all(type(m) is genfast.nn.MaskedConv2d for m in layers)
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-5)
