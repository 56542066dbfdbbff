"""PixelCNN's cached sampler (genfast.models.sampling): each layer at the new pixel only.

Every activation of a PixelCNN at pixel p depends on the values before p alone (the mask-A
layer hides p, the layers after it read positions <= p). So when pixel p is drawn, every
layer's activations before p are final, and p's own take one evaluation per layer: the masked
convolutions on a one-pixel window of their cached input, the 1 x 1 layers on p's vector. The
cache holds what the masked 3 x 3 (k x k) layer of each residual block reads; the 1 x 1 layers
and the residual stream need nothing beyond the pixel.
"""
from __future__ import annotations

import torch

from genfast.models.sampling import CachedStepper


class PixelCNNStepper(CachedStepper):
    def __init__(self, model, n: int):
        super().__init__(model, n)
        self.block_inputs = [self.cache(block.masked.in_channels) for block in model.blocks]
        self.first = model.first.window_evaluator(self.image)
        self.blocks = [(self.at_pixel(block.reduce), block.masked.window_evaluator(cached),
                        self.at_pixel(block.expand))
                       for block, cached in zip(model.blocks, self.block_inputs)]
        self.head_logits, self.head_draw = self.output_head(model.head)

    def logits(self, i, j, k):
        return self.head_logits(self.features(i, j), k)

    def draw(self, i, j, k, uniform):
        return self.head_draw(self.features(i, j), k, uniform)

    def features(self, i, j):
        """The residual stream at pixel (i, j) after the last block: [n, 2h, 1, 1]."""
        x = self.first(self.image, i, i + 1, j, j + 1)  # [n, 2h, 1, 1]
        for (reduce, masked, expand), cached in zip(self.blocks, self.block_inputs):
            # The same layers as ResidualBlock.forward, on one pixel.
            cached[:, :, i:i + 1, j:j + 1] = torch.relu(reduce(torch.relu(x)))
            x = x + expand(torch.relu(masked(cached, i, i + 1, j, j + 1)))
        return x
