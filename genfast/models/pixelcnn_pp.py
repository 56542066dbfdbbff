"""PixelCNN++ (Salimans, Karpathy, Chen & Kingma 2017, "PixelCNN++: Improving the PixelCNN with
Discretized Logistic Mixture Likelihood and Other Modifications"; openai/pixel-cnn's model.py).

Two streams: ``u`` sees the rows above a pixel, ``ul`` the rows above and the pixels to its
left (the layers are in pixelcnn_pp_layers). An up pass of gated ResNet blocks at three
resolutions (full, 1/2, 1/4; strided convolutions between them) keeps every block's output; a
down pass (transposed convolutions back up) feeds them in again as shortcuts, u's to u and
[u, ul's] to ul. The output, nin(elu(ul)), holds the parameters of a discretized mixture of
logistics per pixel (genfast.ops.logistic_mixture's layout), which models all of a pixel's
colours at once, so the network never sees any of the current pixel.

Sampling draws whole pixels: one uniform for the mixture component and one per colour, a row's
worth from the generator at a time, the same for the naive sampler (the whole network per
pixel) and the cached one (pixelcnn_pp_sampler), which therefore draw the same integers.
"""
from __future__ import annotations

import torch
from torch import nn

from genfast.models.autoregressive import AutoregressiveModel
from genfast.models.base import register
from genfast.models.hparams import check_backend, check_positive_int
from genfast.models.pixelcnn_pp_layers import (DownRightShiftedConv2d, DownShiftedConv2d,
                                               GatedResnet, down_shift, elu, pointwise,
                                               right_shift, zero_insert)
from genfast.models.sampling import METHODS, uniform_noise
from genfast.nn import MaskedConv2d
from genfast.ops import logistic_mixture

# The sampler takes the uniforms both sampling methods draw a row at a time (so cached and
# naive consume the same noise); the fused op genfast.ops.logistic_mixture_sample draws its
# own from a seed instead. A pixel's draw is tiny next to the network's step.
mixture_sample = logistic_mixture.logistic_mixture_sample_ref

SCALES = 3  # full, 1/2 and 1/4 resolution


def scale_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """(H, W) of each resolution: a stride-2 layer keeps the even rows and columns."""
    sizes = [(height, width)]
    for _ in range(SCALES - 1):
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


class StreamBlock(nn.Module):
    """One gated ResNet block of each stream. ``u_aux`` and ``ul_aux``: channels of their
    shortcut inputs (up pass: none for u, the new u for ul; down pass: u's skip for u,
    [new u, ul's skip] for ul)."""

    def __init__(self, filters: int, u_aux: int, ul_aux: int, dropout: float,
                 backend: str | None):
        super().__init__()
        self.u = GatedResnet(filters, DownShiftedConv2d, u_aux, dropout, backend)
        self.ul = GatedResnet(filters, DownRightShiftedConv2d, ul_aux, dropout, backend)


