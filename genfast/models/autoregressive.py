"""What every autoregressive genfast model shares: the loss, the evaluator and the sampler.

A subclass defines ``network(x, labels)`` -> [B, levels, C, H, W], where the logits of
pixel (i, j), colour c may depend on the pixels before (i, j) in raster order and, at (i, j),
on the colours before c only; or, when it ends in a 1x1 mask-B layer giving the logits (the
categorical head), that layer as ``output_layer`` and ``head_features(x, labels)``, its input.
Then

    log p(x) = sum over i, j, c of log softmax(logits)[x_ijc]              (nats)

and a sample is drawn one pixel and one colour at a time (genfast.models.sampling): by
re-running the network each time (``method="naive"``) or by evaluating each layer only where
the new pixel changes it (``method="cached"``, the default), with the same result. A model
with a categorical head computes the loss with the fused genfast.ops.categorical_head on the
fast backends, without materialising the logits.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from genfast.models.base import GenerativeModel
from genfast.models.sampling_graph import check_available as check_graph_available
from genfast.models.sampling_graph import graphed_sample
from genfast.models.sampling import METHODS, NaiveStepper, PixelStepper, draw_images
from genfast.ops.categorical_head import categorical_head_backend, categorical_head_nll
from genfast.ops.masked_conv import check_colour_layout

SUPPORTED_CHANNELS = (1, 3)


class AutoregressiveModel(GenerativeModel):
    """Base of PixelCNN, GatedPixelCNN, PixelRNN and the independent baseline."""

    def __init__(self, image_shape, levels, **hparams):
        super().__init__(image_shape, levels, **hparams)
        if len(self.image_shape) != 3 or min(self.image_shape) < 1:
            raise ValueError(f"genfast: {type(self).__name__} needs image_shape (C, H, W) with "
                             f"positive sizes, got {image_shape}")
        if self.image_shape[0] not in SUPPORTED_CHANNELS:
            raise ValueError(f"genfast: {type(self).__name__} models grey (C=1) or RGB (C=3) "
                             f"images, got C={self.image_shape[0]}")
        if self.levels < 2:
            raise ValueError(f"genfast: levels must be at least 2, got {levels}")

    # -- what subclasses define -------------------------------------------------------------
    def network(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Scaled images x [B, C, H, W] (floats in [-1, 1], see :meth:`scaled`) ->
        [B, levels, C, H, W] unnormalised log-probabilities. Differentiable in x, which is
        what the causality tests check. By default the output layer of the head features."""
        layer = self.output_layer
        if layer is None:
            raise NotImplementedError
        return split_colour_logits(layer(self.head_features(x, labels)), self.image_shape[0],
                                   self.levels, layer.colour_layout)

    @property
    def output_layer(self):
        """The last layer, a 1x1 mask-B genfast.nn.MaskedConv2d to C * levels logits with the
        image's colour groups, or None for a model without such a head."""
        return None

    def head_features(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Scaled images -> the input [B, Cin, H, W] of ``output_layer``."""
        raise NotImplementedError

    # -- shared -----------------------------------------------------------------------------
    def check_images(self, images: torch.Tensor) -> None:
        """Clear errors for images the model was not built for."""
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
            raise ValueError(f"genfast: {self.name} expects images [B, C, H, W], got {shape}")
        if tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(f"genfast: {self.name} was built for images of shape "
                             f"{self.image_shape} (C, H, W), got {tuple(images.shape[1:])}")
        if images.dtype.is_floating_point or images.dtype == torch.bool:
            raise ValueError(f"genfast: {self.name} expects integer images in [0, {self.levels}),"
                             f" got dtype {images.dtype}")

    def scaled(self, images: torch.Tensor) -> torch.Tensor:
        """Integers in [0, levels) -> floats in [-1, 1] in the parameters' dtype, what the
        first layer reads."""
        dtype = next(self.parameters()).dtype
        return images.to(dtype) * (2.0 / (self.levels - 1)) - 1.0

    def logits(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Integer images [B, C, H, W] -> logits [B, levels, C, H, W]."""
        return self.network(self.scaled(images), labels)

    def nll(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Negative log-likelihood in nats of each image: [B]. Through the fused categorical
        head where the model has one and its backend is not the reference."""
        self.check_images(images)
        layer = self.output_layer
        if layer is None:
            logits = self.logits(images, labels)
        else:
            features = self.head_features(self.scaled(images), labels)
            if categorical_head_backend(features, layer.backend) != "reference":
                return categorical_head_nll(features, layer.weight, layer.bias, images,
                                            self.levels, self.image_shape[0],
                                            layer.colour_layout, backend=layer.backend)
            logits = split_colour_logits(layer(features), self.image_shape[0], self.levels,
                                         layer.colour_layout)
        per_value = F.cross_entropy(logits, images.long(), reduction="none")  # [B, C, H, W]
        return per_value.flatten(1).sum(1)

    def forward(self, images, labels=None, stage="loss"):
        """Mean NLL per image in nats (the training loss)."""
        return self.nll(images, labels).mean()

    @torch.no_grad()
    def evaluate(self, images, labels=None):
        return {"nll_nats": self.nll(images, labels)}

    def default_labels(self, n: int, device) -> torch.Tensor | None:
        """Labels to sample with when none are given (a conditional model overrides this)."""
        return None

    def cached_stepper(self, n: int, labels: torch.Tensor | None) -> PixelStepper:
        """The model's cached sampler (genfast.models.sampling) for n images."""
        raise NotImplementedError(f"genfast: {type(self).__name__} has no cached sampler")

    def sample(self, n, *, conditioning=None, labels=None, data=None, generator=None,
               method="cached", progress=False, cuda_graph=False):
        """n images [n, C, H, W] (int64), drawn pixel by pixel in raster order, colour by
        colour, from the model's conditionals.

        Args:
            n: number of images.
            conditioning: class labels [n] for a conditional model (default: 0, 1, 2, ... in
                turn); ``labels`` is the same argument under the name the other models use.
            data: unused (the autoencoder reconstructs it; kept for one sample() signature).
            generator: torch.Generator of the draws (the global one when None).
            method: "cached" (each layer evaluated only where the new pixel changes it) or
                "naive" (the whole network per pixel and colour); both draw the same integers.
            progress: show a progress bar over the rows (on a terminal).
            cuda_graph: on a CUDA device, capture the cached sampler in a CUDA graph on the
                first call for this n and replay it on later calls (same samples, far fewer
                launches from Python; genfast.models.sampling_graph). No progress bar then.
        """
        if method not in METHODS:
            raise ValueError(f"genfast: method must be one of {METHODS}, got {method!r}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"genfast: n must be a positive int, got {n!r}")
        if conditioning is not None and labels is not None:
            raise ValueError("genfast: pass the class labels as conditioning or labels, not both")
        labels = conditioning if conditioning is not None else labels
        device = next(self.parameters()).device
        if labels is None:
            labels = self.default_labels(n, device)
        elif self.default_labels(n, device) is None:
            raise ValueError(f"genfast: this {type(self).__name__} is not conditional; "
                             f"conditioning must be None")
        if cuda_graph:
            if method != "cached":
                raise ValueError("genfast: cuda_graph=True needs method='cached'")
            check_graph_available(self)
        was_training = self.training
        self.eval()
        try:
            # inference_mode, not only no_grad: the custom ops then skip their autograd
            # wrappers, a good part of the cost of a one-pixel call.
            with torch.inference_mode():
                if cuda_graph:
                    images = graphed_sample(self, n, labels, generator)
                else:
                    stepper = (self.cached_stepper(n, labels) if method == "cached"
                               else NaiveStepper(self, n, labels))
                    images = draw_images(stepper, n, self.image_shape, generator,
                                         device, progress, f"{self.name} {method} sampling")
            return images.clone()  # a normal tensor, usable where autograd records
        finally:
            self.train(was_training)


def multiple_of(value: int | None, default: int, step: int) -> int:
    """``value``, or when it is None ``default`` rounded up to a multiple of ``step`` (so that
    the default widths split into colour groups for RGB data too)."""
    return -(-default // step) * step if value is None else value


def split_colour_logits(out: torch.Tensor, channels: int, levels: int,
                        colour_layout: str = "contiguous") -> torch.Tensor:
    """[B, C * levels, H, W] -> [B, levels, C, H, W], read with the colour layout the masked
    layers grouped the output channels by.

    Contiguous (the default): block c of the last layer holds colour c's features, so channel
    c * levels + l is colour c's logit of value l. Interleaved: channel k is in colour group
    k % C, so channel l * C + c is colour c's logit of value l. Reading the logits with another
    layout than the layers' would let a colour's logits see the current pixel's later colours.
    """
    check_colour_layout(colour_layout)
    b, _, h, w = out.shape
    if colour_layout == "interleaved":
        return out.view(b, levels, channels, h, w)
    return out.view(b, channels, levels, h, w).transpose(1, 2)
