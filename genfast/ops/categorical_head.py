"""The categorical output head of PixelCNN-type models fused with its loss.

An autoregressive model over integer images x [B, C, H, W] ends in a 1x1 mask-B convolution
giving C * levels logits per pixel, a softmax over the levels of each pixel and colour, and
the negative log-likelihood (van den Oord et al. 2016, "Pixel Recurrent Neural Networks",
section 5.3, the 256-way softmax):

    nll_b = sum over i, j, c of  logsumexp_l(z_bcij) - z_bcij[x_bcij],   z = W_masked h + bias

The logits z are B * C * levels * H * W numbers (a 32x32 RGB batch of 64 at 256 levels:
200 MB), written once and read back by the softmax, the loss and both backward passes. The
fused op computes them chunk by chunk of pixels, and since its output is a loss, the gradient
of each chunk's NLL with respect to the logits, softmax(z) - onehot(x), is computed right away
and pushed through the layer (grad_h = W^T G, grad_W += G h^T, grad_bias += sum G), the idea
of Liger-Kernel's FusedLinearCrossEntropy. Neither the logits nor their gradient ever exist in
full.

The op returns each image's NLL with its gradients per image: grad_features [B, Cin, H, W],
grad_weight [B, C * levels, Cin] and grad_bias [B, C * levels] (a gradient per image, so that
any incoming gradient, not only a mean, is honoured: the backward weights image b's share by
grad_nll[b], a few elementwise products and one [B] x [B, C * levels * Cin] product). Their
memory, B * Cin * H * W + B * C * levels * (Cin + 1), is Cin / (H * W) of the logits' at the
weight's end: 8% for 64 features at 28x28. They are only computed when autograd records
(``grad_mask``); evaluation gets the NLL alone. Recomputing the logits in the backward instead
would cost a fourth GEMM and a second softmax pass, a third more work on the CPU.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from genfast import _backend, _ext
from genfast.ops._library import eager_call, triton_kernels_exist
from genfast.ops.masked_conv import check_colour_layout, check_interleaving, masked_conv2d_ref


# ----------------------------------------------------------------------------- reference

def categorical_head_nll_ref(features, weight, bias, images, levels, channels,
                             colour_layout="contiguous"):
    """Per-image NLL [B] in nats, as the models compute it unfused: the masked 1x1 convolution
    to [B, C * levels, H, W], the logits read as [B, levels, C, H, W] in the colour layout,
    then cross-entropy against the images summed over every pixel and colour."""
    weight = weight.view(weight.shape[0], weight.shape[1], 1, 1)
    out = masked_conv2d_ref(features, weight, bias, "B", channels,
                            colour_layout=colour_layout)
    b, _, h, w = out.shape
    if colour_layout == "interleaved":
        logits = out.view(b, levels, channels, h, w)
    else:
        logits = out.view(b, channels, levels, h, w).transpose(1, 2)
    per_value = F.cross_entropy(logits, images.long(), reduction="none")  # [B, C, H, W]
    return per_value.flatten(1).sum(1)


# ----------------------------------------------------------------------------- the op

def _grad_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _fake_forward(features, weight, bias, images, levels, interleaved, grad_mask):
    acc = _grad_dtype(features.dtype)
    batch, outputs = features.shape[0], weight.shape[0]
    nll = features.new_empty(batch)
    gx = features.new_empty(features.shape, dtype=acc) if grad_mask[0] \
        else features.new_empty(0, dtype=acc)
    gw = features.new_empty((batch, outputs, weight.shape[1]), dtype=acc) if grad_mask[1] \
        else features.new_empty(0, dtype=acc)
    gb = features.new_empty((batch, outputs), dtype=acc) \
        if grad_mask[2] and bias is not None else features.new_empty(0, dtype=acc)
    return nll, gx, gw, gb


def _setup_context(ctx, inputs, output):
    features, weight, bias, images, levels, interleaved, grad_mask = inputs
    _, gx, gw, gb = output
    ctx.save_for_backward(gx, gw, gb)
    ctx.computed = (grad_mask[0], grad_mask[1], grad_mask[2] and bias is not None)
    ctx.dtypes = (features.dtype, weight.dtype, None if bias is None else bias.dtype)
    ctx.weight_shape = weight.shape


def _backward(ctx, grad_nll, _gx, _gw, _gb):
    """Image b's gradients scaled by grad_nll[b] and summed over the batch where shared."""
    gx, gw, gb = ctx.saved_tensors
    for i, needed in enumerate(ctx.needs_input_grad[:3]):
        if needed and not ctx.computed[i]:
            raise RuntimeError("genfast: categorical_head_nll ran without the gradient asked "
                               "for now (grad_mask was False): call it with grad enabled")
    g = grad_nll.to(gx.dtype)
    grads = [None, None, None]
    if ctx.needs_input_grad[0]:
        grads[0] = (gx * g.view(-1, 1, 1, 1)).to(ctx.dtypes[0])
    if ctx.needs_input_grad[1]:
        grads[1] = (g @ gw.flatten(1)).view(ctx.weight_shape).to(ctx.dtypes[1])
    if ctx.needs_input_grad[2]:
        grads[2] = (g @ gb).to(ctx.dtypes[2])
    return (*grads, None, None, None, None)


