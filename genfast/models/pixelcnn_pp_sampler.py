"""PixelCNN++'s cached sampler: the Fast PixelCNN++ scheme (Ramachandran et al. 2017, "Fast
Generation for Convolutional Autoregressive Models", section 3) on genfast's window kernels.

Every shifted convolution keeps its input in a cache at its own resolution and is evaluated
only where the new pixel needs it:

* the ``u`` stream at a row sees only the rows above, at every resolution (a 1/2-scale row R
  reads full rows up to 2R - 1). So when full row i starts, every u layer is evaluated on its
  row at each resolution whose rows start there (1/2: i even, 1/4: i divisible by 4): the up
  pass from fine to coarse, then the down pass from coarse to fine.
* the ``ul`` stream is evaluated per pixel. A 1/2-scale position (I, J) depends on full-res
  pixels before (2I, 2J), so it is computed when pixel (2I, 2J) is drawn; a 1/4-scale one at
  (4K, 4L). At such a pixel the up pass runs at each of those resolutions, then the down pass,
  whose transposed convolutions read the coarser maps' caches (zeros between their entries,
  as in the network), which were filled when the pixel completing that coarse block was drawn.

A layer's output at a position is computed once, by the same kernels on the same inputs as in
the whole network (see pixelcnn_pp_layers on the elementwise ops), so the parameters, and
hence the samples, equal the naive sampler's to the bit on the cpu backend.
"""
from __future__ import annotations

import torch

from genfast.models.pixelcnn_pp import SCALES
from genfast.models.pixelcnn_pp_layers import (DownRightShiftedConv2d, concat_elu, elu,
                                               gate)
from genfast.models.sampling import CachedStepper
from genfast.ops.masked_conv import masked_conv2d_on_windows


class ShiftedConvCache:
    """The input of one shifted convolution at one resolution, filled in as sampling goes,
    and that convolution evaluated on one row or one pixel of its output.

    A down-right-shifted convolution reads [x, down_shift(x)]: a value written at row r also
    goes to the second half of the channels at row r + 1."""

    def __init__(self, stepper: CachedStepper, module, height: int, width: int):
        conv = module.conv
        self.stacked = isinstance(module, DownRightShiftedConv2d)
        channels = conv.in_channels
        self.half = channels // 2 if self.stacked else channels
        self.height, self.width = height, width
        self.data = torch.empty(stepper.n, channels, height, width, device=stepper.device,
                                dtype=stepper.dtype,
                                memory_format=torch.channels_last).zero_()
        self.evaluate = conv.window_evaluator(self.data)

    def write(self, row: int, values: torch.Tensor, col: int | None = None,
              col_step: int = 1) -> None:
        """values [n, C, 1, w] at ``row``: at column ``col`` (one pixel), or every
        ``col_step``-th column from 0 (a whole row; 2 for a zero-inserted one)."""
        cols = slice(col, col + 1) if col is not None else slice(None, None, col_step)
        self.data[:, :self.half, row:row + 1, cols] = values
        if self.stacked and row + 1 < self.height:
            self.data[:, self.half:, row + 1:row + 2, cols] = values

    def output(self, row: int, col: int | None = None) -> torch.Tensor:
        """The convolution's output at ``row``: the whole row, or the pixel at ``col``."""
        if col is None:
            return self.evaluate(self.data, row, row + 1, 0, self.width)
        return self.evaluate(self.data, row, row + 1, col, col + 1)


class CachedGatedResnet:
    """A GatedResnet on one row (u) or one pixel (ul), with its two convolutions' caches;
    the same operations in the same order as GatedResnet.forward (dropout is off)."""

    def __init__(self, stepper, block, height: int, width: int, aux_width: int):
        self.conv_in = ShiftedConvCache(stepper, block.conv_in, height, width)
        self.conv_out = ShiftedConvCache(stepper, block.conv_out, height, width)
        self.aux = None
        if block.aux is not None:
            example = torch.empty(stepper.n, block.aux.in_channels, 1, aux_width,
                                  device=stepper.device, dtype=stepper.dtype)
            conv = masked_conv2d_on_windows(example, block.aux.weight, block.aux.bias, "B",
                                            backend=block.aux.backend)
            self.aux = lambda a: conv(a, [])

    def __call__(self, x, aux, row: int, col: int | None = None):
        self.conv_in.write(row, concat_elu(x), col)
        c1 = self.conv_in.output(row, col)
        if self.aux is not None:
            c1 = c1 + self.aux(concat_elu(aux))
        self.conv_out.write(row, concat_elu(c1), col)
        return x + gate(self.conv_out.output(row, col))


def at(t: torch.Tensor, row: int, col: int | None = None) -> torch.Tensor:
    """Row ``row`` of t [n, C, H, W], or its pixel at ``col``, keeping 4 dimensions."""
    if col is None:
        return t[:, :, row:row + 1]
    return t[:, :, row:row + 1, col:col + 1]


