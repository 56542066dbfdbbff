"""PixelCNN masked convolution (van den Oord et al. 2016, "Pixel Recurrent Neural Networks",
section 3.4, and "Conditional Image Generation with PixelCNN Decoders").

A masked convolution is a stride-1, 'same'-padded convolution whose kernel only sees pixels
before the current one in raster order. The kernel's centre is tap ((kh-1)//2, (kw-1)//2), as
nn.Conv2d's padding="same" places it. Visible taps: every row above the centre, the taps left of
the centre in its row, and the centre itself for the channel pairs the colour rule allows. With
``data_channels`` colour groups (3 for RGB), channel k of C belongs to group k * data_channels // C
(``colour_layout="contiguous"``, the default: blocks R..., G..., B...) or to group
k % data_channels (``"interleaved"``: R, G, B, R, G, B, ..., the layout of some other PixelCNN
code); mask A lets an output group see strictly earlier input groups at the centre (G sees R, B
sees R and G), mask B also its own group. With one group, mask A hides the centre and mask B
shows it.
Mask V is the Gated PixelCNN's vertical stack: the centre row and every row above it, whole; it
sees the current row, so its output must be shifted down a row before a causal layer reads it.

The reference multiplies the weight by the mask and runs a dense convolution, as public PixelCNN
code does. The fast kernels never touch the hidden taps, in forward and in both backward passes.
They compute the colour groups themselves, contiguous ones, from (mask_type, data_channels);
the interleaved layout reaches them as a channel permutation (the colour layouts section).
``window`` evaluates only part of the output, for samplers that need one new row or pixel.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch._prims_common import suggest_memory_format
from torch.utils._python_dispatch import _get_current_dispatch_mode

from genfast import _backend, _ext
from genfast.ops._library import register_fake_and_autograd, triton_kernels_exist

MASK_TYPES = {"A": 0, "B": 1, "V": 2}


# ----------------------------------------------------------------------------- reference

COLOUR_LAYOUTS = ("contiguous", "interleaved")


def check_colour_layout(colour_layout) -> None:
    if colour_layout not in COLOUR_LAYOUTS:
        raise ValueError(f"genfast: colour_layout must be 'contiguous' or 'interleaved', got "
                         f"{colour_layout!r}")


def colour_groups(channels: int, data_channels: int,
                  colour_layout: str = "contiguous") -> torch.Tensor:
    """The colour group of each of ``channels`` channels: int64 [channels], k * data_channels //
    channels (contiguous) or k % data_channels (interleaved)."""
    check_colour_layout(colour_layout)
    k = torch.arange(channels)
    if colour_layout == "interleaved":
        return k % data_channels
    return k * data_channels // max(channels, 1)


def conv_mask(out_channels: int, in_channels: int, kh: int, kw: int, mask_type: str,
              data_channels: int = 1, colour_layout: str = "contiguous") -> torch.Tensor:
    """The [out, in, kh, kw] 0/1 float mask of a PixelCNN kernel (see the module docstring);
    ``colour_layout`` "contiguous" (the default) or "interleaved" places the colour groups."""
    check_colour_layout(colour_layout)
    cy, cx = (kh - 1) // 2, (kw - 1) // 2
    mask = torch.zeros(out_channels, in_channels, kh, kw)
    if mask_type == "V":
        mask[:, :, :cy + 1, :] = 1
        return mask
    mask[:, :, :cy, :] = 1
    mask[:, :, cy, :cx] = 1
    group_in = colour_groups(in_channels, data_channels, colour_layout)
    group_out = colour_groups(out_channels, data_channels, colour_layout)
    if mask_type == "A":
        allowed = group_in[None, :] < group_out[:, None]
    else:
        allowed = group_in[None, :] <= group_out[:, None]
    mask[:, :, cy, cx] = allowed.float()
    return mask


@functools.lru_cache(maxsize=32)
def _kept_mask(shape, mask_type, data_channels, colour_layout, device, dtype) -> torch.Tensor:
    # Outside inference mode, so that a mask first built in a sampler serves training too.
    with torch.inference_mode(False):
        return conv_mask(*shape, mask_type, data_channels, colour_layout).to(device, dtype)


def _mask_like(weight, mask_type, data_channels, colour_layout) -> torch.Tensor:
    """conv_mask on weight's device and dtype, built once per layer shape, device and dtype:
    on a GPU, where auto runs the reference, a mask built per call would be a host-to-device
    copy per call. Built afresh for torch.compile and other tracers, which must see it made."""
    if (torch.compiler.is_compiling() or _get_current_dispatch_mode() is not None
            or type(weight) not in (torch.Tensor, torch.nn.Parameter)):
        return conv_mask(*weight.shape, mask_type, data_channels, colour_layout).to(
            weight.device, weight.dtype)
    return _kept_mask(tuple(weight.shape), mask_type, data_channels, colour_layout,
                      weight.device, weight.dtype)


def masked_conv2d_ref(x, weight, bias=None, mask_type="B", data_channels=1, dilation=1,
                      window=None, colour_layout="contiguous"):
    """Dense convolution with the masked weight, then the window cut out of the output."""
    mask = _mask_like(weight, mask_type, data_channels, colour_layout)
    if x.shape[1] == 0:
        # F.conv2d gives no output channels without input channels; each output is an empty
        # sum (x.sum() + weight.sum(), which keeps both in the graph), plus the bias.
        empty_sum = x.sum() + weight.sum()
        y = empty_sum.expand(x.shape[0], weight.shape[0], *x.shape[2:])
        y = y if bias is None else y + bias.view(1, -1, 1, 1)
    else:
        y = F.conv2d(x, weight * mask, bias, padding="same", dilation=dilation)
    if window is not None:
        row0, row1, col0, col1 = window
        y = y[:, :, row0:row1, col0:col1]
    return y


# ----------------------------------------------------------------------------- the op

def _out_shape(x, weight, window):
    if window:
        return (x.shape[0], weight.shape[0], window[1] - window[0], window[3] - window[2])
    return (x.shape[0], weight.shape[0], x.shape[2], x.shape[3])


def _fake_forward(x, weight, bias, mask_type, data_channels, dilation, window):
    y = x.new_empty(_out_shape(x, weight, window))
    return y.contiguous(memory_format=suggest_memory_format(x))


def _fake_backward(grad_y, x, weight, mask_type, data_channels, dilation, window, output_mask):
    gx = torch.empty_like(x, memory_format=suggest_memory_format(x)) if output_mask[0] \
        else x.new_empty(0)
    gw = weight.new_empty(weight.shape) if output_mask[1] else weight.new_empty(0)
    gb = x.new_empty(weight.shape[0]) if output_mask[2] else x.new_empty(0)
    return gx, gw, gb


def _setup_context(ctx, inputs, output):
    x, weight, bias, mask_type, data_channels, dilation, window = inputs
    ctx.save_for_backward(x, weight)
    ctx.args = (mask_type, data_channels, dilation, window)
    ctx.has_bias = bias is not None


def _make_backward(backward_op):
    def backward(ctx, grad_y):
        x, weight = ctx.saved_tensors
        wants = [ctx.needs_input_grad[0], ctx.needs_input_grad[1],
                 ctx.has_bias and ctx.needs_input_grad[2]]
        gx, gw, gb = backward_op(grad_y, x, weight, *ctx.args, wants)
        return (gx if wants[0] else None, gw if wants[1] else None, gb if wants[2] else None,
                None, None, None, None)

    return backward


@torch.library.custom_op("genfast::masked_conv2d_triton", mutates_args=())
def _triton_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                    mask_type: int, data_channels: int, dilation: int,
                    window: list[int]) -> torch.Tensor:
    """genfast::masked_conv2d on Triton (schema as in csrc/registration.cpp).

    Defined here rather than in C++ so that the Triton backend works without the extension.
    """
    from genfast.kernels import masked_conv as kernels

    return kernels.masked_conv2d_forward(x, weight, bias, mask_type, data_channels, dilation,
                                         window)


@torch.library.custom_op("genfast::masked_conv2d_triton_backward", mutates_args=())
def _triton_backward(grad_y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                     mask_type: int, data_channels: int, dilation: int, window: list[int],
                     output_mask: list[bool]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from genfast.kernels import masked_conv as kernels

    return kernels.masked_conv2d_backward(grad_y, x, weight, mask_type, data_channels, dilation,
                                          window, output_mask)


def _register(forward_name: str, backward_name: str) -> None:
    register_fake_and_autograd(forward_name, backward_name, _fake_forward, _fake_backward,
                               _make_backward, _setup_context)


_FORWARD_OPS = {}
if triton_kernels_exist("masked_conv"):
    _register("genfast::masked_conv2d_triton", "genfast::masked_conv2d_triton_backward")
    _FORWARD_OPS["triton"] = torch.ops.genfast.masked_conv2d_triton
if _ext.has_op("masked_conv2d"):
    _register("genfast::masked_conv2d", "genfast::masked_conv2d_backward")
    _FORWARD_OPS["cpu"] = torch.ops.genfast.masked_conv2d
    if _ext.has_kernel("masked_conv2d", "CUDA"):
        _FORWARD_OPS["cuda"] = torch.ops.genfast.masked_conv2d
# A stale build of the extension may lack the op: then only the reference implements it.
IMPLEMENTED = ("reference", *_FORWARD_OPS)


def _visible_taps(out_channels, in_channels, kh, kw, mask_code, data_channels) -> int:
    """How many taps the C++ kernels run (csrc/masked_conv_common.cpp's visible_taps)."""
    cy, cx = (kh - 1) // 2, (kw - 1) // 2
    if mask_code == MASK_TYPES["V"]:
        return (cy + 1) * kw
    # The centre runs when some channel pair passes the colour rule: group 0 with the top group.
    top_group = (out_channels - 1) * data_channels // out_channels if out_channels > 0 else 0
    centre = (in_channels > 0 and out_channels > 0
              and (mask_code == MASK_TYPES["B"] or top_group > 0))
    return cy * kw + cx + int(centre)


def _packed_weight_shape(x, weight, mask_code, data_channels) -> tuple[int, torch.dtype]:
    """The size and dtype of masked_conv2d_pack_weight's result: the visible taps' [in][out]
    blocks, out padded to whole 64-byte vectors of the compute dtype."""
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    lanes = 64 // (8 if dtype == torch.float64 else 4)
    out_channels, in_channels, kh, kw = weight.shape
    taps = _visible_taps(out_channels, in_channels, kh, kw, mask_code, data_channels)
    return taps * in_channels * ((out_channels + lanes - 1) // lanes * lanes), dtype


if _ext.has_op("masked_conv2d_prepacked"):
    @torch.library.register_fake("genfast::masked_conv2d_pack_weight")
    def _fake_pack_weight(x, weight, mask_type, data_channels, dilation):
        size, dtype = _packed_weight_shape(x, weight, mask_type, data_channels)
        return x.new_empty(size, dtype=dtype)

    @torch.library.register_fake("genfast::masked_conv2d_prepacked")
    def _fake_prepacked(x, packed_weight, weight, bias, mask_type, data_channels, dilation,
                        window):
        return _fake_forward(x, weight, bias, mask_type, data_channels, dilation, window)


# ----------------------------------------------------------------------------- public API

def _check_args(x, weight, bias, mask_type, data_channels, dilation, window,
                colour_layout="contiguous"):
    for name, t in (("x", x), ("weight", weight)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"genfast: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in _backend.FLOAT_DTYPES:
            raise TypeError(f"genfast: {name} must be float16, bfloat16, float32 or float64, "
                            f"got {t.dtype}")
    if x.dim() != 4:
        raise ValueError(f"genfast: x must be [batch, channels, height, width], got shape "
                         f"{tuple(x.shape)}")
    if weight.dim() != 4:
        raise ValueError(f"genfast: weight must be [out, in, kh, kw], got shape "
                         f"{tuple(weight.shape)}")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"genfast: x has {x.shape[1]} channels but weight expects "
                         f"{weight.shape[1]}")
    if min(weight.shape[2:]) < 1:
        raise ValueError(f"genfast: empty kernel {tuple(weight.shape[2:])}")
    if x.dtype != weight.dtype:
        raise TypeError(f"genfast: x and weight must have the same dtype, got {x.dtype} and "
                        f"{weight.dtype}")
    if x.device != weight.device:
        raise ValueError(f"genfast: x is on {x.device} but weight is on {weight.device}")
    if bias is not None:
        if not isinstance(bias, torch.Tensor) or bias.shape != (weight.shape[0],):
            raise ValueError(f"genfast: bias must be a tensor of shape ({weight.shape[0]},)")
        if bias.dtype != x.dtype or bias.device != x.device:
            raise ValueError(f"genfast: bias must match x's dtype {x.dtype} and device "
                             f"{x.device}, got {bias.dtype} on {bias.device}")
    if mask_type not in MASK_TYPES:
        raise ValueError(f"genfast: mask_type must be 'A', 'B' or 'V', got {mask_type!r}")
    channels = min(weight.shape[0], weight.shape[1])
    if not isinstance(data_channels, int) or not 1 <= data_channels <= max(channels, 1):
        raise ValueError(f"genfast: data_channels must be an int between 1 and the number of "
                         f"input and output channels ({channels}), got {data_channels!r}")
    check_interleaving(colour_layout, mask_type, data_channels, weight.shape[1],
                       weight.shape[0])
    if not isinstance(dilation, int) or isinstance(dilation, bool) or dilation < 1:
        raise ValueError(f"genfast: dilation must be an int >= 1, got {dilation!r}")
    if window is not None:
        h, w = x.shape[2], x.shape[3]
        if len(window) != 4 or not (0 <= window[0] <= window[1] <= h
                                    and 0 <= window[2] <= window[3] <= w):
            raise ValueError(f"genfast: window must be (row0, row1, col0, col1) inside the "
                             f"{h}x{w} output, got {window!r}")


def masked_conv2d(x, weight, bias=None, mask_type="B", data_channels=1, dilation=1, *,
                  window=None, backend=None, colour_layout="contiguous"):
    """PixelCNN masked convolution, stride 1, 'same' padding.

    Args:
        x: [B, C_in, H, W] (NCHW or channels_last).
        weight: [C_out, C_in, kh, kw]; the hidden taps' values are ignored (their gradient is 0).
        bias: optional [C_out].
        mask_type: 'A' (first layer: hides the current pixel), 'B', or 'V' (vertical stack).
        data_channels: colour groups of the channels (3 for RGB data), 1 for none.
        dilation: spacing of the kernel taps.
        window: optional (row0, row1, col0, col1): compute only that part of the output.
        backend: 'auto', 'reference' or 'cpu' (default: see genfast.backends).
        colour_layout: "contiguous" (the default: channel k of C in colour group
            k * data_channels // C) or "interleaved" (group k % data_channels).
    Returns:
        [B, C_out, H, W], or [B, C_out, row1 - row0, col1 - col0] with a window, in x's memory
        format.
    """
    _check_args(x, weight, bias, mask_type, data_channels, dilation, window, colour_layout)
    window = tuple(int(v) for v in window) if window is not None else None
    name = _backend.select("masked_conv2d", backend, x.device, x.dtype, IMPLEMENTED)
    if name == "reference":
        return masked_conv2d_ref(x, weight, bias, mask_type, data_channels, dilation, window,
                                 colour_layout)
    op_args = (MASK_TYPES[mask_type], data_channels, dilation, list(window or ()))
    if permutes_channels(colour_layout, mask_type, data_channels, *weight.shape[:2]):
        return _interleaved_call(lambda *tensors: _FORWARD_OPS[name](*tensors, *op_args),
                                 x, weight, bias, data_channels)
    return _FORWARD_OPS[name](x, weight, bias, *op_args)


def masked_conv2d_on_windows(example, weight, bias=None, mask_type="B", data_channels=1,
                             dilation=1, *, backend=None, colour_layout="contiguous"):
    """masked_conv2d with its checks and backend choice done once, for a sampler that calls it
    for every pixel: returns ``conv(x, window)`` = masked_conv2d(x, weight, bias, ...,
    window=window) for inputs x like ``example`` (same channels, dtype and device).

    The kernels still check each call's shapes and window; only the Python-side work goes.
    Autograd works as for masked_conv2d; under torch.inference_mode() the op skips its
    autograd wrapper, which costs about as much as a one-pixel kernel call, and the cpu
    backend packs the weight for its kernel once rather than per call (see
    _prepacked_windows).
    """
    _check_args(example, weight, bias, mask_type, data_channels, dilation, None, colour_layout)
    name = _backend.select("masked_conv2d", backend, example.device, example.dtype, IMPLEMENTED)
    if name == "reference":
        def conv(x, window):
            return masked_conv2d_ref(x, weight, bias, mask_type, data_channels, dilation,
                                     window or None, colour_layout)
        return conv
    if permutes_channels(colour_layout, mask_type, data_channels, *weight.shape[:2]):
        return _interleaved_windows(example, weight, bias, mask_type, data_channels, dilation,
                                    name)
    op, code = _FORWARD_OPS[name].default, MASK_TYPES[mask_type]
    if name == "cpu" and _ext.has_op("masked_conv2d_prepacked"):
        return _prepacked_windows(example, weight, bias, code, data_channels, dilation, op)

    def conv(x, window):
        return op(x, weight, bias, code, data_channels, dilation, window)
    return conv


def _prepacked_windows(example, weight, bias, code, data_channels, dilation, op):
    """masked_conv2d_on_windows's conv for the cpu backend. Under torch.inference_mode() (a
    sampler) the kernel's packed copy of the weight is made once, and again only when the
    weight changes in place (its version counter moves): packing was 60% of a one-pixel
    64 -> 64 3x3 call (25 -> 10 us). With autograd on, or an inference-mode weight (no version
    counter), each call packs as masked_conv2d does."""
    pack = torch.ops.genfast.masked_conv2d_pack_weight.default
    prepacked = torch.ops.genfast.masked_conv2d_prepacked.default
    packed = {}  # weight._version -> the packed weight of that version

    def conv(x, window):
        if not torch.is_inference_mode_enabled() or weight.is_inference():
            return op(x, weight, bias, code, data_channels, dilation, window)
        version = weight._version
        if version not in packed:
            packed.clear()
            packed[version] = pack(example, weight, code, data_channels, dilation)
        return prepacked(x, packed[version], weight, bias, code, data_channels, dilation, window)
    return conv


# ----------------------------------------------------------------------------- colour layouts
# The fast kernels (C++, CUDA, Triton) find the colour groups themselves from (mask_type,
# data_channels), as contiguous blocks; they take no mask. An interleaved layer is the same
# convolution with its channels listed in another order, so permuting the input channels, the
# weight's in and out channels and the bias into group order, and the output back, gives the
# interleaved result on every backend with the kernels unchanged. The permutations are exact
# (no rounding) and autograd carries them into the backward; the price is one copy of x and
# one of y per call. The reference builds the interleaved mask instead, so the tests hold the
# permuted kernels to an independent oracle.

def _group_sizes(channels: int, data_channels: int, colour_layout: str) -> list[int]:
    """Channels per colour group, from the sizes alone (plain ints for torch.compile)."""
    if colour_layout == "interleaved":
        return [(channels - g + data_channels - 1) // data_channels
                for g in range(data_channels)]
    # Contiguous group g holds the k with ceil(g C / D) <= k < ceil((g + 1) C / D).
    starts = [-(-g * channels // data_channels) for g in range(data_channels + 1)]
    return [starts[g + 1] - starts[g] for g in range(data_channels)]


def check_interleaving(colour_layout, mask_type, data_channels, in_channels,
                       out_channels) -> None:
    """A clear error for a colour layout the kernels cannot run: an unknown name, or
    interleaved groups whose sizes no channel permutation turns into contiguous blocks
    (possible with more than 3 groups only, e.g. 6 channels in 4 groups: 2, 2, 1, 1
    interleaved against 2, 1, 2, 1 contiguous)."""
    check_colour_layout(colour_layout)
    if colour_layout == "contiguous" or mask_type == "V" or data_channels == 1:
        return
    for side, channels in (("input", in_channels), ("output", out_channels)):
        if (_group_sizes(channels, data_channels, "interleaved")
                != _group_sizes(channels, data_channels, "contiguous")):
            raise ValueError(f"genfast: colour_layout='interleaved' cannot split {channels} "
                             f"{side} channels into {data_channels} colour groups (the kernels "
                             f"need the group sizes of the contiguous layout); use a multiple "
                             f"of {data_channels} channels")


def permutes_channels(colour_layout, mask_type, data_channels, out_channels,
                      in_channels) -> bool:
    """Whether the fast kernels need the channels permuted: interleaved colour groups that
    differ from contiguous ones (more channels than groups; mask V has no groups)."""
    return (colour_layout == "interleaved" and mask_type != "V" and data_channels > 1
            and max(out_channels, in_channels) > data_channels)


def group_order(channels: int, data_channels: int, device) -> torch.Tensor | None:
    """The interleaved channels in contiguous group order (x[:, order] lists group 0's
    channels, then group 1's, ...), or None when none moves."""
    if channels <= data_channels:
        return None
    k = torch.arange(channels, device=device)
    return torch.argsort(k % data_channels * channels + k)


def select_channels(t: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """t[:, order] in t's memory format (index_select alone returns NCHW)."""
    if suggest_memory_format(t) == torch.channels_last:
        return t.permute(0, 2, 3, 1).index_select(3, order).permute(0, 3, 1, 2)
    return t.index_select(1, order)


def _grouped(weight, bias, in_order, out_order):
    """The weight and bias of the interleaved layer with channels in group order."""
    if in_order is not None:
        weight = weight.index_select(1, in_order)
    if out_order is not None:
        weight = weight.index_select(0, out_order)
        bias = None if bias is None else bias.index_select(0, out_order)
    return weight, bias


def _interleaved_call(conv, x, weight, bias, data_channels):
    """``conv(x, weight, bias)``, a fast contiguous-layout masked convolution, run on an
    interleaved layer's tensors (see the comment above _group_sizes)."""
    in_order = group_order(weight.shape[1], data_channels, x.device)
    out_order = group_order(weight.shape[0], data_channels, x.device)
    weight, bias = _grouped(weight, bias, in_order, out_order)
    y = conv(x if in_order is None else select_channels(x, in_order), weight, bias)
    return y if out_order is None else select_channels(y, torch.argsort(out_order))


def _interleaved_windows(example, weight, bias, mask_type, data_channels, dilation, name):
    """masked_conv2d_on_windows's conv for an interleaved layer on a fast backend.

    Under torch.inference_mode() (a sampler) the grouped weight is made once per version of
    the weight and bias, outside inference mode, so that it has a version counter and the cpu
    backend keeps its packed copy too (_prepacked_windows). Otherwise each call groups the
    weight, as masked_conv2d does, so that autograd sees the permutation."""
    in_order = group_order(weight.shape[1], data_channels, example.device)
    out_order = group_order(weight.shape[0], data_channels, example.device)
    out_inverse = None if out_order is None else torch.argsort(out_order)
    prepared = {}  # (weight version, bias version) -> the grouped layer's conv

    def conv(x, window):
        if not torch.is_inference_mode_enabled() or weight.is_inference():
            return masked_conv2d(x, weight, bias, mask_type, data_channels, dilation,
                                 window=window or None, backend=name,
                                 colour_layout="interleaved")
        key = (weight._version, None if bias is None else bias._version)
        if key not in prepared:
            prepared.clear()
            with torch.inference_mode(False), torch.no_grad():
                grouped = _grouped(weight, bias, in_order, out_order)
            prepared[key] = masked_conv2d_on_windows(example, *grouped, mask_type,
                                                     data_channels, dilation, backend=name)
        y = prepared[key](x if in_order is None else select_channels(x, in_order), window)
        return y if out_inverse is None else select_channels(y, out_inverse)
    return conv