def _make_backward(_no_backward_op):
    return _backward


@torch.library.custom_op("genfast::categorical_head_nll_triton", mutates_args=())
def _triton_forward(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                    images: torch.Tensor, levels: int, interleaved: bool,
                    grad_mask: list[bool]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                    torch.Tensor]:
    """genfast::categorical_head_nll on Triton (schema as in csrc/op_schemas.h).

    Defined here rather than in C++ so that the Triton backend works without the extension.
    """
    from genfast.kernels import categorical_head as kernels

    return kernels.categorical_head_nll(features, weight, bias, images, levels, interleaved,
                                        grad_mask)


def _register(name: str) -> None:
    # The backward is plain PyTorch (a weighting of the forward's per-image gradients), so it
    # has no op of its own, unlike the pairs register_fake_and_autograd wires.
    torch.library.register_fake(name, _fake_forward)
    torch.library.register_autograd(name, _backward, setup_context=_setup_context)


_FORWARD_OPS, _CALLS = {}, {}


def _add(name: str, op) -> None:
    _FORWARD_OPS[name] = op
    _CALLS[name] = eager_call(op, None, _setup_context, _make_backward)


if triton_kernels_exist("categorical_head"):
    _register("genfast::categorical_head_nll_triton")
    _add("triton", torch.ops.genfast.categorical_head_nll_triton)
if _ext.has_op("categorical_head_nll"):
    _register("genfast::categorical_head_nll")
    _add("cpu", torch.ops.genfast.categorical_head_nll)
    if _ext.has_kernel("categorical_head_nll", "CUDA"):
        _add("cuda", torch.ops.genfast.categorical_head_nll)
IMPLEMENTED = ("reference", *_FORWARD_OPS)


# ----------------------------------------------------------------------------- public API

