"""PixelRNN's cached sampler (genfast.models.sampling): each LSTM only at the new pixel.

Row LSTM. The state at pixel (i, j) reads the layer's input at (i, j - k // 2 ... j) and the
states of row i - 1 around column j. One call of lstm_rows on a row of k positions centred on
j (the previous row's states cropped to them, the gates zero except at j) gives the state at
j exactly as the full recurrence does; the cached input, h and c rows supply the rest.

Diagonal BiLSTM. In the skewed map pixel (r, j) is position r of step r + j, and its state
reads the states of pixels (r - 1, j) and (r, j - 1): lstm_rows on a two-position step (r - 1,
r). Left of each skewed row are padding positions whose states depend on the weights alone
(their gates are zero); the one pixel (r, 0) reads is computed once per sampling run. The
right-to-left direction enters the output a row lower, so it runs once per row: when row i
starts, row i - 1 is complete and its right-to-left states are filled in, right to left.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from genfast.models.sampling import CachedStepper
from genfast.nn import RowLSTM
from genfast.ops.lstm_row import cell_dtype, lstm_rows


class _States:
    """The h and c of one LSTM (one direction) at every pixel drawn so far."""

    def __init__(self, stepper: CachedStepper, lstm):
        self.lstm, self.weight = lstm, lstm._weight()
        d = lstm.hidden_channels
        self.h = stepper.cache(d)
        self.c = stepper.cache(d, cell_dtype(stepper.dtype))

    def run(self, gates: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, pad_left: int,
            position: int, i: int, j: int) -> torch.Tensor:
        """One step of the recurrence over a short row whose only real gates are at
        ``position`` (gates [n, 4D, 1, L]); stores and returns the state there as pixel (i, j)'s
        h [n, D, 1, 1]."""
        h, c = lstm_rows(gates, self.weight, self.lstm.bias, h0, c0, pad_left=pad_left,
                         backend=self.lstm.backend)
        self.h[:, :, i, j] = h[:, :, 0, position]
        self.c[:, :, i, j] = c[:, :, 0, position]
        return h[:, :, :, position:position + 1]


def _one_hot_row(gates: torch.Tensor, length: int, position: int) -> torch.Tensor:
    """[n, 4D, 1, 1] -> [n, 4D, 1, length], zero except at ``position``."""
    return F.pad(gates, (position, length - 1 - position))


class PixelRNNStepper(CachedStepper):
    def __init__(self, model, n: int):
        super().__init__(model, n)
        self.inputs = [self.cache(res.lstm.in_channels) for res in model.lstms]
        self.first = model.first.window_evaluator(self.image)
        self.outs = [self.at_pixel(res.out) for res in model.lstms]
        self.head_logits, self.head_draw = self.output_head(model.head)
        self.row = isinstance(model.lstms[0].lstm, RowLSTM)
        if self.row:
            self.states = [_States(self, res.lstm) for res in model.lstms]
            self.input_to_state = [res.lstm.input_to_state.window_evaluator(inputs)
                                   for res, inputs in zip(model.lstms, self.inputs)]
        else:
            self.states = [(_States(self, res.lstm.left_to_right),
                            _States(self, res.lstm.right_to_left)) for res in model.lstms]
            self.boundaries = [(self._boundary(res.lstm.left_to_right),
                                self._boundary(res.lstm.right_to_left)) for res in model.lstms]
            self.input_to_state = [(self.at_pixel(res.lstm.left_to_right.input_to_state),
                                    self.at_pixel(res.lstm.right_to_left.input_to_state))
                                   for res in model.lstms]

    # -- Row LSTM ---------------------------------------------------------------------------
    def _row_lstm(self, index: int, x: torch.Tensor, i: int, j: int) -> torch.Tensor:
        states = self.states[index]
        lstm = states.lstm
        k, pad = lstm.kernel_size, lstm.kernel_size // 2
        lo, hi = max(0, j - pad), min(self.width, j - pad + k)
        gates = lstm._gate_major(self.input_to_state[index](x, i, i + 1, j, j + 1))
        if i == 0:  # the state above row 0 is zero, as in lstm_rows
            h0 = gates.new_zeros(self.n, lstm.hidden_channels, hi - lo)
            c0 = states.c.new_zeros(h0.shape)
        else:
            h0, c0 = states.h[:, :, i - 1, lo:hi], states.c[:, :, i - 1, lo:hi]
        return states.run(_one_hot_row(gates, hi - lo, j - lo), h0, c0, pad, j - lo, i, j)

    # -- Diagonal BiLSTM --------------------------------------------------------------------
    def _boundary(self, lstm) -> tuple[torch.Tensor, torch.Tensor]:
        """The padding states the first pixel of each row reads: (h, c), each [n, D, H]; entry
        r is the state at step r - 1, position r of an all-zero skewed input (r >= 1)."""
        d, h = lstm.hidden_channels, self.height
        gates = torch.zeros(self.n, 4 * d, max(h - 1, 1), h, device=self.device,
                            dtype=self.dtype)
        hs, cs = lstm_rows(gates, lstm._weight(), lstm.bias, pad_left=1, backend=lstm.backend)
        steps = torch.arange(h - 1, device=self.device)
        boundary_h, boundary_c = hs.new_zeros(self.n, d, h), cs.new_zeros(self.n, d, h)
        boundary_h[:, :, 1:] = hs[:, :, steps, steps + 1]
        boundary_c[:, :, 1:] = cs[:, :, steps, steps + 1]
        return boundary_h, boundary_c

    def _diagonal_cell(self, index: int, direction: int, x_pixel: torch.Tensor, r: int,
                       j: int) -> torch.Tensor:
        """The state of pixel (r, j) of direction 0 (left to right) or 1 of layer ``index`` (in
        that direction's columns) from the layer's input there, x_pixel [n, C, 1, 1]."""
        states = self.states[index][direction]
        boundary = self.boundaries[index][direction]
        lstm = states.lstm
        gates = lstm._gate_major(self.input_to_state[index][direction](x_pixel))
        h0 = gates.new_zeros(self.n, lstm.hidden_channels, 2)
        c0 = states.c.new_zeros(h0.shape)  # not h0.to(): that would be h0 itself
        if r > 0:  # position r - 1 of the previous step: the pixel above
            h0[:, :, 0], c0[:, :, 0] = states.h[:, :, r - 1, j], states.c[:, :, r - 1, j]
        if j > 0:  # position r of the previous step: the pixel to the left, or padding
            h0[:, :, 1], c0[:, :, 1] = states.h[:, :, r, j - 1], states.c[:, :, r, j - 1]
        else:
            h0[:, :, 1], c0[:, :, 1] = boundary[0][:, :, r], boundary[1][:, :, r]
        return states.run(_one_hot_row(gates, 2, 1), h0, c0, 1, 1, r, j)

    def start_row(self, i):
        if self.row or i == 0:
            return
        # Row i - 1 is complete: its right-to-left states, right to left.
        r, w = i - 1, self.width
        for index in range(len(self.states)):
            for j in range(w):  # column j of the flipped image
                x_pixel = self.inputs[index][:, :, r:r + 1, w - 1 - j:w - j]
                self._diagonal_cell(index, 1, x_pixel, r, j)

    # -- the network at one pixel -----------------------------------------------------------
    def logits(self, i, j, k):
        return self.head_logits(self.features(i, j), k)

    def draw(self, i, j, k, uniform):
        return self.head_draw(self.features(i, j), k, uniform)

    def features(self, i, j):
        """The residual stream at pixel (i, j) after the last LSTM layer: [n, 2h, 1, 1]."""
        x = self.first(self.image, i, i + 1, j, j + 1)
        for index, out in enumerate(self.outs):
            inputs = self.inputs[index]
            inputs[:, :, i:i + 1, j:j + 1] = x
            if self.row:
                h = self._row_lstm(index, inputs, i, j)
            else:
                h = self._diagonal_cell(index, 0, inputs[:, :, i:i + 1, j:j + 1], i, j)
                # DiagonalBiLSTM: left + shift_down(right flipped back), zeros above row 0.
                right = self.states[index][1]
                above = (right.h[:, :, i - 1:i, self.width - 1 - j:self.width - j] if i > 0
                         else torch.zeros_like(h))
                h = h + above
            x = x + out(h)
        return x
