"""PixelRNN's two-dimensional LSTM layers (van den Oord, Kalchbrenner and Kavukcuoglu 2016,
"Pixel Recurrent Neural Networks": section 3.1 Row LSTM, 3.2 Diagonal BiLSTM, 3.4 masks).

Both layers split the LSTM of eq. 3 into two parts. The input-to-state part is a masked
convolution of the whole image at once (genfast.nn.MaskedConv2d, without bias). The
state-to-state part is a 1-D convolution of the previous step's hidden state; it runs with the
cell update inside genfast.ops.lstm_row.lstm_rows, one fused call for all the steps:

    i, f, o, g = sigma, sigma, sigma, tanh of (gates_in + bias + K_ss * h_prev)
    c = f c_prev + i g,    h = o tanh(c)

Row LSTM: the steps are the rows, top to bottom. The gates of pixel (r, j) see the pixels to
its left in row r (a 1 x k mask; the pixel itself too with mask B) and row r - 1's state at
columns j - k // 2 ... j + (k - 1) // 2 (all of row r - 1 precedes row r). The receptive field
is a triangle above the pixel.

Diagonal BiLSTM: skew the image so that row r starts at column r (``skew``); column s of the
skewed map then holds the pixels (r, s - r), one diagonal. An LSTM runs over those columns
(H + W - 1 steps of H positions) with a 2 x 1 state kernel over rows r - 1 and r of the previous
column, i.e. the pixels above and to the left. The same with separate weights on the
horizontally flipped image gives the right-to-left direction, whose output (it sees the pixels
to the right of the current one in its row) is moved down one row before the two are added.
The input-to-state part is a 1 x 1 masked convolution. Since it works pixel by pixel it is
applied to the image, and its output skewed into lstm_rows' [B, 4D, steps, positions] layout
with zeros in the padding: the same result as convolving the skewed map, at half the cost (a
skewed map is about half padding). The padding states left of each row depend on the bias alone, so they act
as a learnt boundary and carry no pixel.

Colour groups (data_channels = n > 1, 3 for RGB data). Hidden channels split into n equal
groups (hidden_channels must be a multiple of n), laid out as every genfast masked layer lays
out its channels (``colour_layout``): contiguous blocks by default (hidden channel e in group
e * n // D), or interleaved (group e % n), so these layers stack with MaskedConv2d of the same
layout. Output group j at a pixel reads the current pixel's colours < j (mask A) or <= j (mask
B) and nothing else of it:

* input-to-state: MaskedConv2d(data_channels=n) groups its 4D output channels by colour.
  Contiguous: n blocks, block j holding the i, f, o and g pre-activations of hidden group j
  (colour-major), which the layer reorders to the gate-major order lstm_rows reads.
  Interleaved: output channel q D + e is gate q of hidden channel e, whose group (q D + e) % n =
  e % n is that hidden channel's (n divides D), so gate-major order needs no reordering. Either
  way the four gates of a hidden channel all belong to its colour.
* state-to-state: the weight is multiplied by a fixed 0/1 buffer ``state_mask`` so that the
  gates of group j read the previous step's hidden groups <= j only (mask B's rule, applied to
  the state). The state only describes pixels before the current one, whose colours are all
  known, so causality alone would not need this; it keeps the groups apart on the recurrent
  path as on the input path (our reading of section 3.4's split of the features into R, G
  and B parts). It costs the recurrent weight its blocks above the diagonal.

With one colour group a 1 x 1 mask A sees nothing, so DiagonalBiLSTM refuses mask A unless
data_channels > 1: as in the paper, put a mask-A convolution first and use mask B here.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from genfast import _backend
from genfast.nn.gated_pixelcnn import shift_down
from genfast.nn.masked_conv import MaskedConv2d
from genfast.ops import lstm_row_conv as fused
from genfast.ops.lstm_row import IMPLEMENTED, lstm_rows, lstm_rows_grouped
from genfast.ops.masked_conv import (check_colour_layout, colour_groups, conv_mask,
                                     group_order, select_channels)

__all__ = ["RowLSTM", "DiagonalBiLSTM", "skew", "unskew"]


def skew(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, H, H + W - 1]: row r moved right by r, zeros elsewhere.

    Column s holds the pixels (r, s - r), one diagonal of the image (the paper's figure 3).
    """
    if x.dim() != 4:
        raise ValueError(f"genfast: skew expects [batch, channels, height, width], "
                         f"got {tuple(x.shape)}")
    b, c, h, w = x.shape
    s = h + w - 1
    # Rows padded to s + 1 and read back as rows of s: each row starts one further right.
    flat = F.pad(x, (0, h)).flatten(2)
    return flat[:, :, :h * s].view(b, c, h, s)