def _check_args(features, weight, bias, images, levels, channels, colour_layout):
    for name, t in (("features", features), ("weight", weight), ("images", images)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"genfast: {name} must be a torch.Tensor, got {type(t).__name__}")
    for name, t in (("features", features), ("weight", weight)):
        if t.dtype not in _backend.FLOAT_DTYPES:
            raise TypeError(f"genfast: {name} must be float16, bfloat16, float32 or float64, "
                            f"got {t.dtype}")
    if images.dtype.is_floating_point or images.dtype.is_complex or images.dtype == torch.bool:
        raise TypeError(f"genfast: images must be integers in [0, levels), got {images.dtype}")
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
        raise ValueError(f"genfast: levels must be an int >= 2, got {levels!r}")
    if features.dim() != 4:
        raise ValueError(f"genfast: features must be [B, Cin, H, W], got shape "
                         f"{tuple(features.shape)}")
    b, cin, h, w = features.shape
    if images.dim() != 4 or (images.shape[0], images.shape[2], images.shape[3]) != (b, h, w):
        raise ValueError(f"genfast: images must be [B, C, H, W] = [{b}, C, {h}, {w}] like the "
                         f"features, got shape {tuple(images.shape)}")
    if images.shape[1] != channels:
        raise ValueError(f"genfast: images have {images.shape[1]} channels, not {channels}")
    if not 1 <= channels <= cin:
        raise ValueError(f"genfast: channels (colour groups) must be between 1 and the "
                         f"{cin} feature channels, got {channels}")
    if weight.dim() not in (2, 4) or weight.shape[2:] not in ((), (1, 1)) \
            or tuple(weight.shape[:2]) != (channels * levels, cin):
        raise ValueError(f"genfast: weight must be [C * levels, Cin] or [C * levels, Cin, 1, 1]"
                         f" = [{channels * levels}, {cin}], got {tuple(weight.shape)}")
    if bias is not None and (not isinstance(bias, torch.Tensor)
                             or bias.shape != (channels * levels,)):
        raise ValueError(f"genfast: bias must be None or a tensor of shape "
                         f"({channels * levels},)")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.dtype != features.dtype:
            raise TypeError(f"genfast: {name} must have the features' dtype {features.dtype}, "
                            f"got {t.dtype}")
        if t is not None and t.device != features.device:
            raise ValueError(f"genfast: {name} is on {t.device} but features on "
                             f"{features.device}")
    if images.device != features.device:
        raise ValueError(f"genfast: images are on {images.device} but features on "
                         f"{features.device}")
    check_colour_layout(colour_layout)
    check_interleaving(colour_layout, "B", channels, cin, channels * levels)
    # On the CPU the check is cheap; on a GPU it would wait for the device, and a compiled
    # graph cannot branch on values, so it is left to the kernels' own checks there.
    if images.device.type == "cpu" and images.numel() and not torch.compiler.is_compiling() \
            and not (0 <= int(images.min()) and int(images.max()) < levels):
        raise ValueError(f"genfast: image values must be in [0, {levels}), got "
                         f"[{int(images.min())}, {int(images.max())}]")


def categorical_head_backend(features: torch.Tensor, backend: str | None = None) -> str:
    """The backend categorical_head_nll runs on for these features: 'reference' means the
    unfused layer and loss (what a model then computes itself)."""
    return _backend.select("categorical_head_nll", backend, features.device, features.dtype,
                           IMPLEMENTED)


def categorical_head_nll(features, weight, bias, images, levels, channels,
                         colour_layout="contiguous", *, backend=None):
    """Per-image negative log-likelihood in nats of integer images under a categorical output
    head, fused: never materialises the logits or their gradient.

    Args:
        features: [B, Cin, H, W], the input of the head's last 1x1 layer.
        weight: [C * levels, Cin, 1, 1] (a MaskedConv2d's) or [C * levels, Cin]; mask B with
            ``channels`` colour groups applies (colour c's logits see feature groups <= c).
        bias: [C * levels] or None.
        images: integers [B, C, H, W] in [0, levels).
        levels: values per colour (the softmax's size).
        channels: C, the colours (1 or 3 usually; the mask's colour groups).
        colour_layout: "contiguous" (output channel c * levels + l is colour c's logit of
            value l) or "interleaved" (l * C + c), as genfast.models.split_colour_logits reads.
        backend: 'auto', 'reference', 'cpu', 'triton' or 'cuda' (default: see genfast.backends).
    Returns:
        nll [B] in features' dtype, differentiable in features, weight and bias.
    """
    _check_args(features, weight, bias, images, levels, channels, colour_layout)
    name = categorical_head_backend(features, backend)
    if name == "reference":
        return categorical_head_nll_ref(features, weight, bias, images, levels, channels,
                                        colour_layout)
    weight2d = weight.flatten(1)
    recording = torch.is_grad_enabled()
    grad_mask = [recording and features.requires_grad, recording and weight.requires_grad,
                 recording and bias is not None and bias.requires_grad]
    nll = _CALLS[name](features, weight2d, bias, images.long(), levels,
                       colour_layout == "interleaved", grad_mask)[0]
    return nll
