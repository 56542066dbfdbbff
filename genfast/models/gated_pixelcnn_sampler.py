"""The Gated PixelCNN's cached sampler (genfast.models.sampling).

The vertical stack of row r sees the whole of rows <= r and reaches the horizontal stack only
through the shift down a row, at row r + 1. So it runs once per row: when row i starts, row
i - 1 is complete, and each layer's vertical convolution is evaluated on that row alone (a
one-row window of its cached input), keeping the row's vertical-to-horizontal term for row i.
The horizontal stack sees the pixels left of the new one in its row, so it runs per pixel on a
one-pixel window, as do the 1 x 1 layers and the head.
"""
from __future__ import annotations

import torch

from genfast.models.sampling import CachedStepper
from genfast.ops.gated import gated_activation


class GatedPixelCNNStepper(CachedStepper):
    def __init__(self, model, n: int, labels: torch.Tensor | None):
        super().__init__(model, n)
        layers = model.layers
        condition = model._one_hot(labels, n)
        # Per layer, the conditioning terms (eq. 4) as GatedPixelCNNLayer.forward adds them.
        self.biases = [layer.conditioning(condition)[:, :, None, None].chunk(2, dim=1)
                       if condition is not None else (None, None) for layer in layers]
        # Inputs of layer l > 0: the previous layer's v (whole rows) and h (pixel by pixel).
        self.v_inputs = [self.image] + [self.cache(layer.channels) for layer in layers[:-1]]
        self.h_inputs = [self.image] + [self.cache(layer.channels) for layer in layers[:-1]]
        # vertical_to_horizontal(shift_down(v_pre)) of the current row, per layer.
        self.from_above = [None] * len(layers)
        self.vertical = [layer.vertical.window_evaluator(v_in)
                         for layer, v_in in zip(layers, self.v_inputs)]
        self.horizontal = [layer.horizontal.window_evaluator(h_in)
                           for layer, h_in in zip(layers, self.h_inputs)]
        self.horizontal_out = [self.at_pixel(layer.horizontal_out) for layer in layers]
        self.features_to_head = self.at_pixel(model.features_to_head)
        self.head_logits, self.head_draw = self.output_layer(model.head_out)
        self.current_pixel = (self.at_pixel(model.current_pixel)
                              if model.current_pixel is not None else None)

    def start_row(self, i):
        for index, layer in enumerate(self.model.layers):
            if i == 0:  # shift_down puts zeros above row 0
                above = self.image.new_zeros(self.n, 2 * layer.channels, 1, self.width)
            else:
                above = self.vertical[index](self.v_inputs[index], i - 1, i, 0, self.width)
            self.from_above[index] = layer.vertical_to_horizontal(above)
            if i == 0 or index + 1 == len(self.model.layers):
                continue
            bias_v = self.biases[index][0]
            v_pre = above if bias_v is None else above + bias_v
            self.v_inputs[index + 1][:, :, i - 1:i] = gated_activation(v_pre,
                                                                       backend=layer.backend)

    def logits(self, i, j, k):
        return self.head_logits(self.hidden(i, j), k)

    def draw(self, i, j, k, uniform):
        return self.head_draw(self.hidden(i, j), k, uniform)

    def hidden(self, i, j):
        """What the output layer reads at pixel (i, j): [n, head_channels, 1, 1], after its
        ReLU."""
        m = self.model
        for index, layer in enumerate(m.layers):
            h_in = self.h_inputs[index]
            h_pre = (self.horizontal[index](h_in, i, i + 1, j, j + 1)
                     + self.from_above[index][:, :, :, j:j + 1])
            bias_h = self.biases[index][1]
            if bias_h is not None:
                h_pre = h_pre + bias_h
            h = self.horizontal_out[index](gated_activation(h_pre, backend=layer.backend))
            if layer.residual:
                h = h + h_in[:, :, i:i + 1, j:j + 1]
            if index + 1 < len(m.layers):
                self.h_inputs[index + 1][:, :, i:i + 1, j:j + 1] = h
        hidden = self.features_to_head(torch.relu(h))
        if self.current_pixel is not None:
            hidden = hidden + self.current_pixel(self.image[:, :, i:i + 1, j:j + 1])
        return torch.relu(hidden)