@register("pixelcnn_pp")
class PixelCNNPP(AutoregressiveModel):
    """PixelCNN++ over images [B, C, H, W] (C = 1 or 3) with values in [0, levels).

    Args:
        image_shape: (C, H, W); any H, W (the 1/2 and 1/4 maps round up).
        levels: values per colour (256; 17 for digits).
        filters: channels of both streams (nr_filters; the paper's CIFAR-10 model has 160).
        nr_resnet: gated ResNet blocks per resolution in the up pass (the down pass has one
            more at the two finer ones); the paper's has 5.
        mixtures: logistic mixture components per pixel (nr_logistic_mix; 10 in the paper).
        dropout: dropout probability inside each block (0.5 in the paper).
        backend: genfast backend of every convolution (None: genfast's default).
    """

    def __init__(self, image_shape, levels, filters: int = 32, nr_resnet: int = 1,
                 mixtures: int = 5, dropout: float = 0.5, backend: str | None = None):
        super().__init__(image_shape, levels, filters=filters, nr_resnet=nr_resnet,
                         mixtures=mixtures, dropout=dropout, backend=backend)
        for name, value in (("filters", filters), ("nr_resnet", nr_resnet),
                            ("mixtures", mixtures)):
            check_positive_int(value, name, "pixelcnn_pp")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) \
                or not 0 <= dropout < 1:
            raise ValueError(f"genfast: pixelcnn_pp needs dropout in [0, 1), got {dropout!r}")
        check_backend(backend, "pixelcnn_pp")
        colours = self.image_shape[0]
        self.filters, self.nr_resnet, self.mixtures = filters, nr_resnet, mixtures
        self.backend = backend
        # The input gets a channel of ones, so the first layers tell the image from padding.
        self.first_u = DownShiftedConv2d(colours + 1, filters, backend)            # 2 x 3
        self.first_ul_above = MaskedConv2d(colours + 1, filters, (1, 3), "V",      # 1 x 3
                                           backend=backend)
        self.first_ul_left = MaskedConv2d(colours + 1, filters, (3, 1), "V",       # 2 x 1
                                          backend=backend)
        f = filters
        self.up = nn.ModuleList(
            nn.ModuleList(StreamBlock(f, 0, f, dropout, backend) for _ in range(nr_resnet))
            for _ in range(SCALES))
        self.downsample = nn.ModuleList(
            nn.ModuleList([DownShiftedConv2d(f, f, backend, stride=2),
                           DownRightShiftedConv2d(f, f, backend, stride=2)])
            for _ in range(SCALES - 1))
        # down[s] runs at scale s; the coarsest has nr_resnet blocks, the others one more.
        self.down = nn.ModuleList(
            nn.ModuleList(StreamBlock(f, f, 2 * f, dropout, backend)
                          for _ in range(nr_resnet + (s < SCALES - 1)))
            for s in range(SCALES))
        # upsample[s] brings scale s + 1 up to scale s.
        self.upsample = nn.ModuleList(
            nn.ModuleList([DownShiftedConv2d(f, f, backend),
                           DownRightShiftedConv2d(f, f, backend)])
            for _ in range(SCALES - 1))
        self.out = pointwise(f, mixtures * logistic_mixture.params_per_mixture(colours),
                             backend)
        self.sizes = scale_sizes(*self.image_shape[1:])

    # -- the network ----------------------------------------------------------------------
    def network(self, x, labels=None):
        """Scaled images x [B, C, H, W] in [-1, 1] -> mixture parameters [B, P, H, W]."""
        return self.out(elu(self.streams(x)[1]))

    def streams(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two streams at full resolution after the down pass, (u, ul), each
        [B, filters, H, W]: u at row i sees rows < i, ul at (i, j) the pixels before it."""
        x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
        u = down_shift(self.first_u(x))
        ul = down_shift(self.first_ul_above(x)) + right_shift(self.first_ul_left(x))
        up_u, up_ul = [], []  # per scale, the outputs the down pass reads as shortcuts
        for s in range(SCALES):
            if s > 0:
                u, ul = self.downsample[s - 1][0](u), self.downsample[s - 1][1](ul)
            scale_u, scale_ul = [u], [ul]
            for block in self.up[s]:
                u = block.u(u)
                ul = block.ul(ul, u)
                scale_u.append(u)
                scale_ul.append(ul)
            up_u.append(scale_u)
            up_ul.append(scale_ul)
        for s in reversed(range(SCALES)):
            skips_u, skips_ul = up_u[s], up_ul[s]
            if s == SCALES - 1:  # the last up-pass outputs start the down pass
                u, ul = skips_u.pop(), skips_ul.pop()
            else:
                height, width = self.sizes[s]
                u = self.upsample[s][0](zero_insert(u, height, width))
                ul = self.upsample[s][1](zero_insert(ul, height, width))
            for block in self.down[s]:
                u = block.u(u, skips_u.pop())
                ul = block.ul(ul, torch.cat([u, skips_ul.pop()], dim=1))
        return u, ul

    def params(self, images: torch.Tensor) -> torch.Tensor:
        """Integer images [B, C, H, W] -> mixture parameters [B, P, H, W]."""
        return self.network(self.scaled(images))

    def nll(self, images, labels=None):
        """Negative log-likelihood in nats of each image under the mixture: [B]."""
        self.check_images(images)
        return logistic_mixture.logistic_mixture_nll(images, self.params(images), self.levels,
                                                     backend=self.backend)

    def logits(self, images, labels=None):
        raise NotImplementedError("genfast: pixelcnn_pp outputs mixture parameters, not "
                                  "logits; see params()")

    # -- sampling -------------------------------------------------------------------------
    def draw_pixel(self, params: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
        """One pixel of each image from its mixture parameters [n, P, 1, 1] and uniforms
        [n, 1 + C]: int64 [n, C]. Both samplers call this on equal inputs."""
        c = self.image_shape[0]
        return mixture_sample(params.contiguous(), c, uniform.view(-1, 1 + c, 1, 1),
                              self.levels)[:, :, 0, 0]

    def cached_stepper(self, n, labels=None):
        from genfast.models.pixelcnn_pp_sampler import PixelCNNPPStepper

        return PixelCNNPPStepper(self, n)

    def naive_stepper(self, n):
        return NaivePixelStepper(self, n)

    def sample(self, n, *, conditioning=None, labels=None, data=None, generator=None,
               method="cached", progress=False):
        """n images [n, C, H, W] (int64), drawn pixel by pixel in raster order, all colours
        of a pixel at once. ``method``: "cached" or "naive" (the whole network per pixel),
        which draw the same integers; the other arguments as AutoregressiveModel.sample (the
        model is unconditional)."""
        if method not in METHODS:
            raise ValueError(f"genfast: method must be one of {METHODS}, got {method!r}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"genfast: n must be a positive int, got {n!r}")
        if conditioning is not None or labels is not None:
            raise ValueError("genfast: pixelcnn_pp is not conditional; conditioning must be "
                             "None")
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                stepper = (self.cached_stepper(n) if method == "cached"
                           else self.naive_stepper(n))
                images = draw_pixels(self, stepper, n, generator, progress,
                                     f"{self.name} {method} sampling")
            return images.clone()
        finally:
            self.train(was_training)


class NaivePixelStepper:
    """The whole network on the whole partly drawn image for each pixel."""

    def __init__(self, model: PixelCNNPP, n: int):
        self.model = model
        device = next(model.parameters()).device
        self.images = torch.zeros(n, *model.image_shape, dtype=torch.int64, device=device)

    def start_row(self, i: int) -> None:
        pass

    def params(self, i: int, j: int) -> torch.Tensor:
        return self.model.params(self.images)[:, :, i:i + 1, j:j + 1]

    def set_pixel(self, i: int, j: int, values: torch.Tensor) -> None:
        self.images[:, :, i, j] = values


def draw_pixels(model: PixelCNNPP, stepper, n: int, generator, progress: bool,
                description: str) -> torch.Tensor:
    """Runs ``stepper`` (start_row, params, set_pixel) over the pixels in raster order:
    int64 [n, C, H, W]. The uniforms come a row at a time, [W, n, 1 + C], for any stepper."""
    from tqdm import tqdm

    c, h, w = model.image_shape
    device = next(model.parameters()).device
    images = torch.zeros(n, c, h, w, dtype=torch.int64, device=device)
    rows = tqdm(range(h), desc=description, unit="row", disable=None if progress else True,
                leave=False)
    for i in rows:
        uniform = uniform_noise((w, n, 1 + c), generator, device)
        stepper.start_row(i)
        for j in range(w):
            values = model.draw_pixel(stepper.params(i, j), uniform[j])
            images[:, :, i, j] = values
            stepper.set_pixel(i, j, values)
    return images
