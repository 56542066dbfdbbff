"""Host side of the masked convolution's Triton launchers (kernels/masked_conv.py) that needs no
Triton: the geometry of a call (visible taps, colour rule, window), the packed weights, the
precision torch asks for and the launch-settings key of the target. Only integer arithmetic
and cached tables run per call (kernels/_host.py)."""
from __future__ import annotations

import functools

import torch

from ._host import cached_table


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@functools.lru_cache(maxsize=16)
def capability_key(device: torch.device) -> int:
    """The launch-settings key of a device: 90 for Hopper and later, else 80 (also for the
    interpreter on the CPU)."""
    if device.type != "cuda":
        return 80
    major, _ = torch.cuda.get_device_capability(device)
    return 90 if major >= 9 else 80


@functools.lru_cache(maxsize=16)
def multiprocessors(device: torch.device) -> int:
    """SMs of a CUDA device (asked once per device: a host query, no synchronisation)."""
    return torch.cuda.get_device_properties(device).multi_processor_count


def variant_key(dtype: torch.dtype) -> str:
    """The launch-settings key of a dtype at the precision torch asks for now. float32 runs in
    TF32 exactly when cuDNN may use TF32 for convolutions (the reference's own precision):
    torch.backends.cudnn.allow_tf32, or the newer torch.backends.cudnn.conv.fp32_precision,
    read as the conv getter resolves it so that mixing the two APIs does not raise."""
    if dtype == torch.float32:
        tf32 = torch._C._get_fp32_precision_getter("cuda", "conv") == "tf32"
        return "tf32" if tf32 else "ieee"
    return {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64"}[dtype]


@cached_table()
def centre_mask(layer, device, dtype) -> torch.Tensor:
    """[Cin, Cout] 0/1 of the centre tap's colour rule for ``layer`` = (cin, cout, kh, kw,
    mask_type, data_channels), in the packed weights' layout."""
    cin, cout, _, _, mask_type, data_channels = layer
    group_in = torch.arange(cin) * data_channels // max(cin, 1)
    group_out = torch.arange(cout) * data_channels // max(cout, 1)
    allowed = (group_in[:, None] < group_out[None, :] if mask_type == 0
               else group_in[:, None] <= group_out[None, :])
    return allowed.to(device=device, dtype=dtype)


class Geometry:
    """Visible taps, colour rule and window of one call, with the meaning of
    csrc/masked_conv_common.cpp. Only integer arithmetic runs per call."""

    def __init__(self, x, weight, mask_type, data_channels, dilation, window):
        if x.dim() != 4 or weight.dim() != 4 or x.shape[1] != weight.shape[1]:
            raise RuntimeError(f"genfast: masked_conv2d expects x [B, C, H, W] and weight "
                               f"[out, C, kh, kw], got {tuple(x.shape)} and {tuple(weight.shape)}")
        if mask_type not in (0, 1, 2) or dilation < 1:
            raise RuntimeError(f"genfast: bad mask_type {mask_type} or dilation {dilation}")
        self.batch, self.cin, self.height, self.width = x.shape
        self.cout, _, self.kh, self.kw = weight.shape
        self.dilation = dilation
        self.cy, self.cx = (self.kh - 1) // 2, (self.kw - 1) // 2
        if window:
            if len(window) != 4 or not (0 <= window[0] <= window[1] <= self.height
                                        and 0 <= window[2] <= window[3] <= self.width):
                raise RuntimeError(f"genfast: window {list(window)} is not inside the "
                                   f"{self.height}x{self.width} output")
            self.row0, self.row1, self.col0, self.col1 = (int(v) for v in window)
        else:
            self.row0, self.row1, self.col0, self.col1 = 0, self.height, 0, self.width
        self.win_h, self.win_w = self.row1 - self.row0, self.col1 - self.col0
        self.layer = (self.cin, self.cout, self.kh, self.kw, mask_type, data_channels)
        if mask_type == 2:
            # Mask V: the centre row and the rows above, whole, with no colour rule.
            self.num_taps, self.has_centre = (self.cy + 1) * self.kw, False
        else:
            # The centre carries some channel pair when mask B has channels, or when mask A's
            # top output group (which sees input group 0) is past group 0.
            top_group = (self.cout - 1) * data_channels // self.cout if self.cout else 0
            self.has_centre = self.cin > 0 and self.cout > 0 and (mask_type == 1 or top_group > 0)
            self.num_taps = self.cy * self.kw + self.cx + int(self.has_centre)
        # Image rows and columns that some visible tap of a window pixel reads: grad-input is
        # zero elsewhere. Taps reach cy rows up and none down, cx columns left and kw-1-cx right.
        self.read_rows = (max(0, self.row0 - self.cy * dilation), self.row1)
        self.read_cols = (max(0, self.col0 - self.cx * dilation),
                          min(self.width, self.col1 + (self.kw - 1 - self.cx) * dilation))

    def packed_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """[T, Cin, Cout]: the visible taps' weights, the centre with its colour mask applied."""
        taps = weight.reshape(self.cout, self.cin, self.kh * self.kw)[:, :, :self.num_taps]
        packed = taps.permute(2, 1, 0).contiguous()
        if self.has_centre:
            packed[-1] *= centre_mask(self.layer, weight.device, weight.dtype)
        return packed

    def tap_args(self, mirrored=False) -> tuple:
        step = -self.dilation if mirrored else self.dilation
        return self.num_taps, self.kw, self.cy, self.cx, step
