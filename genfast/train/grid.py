"""A grid of images as a PNG file."""
from __future__ import annotations

import math

import numpy as np
import torch

GRID_PADDING = 2


def default_scale(height: int) -> int:
    """Pixel upscaling that makes small images (8x8 digits) visible: tiles of >= 32 pixels."""
    return max(1, math.ceil(32 / height))


def image_grid(images: torch.Tensor, levels: int, nrow: int | None = None,
               scale: int = 1, padding: int = GRID_PADDING) -> np.ndarray:
    """Integer images [N, C, H, W] in [0, levels) -> uint8 array of one picture.

    Values are scaled to 0..255 (v * 255 / (levels - 1)); tiles are upscaled ``scale`` times
    (nearest) and laid out ``nrow`` per row (default ceil(sqrt(N))), ``padding`` black pixels
    apart and around. Result: [rows * (H * scale + padding) + padding,
    nrow * (W * scale + padding) + padding] for grey, with a trailing 3 for RGB.
    """
    if images.dim() != 4 or images.shape[1] not in (1, 3) or len(images) == 0:
        raise ValueError(f"genfast: image_grid expects [N >= 1, 1 or 3, H, W], "
                         f"got {tuple(images.shape)}")
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    pixels = (images.detach().cpu().double().clamp(0, levels - 1) * (255 / (levels - 1)))
    pixels = pixels.round().to(torch.uint8)
    pixels = pixels.repeat_interleave(scale, 2).repeat_interleave(scale, 3).numpy()
    th, tw = h * scale, w * scale
    grid = np.zeros((c, rows * (th + padding) + padding, nrow * (tw + padding) + padding),
                    dtype=np.uint8)
    for k in range(n):
        top = padding + (k // nrow) * (th + padding)
        left = padding + (k % nrow) * (tw + padding)
        grid[:, top:top + th, left:left + tw] = pixels[k]
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def save_grid(path: str, images: torch.Tensor, levels: int, nrow: int | None = None,
              scale: int | None = None) -> tuple[int, int]:
    """Writes ``image_grid`` as a PNG at ``path``; returns its (width, height)."""
    from PIL import Image

    if scale is None:
        scale = default_scale(images.shape[2])
    picture = Image.fromarray(image_grid(images, levels, nrow, scale))
    picture.save(path, format="PNG")
    return picture.size