class PixelCNNPPStepper(CachedStepper):
    """start_row(i), params(i, j) -> [n, P, 1, 1], set_pixel(i, j, values) (see
    pixelcnn_pp.draw_pixels)."""

    def __init__(self, model, n: int):
        super().__init__(model, n)
        colours, f = model.image_shape[0], model.filters
        sizes = model.sizes
        ones = torch.ones_like(self.image[:, :1])
        self.padded = torch.cat([self.image, ones], dim=1).contiguous(
            memory_format=torch.channels_last)
        self.colours = colours
        self.first_u = model.first_u.conv.window_evaluator(self.padded)
        self.first_above = model.first_ul_above.window_evaluator(self.padded)
        self.first_left = model.first_ul_left.window_evaluator(self.padded)
        self.above = None  # down_shift(first_ul_above(x)) on the current row

        def blocks(stage, s):
            h, w = sizes[s]
            return [(CachedGatedResnet(self, b.u, h, w, w), CachedGatedResnet(self, b.ul, h, w, 1))
                    for b in stage]

        self.up = [blocks(model.up[s], s) for s in range(SCALES)]
        self.down = [blocks(model.down[s], s) for s in range(SCALES)]
        # downsample[s] reads scale s's last up-pass outputs; upsample[s] the zero-inserted
        # scale s + 1 outputs, at scale s's size.
        self.downsample = [[ShiftedConvCache(self, m, *sizes[s]) for m in model.downsample[s]]
                           for s in range(SCALES - 1)]
        self.upsample = [[ShiftedConvCache(self, m, *sizes[s]) for m in model.upsample[s]]
                         for s in range(SCALES - 1)]

        def maps(count, s):
            return [torch.zeros(n, f, *sizes[s], device=self.device, dtype=self.dtype)
                    for _ in range(count)]

        # u's outputs per scale: the up pass's (shortcuts of the down pass) and the down
        # pass's (shortcuts of ul's down pass, read pixel by pixel).
        self.up_u = [maps(model.nr_resnet + 1, s) for s in range(SCALES)]
        self.down_u = [maps(len(model.down[s]), s) for s in range(SCALES)]
        self.head = self.at_pixel(model.out)

    # -- rows: the u stream ----------------------------------------------------------------
    def start_row(self, i):
        rows = [s for s in range(SCALES) if i % (1 << s) == 0]
        for s in rows:
            self.u_up(s, i >> s)
        for s in reversed(rows):
            self.u_down(s, i >> s)

    def u_up(self, s, row):
        if s == 0:
            width = self.width
            if row == 0:  # the down shift's zero row
                u = self.padded.new_zeros(self.n, self.model.filters, 1, width)
                self.above = u
            else:
                u = self.first_u(self.padded, row - 1, row, 0, width)
                self.above = self.first_above(self.padded, row - 1, row, 0, width)
        else:
            u = self.downsample[s - 1][0].output(2 * row)[:, :, :, ::2]
        outputs = self.up_u[s]
        at(outputs[0], row).copy_(u)
        for k, (block, _) in enumerate(self.up[s]):
            u = block(u, None, row)
            at(outputs[k + 1], row).copy_(u)
        if s < SCALES - 1:
            self.downsample[s][0].write(row, u)

    def u_down(self, s, row):
        skips = self.up_u[s]
        if s == SCALES - 1:
            u, first = at(skips[-1], row), len(skips) - 2
        else:
            u, first = self.upsample[s][0].output(row), len(skips) - 1
        for b, (block, _) in enumerate(self.down[s]):
            u = block(u, at(skips[first - b], row), row)
            at(self.down_u[s][b], row).copy_(u)
        if s > 0:
            self.upsample[s - 1][0].write(2 * row, u, col_step=2)

    # -- pixels: the ul stream -------------------------------------------------------------
    def params(self, i, j):
        """The mixture parameters of pixel (i, j): [n, P, 1, 1]."""
        scales = [s for s in range(SCALES) if i % (1 << s) == 0 and j % (1 << s) == 0]
        skips = {s: self.ul_up(s, i >> s, j >> s) for s in scales}
        for s in reversed(range(SCALES)):
            if s in skips:
                ul = self.ul_down(s, i >> s, j >> s, skips[s])
        return self.head(elu(ul))

    def ul_up(self, s, row, col):
        if s == 0:
            above = at(self.above, 0, col)
            if col == 0:  # the right shift's zero column
                left = torch.zeros_like(above)
            else:
                left = self.first_left(self.padded, row, row + 1, col - 1, col)
            ul = above + left
        else:
            ul = self.downsample[s - 1][1].output(2 * row, 2 * col)
        outputs = [ul]
        for k, (_, block) in enumerate(self.up[s]):
            ul = block(ul, at(self.up_u[s][k + 1], row, col), row, col)
            outputs.append(ul)
        if s < SCALES - 1:
            self.downsample[s][1].write(row, ul, col)
        return outputs

    def ul_down(self, s, row, col, skips):
        if s == SCALES - 1:
            ul, first = skips[-1], len(skips) - 2
        else:
            ul, first = self.upsample[s][1].output(row, col), len(skips) - 1
        for b, (_, block) in enumerate(self.down[s]):
            aux = torch.cat([at(self.down_u[s][b], row, col), skips[first - b]], dim=1)
            ul = block(ul, aux, row, col)
        if s > 0:
            self.upsample[s - 1][1].write(2 * row, ul, 2 * col)
        return ul

    def set_pixel(self, i, j, values):
        # AutoregressiveModel.scaled's elementwise maths, value by value.
        self.padded[:, :self.colours, i, j] = values.to(self.dtype) * self.scale - 1.0
