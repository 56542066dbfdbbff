"""Drawing images from the autoregressive models, one pixel and one colour at a time.

Two methods give the same integers for the same generator seed:

* ``naive`` runs the whole network on the whole (partly drawn) image for every pixel and colour:
  H * W * C full forward passes.
* ``cached`` (Ramachandran et al. 2017, "Fast Generation for Convolutional Autoregressive
  Models") keeps every layer's activations from the pixels already drawn and, for a new pixel,
  evaluates each layer only there: masked convolutions on a one-pixel window of their cached
  input (``MaskedConv2d.forward_window``), the LSTM recurrences on the few states the pixel
  reads. Work that depends on whole rows (the Gated PixelCNN's vertical stack, the Diagonal
  BiLSTM's right-to-left direction) runs once per row. Each model builds its own
  :class:`PixelStepper`; the loop, the draw and the progress bar live here.

Both methods draw with :func:`draw_categorical` from logits computed by the same kernels on
the same inputs, so the samples agree exactly, not only in distribution.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from genfast import _backend
from genfast.ops import masked_conv, sample_draw

METHODS = ("cached", "naive")


def uniform_noise(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    """U(0, 1) float64 of ``shape`` on ``device``, the noise of :func:`draw_categorical`;
    drawn on the generator's device (a CUDA model may sample with a CPU generator) and moved."""
    noise_device = generator.device if generator is not None else device
    noise = torch.rand(shape, dtype=torch.float64, generator=generator, device=noise_device)
    return noise.to(device)


def draw_categorical(logits: torch.Tensor, generator: torch.Generator | None = None,
                     uniform: torch.Tensor | None = None) -> torch.Tensor:
    """One draw per row of ``logits`` [n, levels] from softmax(logits): int64 [n], by inverse
    CDF (genfast.ops.sample_draw) with ``uniform`` [n] drawn beforehand (:func:`uniform_noise`)
    or drawn from ``generator`` here."""
    if uniform is None:
        uniform = uniform_noise(logits.shape[0], generator, logits.device)
    return sample_draw.categorical_draw(logits, uniform)


class PixelStepper:
    """The logits of one pixel at a time, in raster order. Subclasses keep whatever caches
    they need; :func:`draw_images` calls, for each row i, ``start_row(i)`` once, then for each
    pixel j and colour k ``draw(i, j, k, uniform)`` and ``set_value(i, j, k, values)``.
    """

    def start_row(self, i: int) -> None:
        """Row i is about to be drawn: rows < i are complete."""

    def logits(self, i: int, j: int, k: int) -> torch.Tensor:
        """[n, levels] logits of colour k at pixel (i, j), given every earlier value."""
        raise NotImplementedError

    def draw(self, i: int, j: int, k: int, uniform: torch.Tensor) -> torch.Tensor:
        """Colour k of pixel (i, j) drawn with ``uniform`` [n]: int64 [n]. A stepper may fuse
        the draw with its output layer; the result must equal this one."""
        return draw_categorical(self.logits(i, j, k), uniform=uniform)

    def set_value(self, i: int, j: int, k: int, values: torch.Tensor) -> None:
        """Colour k of pixel (i, j) is now ``values`` (int64 [n])."""
        raise NotImplementedError


class NaiveStepper(PixelStepper):
    """The whole network on the whole image for each pixel and colour."""

    def __init__(self, model, n: int, labels: torch.Tensor | None):
        self.model, self.labels = model, labels
        device = next(model.parameters()).device
        self.images = torch.zeros(n, *model.image_shape, dtype=torch.int64, device=device)

    def logits(self, i, j, k):
        return self.model.logits(self.images, self.labels)[:, :, k, i, j]

    def set_value(self, i, j, k, values):
        self.images[:, k, i, j] = values


