"""Checks and conversions between genfast's integer images and the floats networks want.

Every model receives images as integer tensors [B, C, H, W] with values in [0, levels) and
returns samples in the same form; these helpers keep the checks and the scaling in one place.
"""
from __future__ import annotations

import torch


def check_image_shape(image_shape, levels: int, model: str) -> tuple[int, int, int]:
    """The constructor's (C, H, W) as ints, or a ValueError naming ``model``.

    The convolutional models halve the side twice (H -> H/2 -> H/4) and mirror it in their
    decoders, so they need square images whose side is a multiple of 4: 8x8 digits (2x2 feature
    maps at the bottom) and 28x28 Fashion-MNIST (7x7) both qualify.
    """
    try:
        channels, height, width = (int(s) for s in image_shape)
    except (TypeError, ValueError):
        raise ValueError(f"genfast: {model} needs image_shape=(C, H, W), got {image_shape!r}") \
            from None
    if channels < 1 or height != width or height < 4 or height % 4:
        raise ValueError(
            f"genfast: {model} needs square images whose side is a multiple of 4 (e.g. 1x8x8 "
            f"digits or 1x28x28 Fashion-MNIST), got image_shape={tuple(image_shape)}")
    if int(levels) < 2:
        raise ValueError(f"genfast: {model} needs levels >= 2, got {levels}")
    return channels, height, width


def check_images(images: torch.Tensor, image_shape: tuple[int, int, int], levels: int,
                 model: str) -> None:
    """Raises a ValueError/TypeError unless ``images`` is an integer [B, *image_shape] batch
    with values in [0, levels)."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"genfast: {model} expects images as a torch.Tensor, "
                        f"got {type(images).__name__}")
    if images.dtype.is_floating_point or images.dtype.is_complex or images.dtype == torch.bool:
        raise TypeError(f"genfast: {model} expects integer images in [0, {levels}), "
                        f"got dtype {images.dtype}")
    if images.dim() != 4 or tuple(images.shape[1:]) != tuple(image_shape):
        expected = ", ".join(map(str, image_shape))
        raise ValueError(f"genfast: {model} was built for images [B, {expected}], got a batch "
                         f"of shape {tuple(images.shape)}")
    if images.numel() and (images.min() < 0 or images.max() >= levels):
        raise ValueError(f"genfast: {model} expects values in [0, {levels}), got "
                         f"[{images.min().item()}, {images.max().item()}]")


def to_unit(images: torch.Tensor, levels: int) -> torch.Tensor:
    """Integer images [B, C, H, W] -> float32 in [0, 1] (level k -> k / (levels - 1))."""
    return images.float() / (levels - 1)


def from_unit(pixels: torch.Tensor, levels: int) -> torch.Tensor:
    """Floats in [0, 1] (clamped) -> the nearest of the ``levels`` integer levels, int64."""
    return torch.round(pixels.clamp(0, 1) * (levels - 1)).long()
