"""The PixelCNN layer: a drop-in nn.Conv2d whose kernel only sees earlier pixels."""
from torch import nn

from genfast.ops.masked_conv import MASK_TYPES, masked_conv2d, masked_conv2d_on_windows


class MaskedConv2d(nn.Conv2d):
    """nn.Conv2d with a PixelCNN mask, computed without the hidden taps.

    Same ``weight`` [out, in, kh, kw] and ``bias`` parameters, initialisation and state_dict keys
    as nn.Conv2d, so existing checkpoints load. Stride 1 with 'same' padding only: ``padding`` may
    be "same" or, for odd kernels, kernel_size // 2 * dilation (what PixelCNN code passes).

    Args:
        mask_type: 'A' for the first layer (hides the current pixel), 'B' for the others, 'V'
            for a Gated PixelCNN vertical stack (sees its own row: shift it down before use).
        data_channels: colour groups of the channels (3 for RGB data, see genfast.masked_conv2d).
        backend: forced backend for this layer, or None for genfast's default.
    """

    def __init__(self, in_channels, out_channels, kernel_size, mask_type="A", data_channels=1,
                 bias=True, dilation=1, stride=1, padding="same", backend=None,
                 device=None, dtype=None):
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
        self.mask_type, self.data_channels, self.backend = mask_type, data_channels, backend

    def forward(self, x, window=None):
        return masked_conv2d(x, self.weight, self.bias, self.mask_type, self.data_channels,
                             self.dilation[0], window=window, backend=self.backend)

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
                                        backend=self.backend)
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
        return (f"{super().extra_repr()}, mask_type={self.mask_type!r}, "
                f"data_channels={self.data_channels}")