class CachedStepper(PixelStepper):
    """Base of the cached steppers: keeps the scaled image the first layer reads (the values
    written so far, zeros elsewhere, as the naive method's image), and prepares the layers'
    calls on windows and pixels."""

    def __init__(self, model, n: int):
        self.model, self.n = model, n
        parameter = next(model.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype
        self.height, self.width = model.image_shape[1:]
        self.image = model.scaled(torch.zeros(n, *model.image_shape, dtype=torch.int64,
                                              device=self.device))
        self.scale = 2.0 / (model.levels - 1)

    def cache(self, channels: int, dtype: torch.dtype | None = None) -> torch.Tensor:
        """A zeroed [n, channels, H, W] activation cache, channels last: a pixel's channels
        are written together and read together by the kernels' window gathers."""
        return torch.empty(self.n, channels, self.height, self.width, device=self.device,
                           dtype=dtype or self.dtype,
                           memory_format=torch.channels_last).zero_()

    def at_pixel(self, layer) -> Callable[[torch.Tensor], torch.Tensor]:
        """A 1x1 genfast MaskedConv2d as a prepared call on one pixel's [n, C, 1, 1]."""
        example = torch.empty(self.n, layer.in_channels, 1, 1, device=self.device,
                              dtype=self.dtype)
        conv = masked_conv.masked_conv2d_on_windows(
            example, layer.weight, layer.bias, layer.mask_type, layer.data_channels,
            layer.dilation[0], backend=layer.backend, colour_layout=layer.colour_layout)
        return lambda x: conv(x, [])  # no window: the whole (one-pixel) input

    def output_layer(self, layer) -> tuple[Callable, Callable]:
        """A sampler's last 1x1 MaskedConv2d (C * levels outputs, grouped by colour as
        split_colour_logits reads them) as ``logits(x, k)`` -> colour k's logits [n, levels]
        and ``draw(x, k, uniform)`` -> int64 [n], for x [n, C_in, 1, 1] (after its ReLU).
        ``draw`` is one call of genfast::pointwise_categorical_draw (colour k's outputs only,
        then the draw) when the layer runs on the cpu backend, whose bits that op reproduces,
        and its outputs are colour-major (the contiguous layout) as that op reads them."""
        colours, levels = self.model.image_shape[0], self.model.levels
        at_pixel = self.at_pixel(layer)
        interleaved = layer.colour_layout == "interleaved"

        def logits(x, k):
            # Colour-major outputs, or level-major when interleaved (see split_colour_logits).
            if interleaved:
                return at_pixel(x).view(len(x), levels, colours)[:, :, k]
            return at_pixel(x).view(len(x), colours, levels)[:, k]

        backend = _backend.select("masked_conv2d", layer.backend, self.device, self.dtype,
                                  masked_conv.IMPLEMENTED)
        if (backend != "cpu" or layer.mask_type != "B" or layer.data_channels != colours
                or (interleaved and colours > 1)
                or not sample_draw.has_cpu_kernels(self.device, self.dtype)):
            return logits, lambda x, k, uniform: draw_categorical(logits(x, k), uniform=uniform)

        def draw(x, k, uniform):
            return sample_draw.pointwise_categorical_draw(x, layer.weight, layer.bias, colours,
                                                          k, uniform)
        return logits, draw

    def output_head(self, head) -> tuple[Callable, Callable]:
        """PixelCNN's OutputHead (ReLU - 1x1 - ReLU - 1x1) as ``logits(x, k)`` and
        ``draw(x, k, uniform)`` (see :meth:`output_layer`) of the pixel's features x
        [n, C_in, 1, 1]."""
        convs = [layer for layer in head if not isinstance(layer, nn.ReLU)]
        hidden = self.at_pixel(convs[0])
        last_logits, last_draw = self.output_layer(convs[1])

        def logits(x, k):
            return last_logits(torch.relu(hidden(torch.relu(x))), k)

        def draw(x, k, uniform):
            return last_draw(torch.relu(hidden(torch.relu(x))), k, uniform)
        return logits, draw

    def set_value(self, i, j, k, values):
        # AutoregressiveModel.scaled's elementwise maths, value by value.
        self.image[:, k, i, j] = values.to(self.dtype) * self.scale - 1.0


def draw_images(stepper: PixelStepper, n: int, image_shape: tuple[int, int, int],
                generator: torch.Generator | None, device, progress: bool,
                description: str, on_row: Callable[[int], None] | None = None) -> torch.Tensor:
    """Runs ``stepper`` over every pixel and colour in raster order: int64 [n, C, H, W].

    The noise of the draws comes a row at a time (one generator call per row, not per value),
    the same for every stepper, so equal logits give equal images. ``on_row(i)``, if given,
    is called when row i is drawn (the sampling benchmark times rows with it).
    """
    from tqdm import tqdm

    c, h, w = image_shape
    images = torch.zeros(n, c, h, w, dtype=torch.int64, device=device)
    # disable=None draws only on a terminal, so logs stay readable.
    rows = tqdm(range(h), desc=description, unit="row", disable=None if progress else True,
                leave=False)
    for i in rows:
        draw_row(stepper, images, i, uniform_noise((w, c, n), generator, device))
        if on_row is not None:
            on_row(i)
    return images


def row_noise(image_shape: tuple[int, int, int], n: int, generator: torch.Generator | None,
              device) -> torch.Tensor:
    """All of :func:`draw_images`' noise drawn up front, [H, W, C, n] float64: the same
    generator calls in the same order, so the same values."""
    c, h, w = image_shape
    return torch.stack([uniform_noise((w, c, n), generator, device) for _ in range(h)])


def draw_row(stepper: PixelStepper, images: torch.Tensor, i: int,
             uniform: torch.Tensor) -> None:
    """Draws row i of ``images`` [n, C, H, W] in place with its noise ``uniform`` [W, C, n]."""
    stepper.start_row(i)
    for j in range(images.shape[3]):
        for k in range(images.shape[1]):
            values = stepper.draw(i, j, k, uniform[j, k])
            images[:, k, i, j] = values
            stepper.set_value(i, j, k, values)
