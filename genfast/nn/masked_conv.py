"""The PixelCNN layer: a drop-in nn.Conv2d whose kernel only sees earlier pixels."""
import torch
from torch import nn

from genfast.ops.masked_conv import (MASK_TYPES, check_interleaving, conv_mask, masked_conv2d,
                                     masked_conv2d_on_windows)


class MaskedConv2d(nn.Conv2d):
    """nn.Conv2d with a PixelCNN mask, computed without the hidden taps.

    Same ``weight`` [out, in, kh, kw] and ``bias`` parameters, initialisation and state_dict keys
    as nn.Conv2d, so existing checkpoints load; a state dict that also carries the ``mask``
    buffer other PixelCNN code keeps (multiplied into the weight before each forward) loads too,
    once the mask is checked to be this layer's (:meth:`state_dict_with_mask` writes that form).
    Stride 1 with 'same' padding only: ``padding`` may be "same" or, for odd kernels,
    kernel_size // 2 * dilation (what PixelCNN code passes). Takes [B, C, H, W] and, as
    nn.Conv2d does, unbatched [C, H, W] input.

    Args:
        mask_type: 'A' (the default) for the first layer (hides the current pixel), 'B' for the
            others, 'V' for a Gated PixelCNN vertical stack (sees its own row: shift it down
            before use).
        data_channels: colour groups of the channels (3 for RGB data, see genfast.masked_conv2d).
        backend: forced backend for this layer, or None for genfast's default.
        mask_center: instead of mask_type, as other PixelCNN code spells it: True for 'B' (the
            kernel sees the current pixel), False for 'A'.
        colour_layout: where the colour groups sit among the channels: "contiguous" (the
            default: channel k of C in group k * data_channels // C, blocks R..., G..., B...)
            or "interleaved" (group k % data_channels: R, G, B, R, G, B, ..., as some other
            PixelCNN code lays them out). Same weight shape either way; only the mask moves.
    """

    def __init__(self, in_channels, out_channels, kernel_size, mask_type=None, data_channels=1,
                 bias=True, dilation=1, stride=1, padding="same", backend=None,
                 device=None, dtype=None, *, mask_center=None, colour_layout="contiguous"):
        if isinstance(in_channels, str):
            raise TypeError(f"genfast: MaskedConv2d takes (in_channels, out_channels, kernel_size, "
                            f"mask_type='A', ...) and got the mask type {in_channels!r} first: "
                            f"write MaskedConv2d({out_channels}, {kernel_size}, {mask_type}, "
                            f"mask_type={in_channels!r})")
        if mask_center is not None:
            if mask_type is not None:
                raise ValueError("genfast: give MaskedConv2d mask_type or mask_center, not both")
            mask_type = "B" if mask_center else "A"
        mask_type = "A" if mask_type is None else mask_type
        if mask_type not in MASK_TYPES:
            raise ValueError(f"genfast: mask_type must be 'A', 'B' or 'V', got {mask_type!r}")
        if stride not in (1, (1, 1)):
            raise ValueError(f"genfast: MaskedConv2d supports stride 1 only, got {stride!r}")
        if isinstance(dilation, tuple):
            if len(set(dilation)) != 1:
                raise ValueError(f"genfast: MaskedConv2d needs equal dilations, got {dilation}")
            dilation = dilation[0]
        super().__init__(in_channels, out_channels, kernel_size, stride=1, padding="same",
                         dilation=dilation, bias=bias, device=device, dtype=dtype)
        kh, kw = self.kernel_size
        same = ((kh - 1) // 2 * dilation, (kw - 1) // 2 * dilation)
        if padding != "same" and not (kh % 2 and kw % 2 and padding in (same, same[0])
                                      and same[0] == same[1]):
            raise ValueError(f"genfast: MaskedConv2d pads 'same'; padding={padding!r} would "
                             f"change the output size (use 'same' or {same[0]})")
        if not 1 <= data_channels <= min(in_channels, out_channels):
            raise ValueError(f"genfast: data_channels must be between 1 and "
                             f"min(in_channels, out_channels), got {data_channels}")
        check_interleaving(colour_layout, mask_type, data_channels, in_channels, out_channels)
        self.mask_type, self.data_channels, self.backend = mask_type, data_channels, backend
        self.colour_layout = colour_layout

    def forward(self, x, window=None):
        if isinstance(x, torch.Tensor) and x.dim() == 3:  # unbatched [C, H, W], as nn.Conv2d
            return self.forward(x.unsqueeze(0), window).squeeze(0)
        return masked_conv2d(x, self.weight, self.bias, self.mask_type, self.data_channels,
                             self.dilation[0], window=window, backend=self.backend,
                             colour_layout=self.colour_layout)

    def mask(self) -> torch.Tensor:
        """The 0/1 mask [out, in, kh, kw] of the taps this layer sees, on its weight's device."""
        return conv_mask(*self.weight.shape, self.mask_type, self.data_channels,
                         self.colour_layout).to(
            device=self.weight.device, dtype=self.weight.dtype)

    def state_dict_with_mask(self) -> dict:
        """The layer in the plain form of other PixelCNN code: nn.Conv2d's ``weight`` (hidden
        taps zeroed) and ``bias``, plus the ``mask`` buffer they multiply into the weight."""
        mask = self.mask()
        state = {"weight": self.weight.detach() * mask, "mask": mask}
        if self.bias is not None:
            state["bias"] = self.bias.detach().clone()
        return state

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # Another PixelCNN's mask buffer: checked against this layer's mask, then dropped (the
        # kernels never read the taps it hides).
        key = prefix + "mask"
        if key in state_dict:
            problem = self._mask_mismatch(state_dict.pop(key))
            if problem:
                group = ("k * data_channels // C" if self.colour_layout == "contiguous"
                         else "k % data_channels")
                error_msgs.append(
                    f"genfast: {key} is not this MaskedConv2d's mask (mask_type="
                    f"{self.mask_type!r}, data_channels={self.data_channels}, colour_layout="
                    f"{self.colour_layout!r}: with colour groups, channel k of C is in group "
                    f"{group}): {problem}")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def _mask_mismatch(self, given) -> str:
        """Why ``given`` (any shape that broadcasts to the weight's) is not this layer's mask,
        or ''."""
        mine = self.mask().bool().cpu()
        try:
            given = torch.as_tensor(given).detach().cpu().expand(mine.shape) != 0
        except RuntimeError:
            return f"its shape {tuple(given.shape)} does not match the weight's {tuple(mine.shape)}"
        differ = (given != mine).nonzero()
        if len(differ) == 0:
            return ""
        co, ci, ty, tx = differ[0].tolist()
        state = "shows" if mine[co, ci, ty, tx] else "hides"
        return (f"{len(differ)} of {mine.numel()} entries differ, e.g. [{co}, {ci}, {ty}, {tx}], "
                f"which this layer {state}")

    def forward_window(self, x, row0: int, row1: int, col0: int, col1: int):
        """Only the outputs in rows [row0, row1) and columns [col0, col1) of forward(x):
        [B, out, row1 - row0, col1 - col0], for samplers that add a pixel or a row at a time.

        The kernel reads just the part of x those outputs see, no rows below row1 since every
        mask hides the rows below its centre, so the cost follows the window, not the image.
        """
        return self.window_evaluator(x)(x, row0, row1, col0, col1)

    def window_evaluator(self, example):
        """``evaluate(x, row0, row1, col0, col1)``: forward_window for inputs like ``example``,
        with the argument checks and the backend choice done once (a sampler calls it per
        pixel; under torch.inference_mode() the op also skips its autograd wrapper, and the
        cpu backend packs the weight once, again only if it changes in place)."""
        conv = masked_conv2d_on_windows(example, self.weight, self.bias, self.mask_type,
                                        self.data_channels, self.dilation[0],
                                        backend=self.backend, colour_layout=self.colour_layout)
        kh, kw = self.kernel_size
        d = self.dilation[0]
        above, left_of, right_of = (kh - 1) // 2 * d, (kw - 1) // 2 * d, kw // 2 * d

        def evaluate(x, row0, row1, col0, col1):
            top, left = max(0, row0 - above), max(0, col0 - left_of)
            right = min(x.shape[3], col1 + right_of)
            return conv(x[:, :, top:row1, left:right],
                        [row0 - top, row1 - top, col0 - left, col1 - left])
        return evaluate

    def extra_repr(self) -> str:
        layout = (f", colour_layout={self.colour_layout!r}"
                  if self.colour_layout != "contiguous" else "")
        return (f"{super().extra_repr()}, mask_type={self.mask_type!r}, "
                f"data_channels={self.data_channels}{layout}")