def unskew(y: torch.Tensor, width: int) -> torch.Tensor:
    """Inverse of ``skew``: [B, C, H, H + width - 1] -> [B, C, H, width] (any strided y)."""
    if y.dim() != 4 or width < 1 or y.shape[3] != y.shape[2] + width - 1:
        raise ValueError(f"genfast: unskew expects [batch, channels, height, height + width - 1] "
                         f"with width >= 1, got {tuple(y.shape)} and width={width}")
    b, c, h, s = y.shape
    # Padded to [H + 1, S + 1] and read as rows of S + 2: row r starts r further right.
    flat = F.pad(y, (0, 1, 0, 1)).flatten(2)
    return flat[:, :, :h * (s + 2)].view(b, c, h, s + 2)[:, :, :, :width]


def _skew_steps(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, H + W - 1, H] contiguous: the skewed map with the diagonals (the
    recurrence steps) first, as lstm_rows reads them; out[s, r] = x[r, s - r], zeros elsewhere.
    """
    return _SkewSteps.apply(x)


def _unskew_steps(h: torch.Tensor, width: int) -> torch.Tensor:
    """[B, C, H + width - 1, H] -> [B, C, H, width] contiguous: out[r, j] = h[r + j, r]."""
    return _UnskewSteps.apply(h, width)


def _skewed_copy(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    s = h + w - 1
    out = x.new_zeros(b, c, s, h)
    out.as_strided((b, c, h, w), (c * s * h, s * h, h + 1, h)).copy_(x)
    return out


def _unskewed_view(h: torch.Tensor, width: int) -> torch.Tensor:
    """Stepping a row down moves H + 1 elements, a column right H. The strides come from the
    shape of a contiguous tensor, never from a layout torch.compile might have picked, so the
    view means the same in eager and compiled code."""
    h = h.contiguous()
    b, c, s, rows = h.shape
    return h.as_strided((b, c, rows, width), (c * s * rows, s * rows, rows + 1, rows))


# Skew and unskew are each other's backward, one strided copy or view each way. The gates skewed
# here are 4D channels wide: the copies of a pad-and-transpose cost as much as a convolution, and
# autograd's own backward of as_strided (index arithmetic over the whole storage) more. Autograd
# through the strided write would also materialise an as_strided_scatter, which torch.compile
# (2.x, CPU) got wrong followed by the masked convolution.
class _SkewSteps(torch.autograd.Function):
    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        return _skewed_copy(x)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.width = inputs[0].shape[3]

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _unskewed_view(grad, ctx.width)


class _UnskewSteps(torch.autograd.Function):
    @staticmethod
    def forward(h: torch.Tensor, width: int) -> torch.Tensor:
        return _unskewed_view(h, width).contiguous()

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        pass

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return _skewed_copy(grad), None


def _check_input(x: torch.Tensor, in_channels: int, layer: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"genfast: {layer} expects x of shape [batch, channels, height, width], "
                         f"got {shape}")
    if x.shape[1] != in_channels:
        raise ValueError(f"genfast: {layer} was built for {in_channels} input channels, "
                         f"x has {x.shape[1]}")


class _LSTMLayer(nn.Module):
    """Parameters and the two halves shared by the Row and Diagonal LSTMs."""

    def __init__(self, layer: str, in_channels: int, hidden_channels: int, conv_kernel,
                 state_kernel: int, mask_type: str, data_channels: int, backend: str | None,
                 device=None, dtype=None, colour_layout: str = "contiguous"):
        super().__init__()
        check_colour_layout(colour_layout)
        if hidden_channels < 1 or in_channels < 1:
            raise ValueError(f"genfast: {layer} needs in_channels and hidden_channels >= 1, got "
                             f"{in_channels} and {hidden_channels}")
        if mask_type not in ("A", "B"):
            raise ValueError(f"genfast: {layer} mask_type must be 'A' or 'B', got {mask_type!r}")
        if not 1 <= data_channels <= min(in_channels, hidden_channels):
            raise ValueError(f"genfast: data_channels must be between 1 and min(in_channels, "
                             f"hidden_channels), got {data_channels}")
        if hidden_channels % data_channels:
            raise ValueError(f"genfast: {layer} splits hidden_channels into data_channels colour "
                             f"groups; {hidden_channels} is not a multiple of {data_channels}")
        factory = {"device": device, "dtype": dtype}
        self.in_channels, self.hidden_channels = in_channels, hidden_channels
        self.mask_type, self.data_channels, self.backend = mask_type, data_channels, backend
        self.colour_layout = colour_layout
        d = hidden_channels
        self.input_to_state = MaskedConv2d(in_channels, 4 * d, conv_kernel, mask_type,
                                           data_channels, bias=False, backend=backend,
                                           colour_layout=colour_layout, **factory)
        self.state_weight = nn.Parameter(torch.empty(4 * d, d, state_kernel, **factory))
        self.bias = nn.Parameter(torch.empty(4 * d, **factory))
        self.register_buffer("state_mask",
                             self._colour_mask(d, data_channels, colour_layout, device),
                             persistent=False)
        # The input kernel's mask on its visible taps (from the left end to the centre), for
        # genfast.ops.lstm_rows_conv: found once here, so that forward has no data-dependent
        # branch for torch.compile.
        conv = self.input_to_state
        mask = conv_mask(*conv.weight.shape, mask_type, data_channels, colour_layout)[:, :, 0]
        self.visible_taps = int(mask.amax(dim=(0, 1)).count_nonzero())
        self.register_buffer("input_mask", mask[:, :, :self.visible_taps].to(**factory),
                             persistent=False)
        # One colour group's visible taps are all seen: no multiplication (and its backward).
        self.input_mask_is_ones = bool(mask[:, :, :self.visible_taps].all())
        # Interleaved input channels in colour group order, the order MaskedConv2d hands them
        # to its kernels in: the fused path sums them in that order too, so that its bits stay
        # the masked convolution's, which cached sampling relies on.
        order = (group_order(in_channels, data_channels, device)
                 if colour_layout == "interleaved" and data_channels > 1 else None)
        self.register_buffer("input_order", order, persistent=False)
        self.reset_parameters()

    @staticmethod
    def _colour_mask(d: int, groups: int, colour_layout: str, device) -> torch.Tensor | None:
        """[4D, D, 1] 0/1: gate channel (q, d') reads hidden channel e iff group(e) <= group(d')."""
        if groups == 1:
            return None
        group = colour_groups(d, groups, colour_layout).to(device)
        allowed = (group[None, :] <= group[:, None]).repeat(4, 1)
        return allowed[:, :, None].float()

    def reset_parameters(self) -> None:
        """Uniform(+-1/sqrt(D k)) state weight as nn.LSTM does; bias 0, forget gate 1."""
        bound = 1.0 / math.sqrt(self.state_weight.shape[1] * self.state_weight.shape[2])
        with torch.no_grad():
            self.state_weight.uniform_(-bound, bound)
            self.bias.zero_()
            self.bias[self.hidden_channels:2 * self.hidden_channels] = 1.0

    def _gates(self, x: torch.Tensor) -> torch.Tensor:
        """The input-to-state pre-activations [B, 4D, ...] in gate-major (i, f, o, g) order."""
        return self._gate_major(self.input_to_state(x))

    def _gate_major(self, gates: torch.Tensor) -> torch.Tensor:
        """input_to_state's output [B, 4D, ...] reordered to gate-major (i, f, o, g)."""
        n = self.data_channels
        if n == 1 or self.colour_layout == "interleaved":  # already gate-major (module doc)
            return gates
        # colour-major [n groups][4 gates][D / n] -> gate-major [4 gates][n groups][D / n]
        b, _, *spatial = gates.shape
        return (gates.view(b, n, 4, self.hidden_channels // n, *spatial).transpose(1, 2)
                .reshape(b, 4 * self.hidden_channels, *spatial))

    def _fused_input(self, x: torch.Tensor):
        """(x, in_weight, in_pad_left) for genfast.ops.lstm_rows_conv, or None to run the
        masked convolution and lstm_rows apart: when lstm_rows would not run on the cpu backend,
        which alone has the fused kernel, or when the mask hides every tap.

        in_weight is the masked kernel's visible taps, rows in gate-major order; tap 0 reads
        k // 2 columns left of the output. x and in_weight's input channels come in colour
        group order (``input_order``) when interleaved.
        """
        if not fused.HAS_CPU_KERNEL or self.visible_taps == 0 or _backend.select(
                "lstm_rows", self.backend, x.device, x.dtype, IMPLEMENTED) != "cpu":
            return None
        conv = self.input_to_state
        masked = conv.weight[:, :, 0, :self.visible_taps]
        if not self.input_mask_is_ones:
            masked = masked * self.input_mask.to(conv.weight.dtype)
        if self.input_order is not None:
            x = select_channels(x, self.input_order)
            masked = masked.index_select(1, self.input_order)
        # Contiguous once here, not by the op's forward and again by its backward.
        masked = masked.contiguous()
        in_weight = self._gate_major(masked.unsqueeze(0)).squeeze(0)
        return x, in_weight, (conv.kernel_size[1] - 1) // 2

    def _weight(self) -> torch.Tensor:
        if self.state_mask is None:
            return self.state_weight
        return self.state_weight * self.state_mask.to(self.state_weight.dtype)

    def extra_repr(self) -> str:
        return _extra_repr(self)


def _extra_repr(layer) -> str:
    layout = (f", colour_layout={layer.colour_layout!r}"
              if layer.colour_layout != "contiguous" else "")
    return (f"{layer.in_channels}, {layer.hidden_channels}, mask_type={layer.mask_type!r}, "
            f"data_channels={layer.data_channels}{layout}")


class RowLSTM(_LSTMLayer):
    """PixelRNN's Row LSTM layer (section 3.1): forward(x [B, C, H, W]) -> h [B, hidden, H, W].

    Args:
        in_channels: channels of x.
        hidden_channels: D, channels of the LSTM state and of the output.
        kernel_size: k of the 1 x k input-to-state mask and of the state-to-state kernel over
            the row above (centred: positions j - k // 2 ... j + (k - 1) // 2).
        mask_type: 'A' when the layer reads the image (hides the current pixel), 'B' after.
        data_channels: colour groups (3 for RGB); see the module docstring.
        backend: forced backend for the masked convolution and lstm_rows, or None for the
            default.
        colour_layout: "contiguous" (the default: channel k of C in colour group
            k * data_channels // C) or "interleaved" (group k % data_channels), for the input,
            the hidden channels and the gates alike; see the module docstring.

    Parameters: ``input_to_state.weight`` [4D, C, 1, k] (a MaskedConv2d without bias),
    ``state_weight`` [4D, D, k] and ``bias`` [4D], gates in the order i, f, o, g.
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3,
                 mask_type: str = "B", data_channels: int = 1, backend: str | None = None,
                 device=None, dtype=None, *, colour_layout: str = "contiguous"):
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1:
            raise ValueError(f"genfast: RowLSTM kernel_size must be a positive int, "
                             f"got {kernel_size!r}")
        super().__init__("RowLSTM", in_channels, hidden_channels, (1, kernel_size), kernel_size,
                         mask_type, data_channels, backend, device, dtype, colour_layout)
        self.kernel_size = kernel_size

    def forward(self, x: torch.Tensor, state=None, return_state: bool = False):
        """x [B, C, H, W] -> h [B, D, H, W].

        ``state`` = (h0, c0), each [B, D, W] or None for zeros: the state of the row above row
        0 (for instance the last row of a previous call, to continue an image). With
        ``return_state`` the result is (h, (h_last, c_last)), the state after the last row;
        c is kept in float32 for float16/bfloat16 inputs.
        """
        _check_input(x, self.in_channels, "RowLSTM")
        h0, c0 = self._check_state(x, state)
        fused_input = self._fused_input(x)
        if fused_input is None:
            h, c = lstm_rows(self._gates(x), self._weight(), self.bias, h0, c0,
                             pad_left=self.kernel_size // 2, backend=self.backend)
        else:  # the masked 1 x k convolution inside the recurrence, row by row
            x_in, in_weight, in_pad_left = fused_input
            h, c = fused.lstm_rows_conv(x_in, in_weight, self._weight(), self.bias, h0, c0,
                                        in_pad_left, self.kernel_size // 2, backend="cpu")
        if return_state:  # copies, so that the state does not hold all of c alive
            return h, (h[:, :, -1].contiguous(), c[:, :, -1].contiguous())
        return h

    def _check_state(self, x: torch.Tensor, state):
        if state is None:
            return None, None
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise ValueError("genfast: RowLSTM state must be a pair (h0, c0)")
        want = (x.shape[0], self.hidden_channels, x.shape[3])
        for name, t in zip(("h0", "c0"), state):
            if t is not None and tuple(t.shape) != want:
                raise ValueError(f"genfast: RowLSTM {name} must have shape [batch, hidden, width]"
                                 f" = {list(want)}, got {list(t.shape)}")
        return state

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, kernel_size={self.kernel_size}"


class _DiagonalLSTM(_LSTMLayer):
    """One direction of the Diagonal BiLSTM: the pixels above and to the left, x -> [B, D, H, W]."""

    def __init__(self, in_channels, hidden_channels, mask_type, data_channels, backend,
                 device=None, dtype=None, colour_layout="contiguous"):
        super().__init__("DiagonalBiLSTM", in_channels, hidden_channels, 1, 2, mask_type,
                         data_channels, backend, device, dtype, colour_layout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        width = x.shape[3]
        fused_input = self._fused_input(x)
        # k = 2, pad_left = 1: position r reads rows r - 1 (above) and r (left) of step s - 1.
        if fused_input is None:
            # [B, 4D, steps = H + W - 1, positions = H]: column s of the skewed map is step s.
            gates = _skew_steps(self._gates(x))
            h, _ = lstm_rows(gates, self._weight(), self.bias, pad_left=1, backend=self.backend)
        else:
            # The 1 x 1 convolution inside the recurrence, on the skewed input (C channels where
            # the skewed gates have 4D), each step computing its pixels and one padding position
            # only (skew_width): about half the skewed map.
            x_in, in_weight, in_pad_left = fused_input
            h, _ = fused.lstm_rows_conv(_skew_steps(x_in), in_weight, self._weight(), self.bias,
                                        in_pad_left=in_pad_left, pad_left=1, skew_width=width,
                                        backend="cpu")
        return _unskew_steps(h, width)


class DiagonalBiLSTM(nn.Module):
    """PixelRNN's Diagonal BiLSTM layer (section 3.2): forward(x [B, C, H, W]) -> [B, D, H, W].

    The sum of a left-to-right diagonal LSTM and a right-to-left one shifted down a row, so that
    output (r, j) sees every earlier pixel in raster order (no blind spot) and none after it.

    Args:
        in_channels: channels of x.
        hidden_channels: D, channels of each direction's state and of the output.
        mask_type: 'B' (usual: after a mask-A convolution); 'A' only with data_channels > 1,
            since a 1 x 1 mask A hides every input of a single colour group.
        data_channels: colour groups (3 for RGB); see the module docstring.
        backend: forced backend for the masked convolutions and lstm_rows, or None.
        colour_layout: "contiguous" (the default: channel k of C in colour group
            k * data_channels // C) or "interleaved" (group k % data_channels), for the input,
            the hidden channels and the gates alike; see the module docstring.

    Parameters: ``left_to_right`` and ``right_to_left`` hold each an ``input_to_state`` 1 x 1
    MaskedConv2d without bias, a ``state_weight`` [4D, D, 2] and a ``bias`` [4D].
    """

    def __init__(self, in_channels: int, hidden_channels: int, mask_type: str = "B",
                 data_channels: int = 1, backend: str | None = None, device=None, dtype=None,
                 *, colour_layout: str = "contiguous"):
        super().__init__()
        if mask_type == "A" and data_channels == 1:
            raise ValueError("genfast: DiagonalBiLSTM with mask_type 'A' and one colour group "
                             "sees no input (a 1 x 1 mask A hides the only pixel it reads); put a "
                             "mask-A convolution first and use mask 'B' here, as PixelRNN does")
        args = (in_channels, hidden_channels, mask_type, data_channels, backend, device, dtype,
                colour_layout)
        self.left_to_right = _DiagonalLSTM(*args)
        self.right_to_left = _DiagonalLSTM(*args)
        self.in_channels, self.hidden_channels = in_channels, hidden_channels
        self.mask_type, self.data_channels, self.backend = mask_type, data_channels, backend
        self.colour_layout = colour_layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.in_channels, "DiagonalBiLSTM")
        if _backend.select("lstm_rows", self.backend, x.device, x.dtype,
                           IMPLEMENTED) == "triton":
            left, right = self._both_directions(x)
        else:
            left, right = self.left_to_right(x), self.right_to_left(x.flip(3))
        # right sees row r from column j to the end; a row lower it is all in the past.
        return left + shift_down(right.flip(3))

    def _both_directions(self, x: torch.Tensor):
        """Each direction's h, the right-to-left one on the mirrored image, from one grouped
        recurrence (one launch per step for both on the Triton backend): the directions stacked
        along the batch, each with its own weights."""
        directions = (self.left_to_right, self.right_to_left)
        gates = torch.cat([_skew_steps(d._gates(image))
                           for d, image in zip(directions, (x, x.flip(3)))])
        weight = torch.stack([d._weight() for d in directions])
        bias = torch.stack([d.bias for d in directions])
        h, _ = lstm_rows_grouped(gates, weight, bias, pad_left=1, backend=self.backend)
        return _unskew_steps(h, x.shape[3]).chunk(2)

    def extra_repr(self) -> str:
        return _extra_repr(self)
