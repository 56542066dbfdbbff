"""User data: an ``.npz`` file of uint8 arrays, or a folder of PNG images.

.npz keys (all uint8 images with 256 levels; labels any integer type):
  * ``train_images`` and ``test_images`` (optional ``train_labels``, ``test_labels``), or
  * ``images`` (optional ``labels``), split 90/10 by a seeded permutation.
  Images are [N, H, W] (grey), [N, H, W, C] (C = 1 or 3, as image files store them) or
  [N, C, H, W] with C = 1 or 3.

PNG folder: ``train/`` and ``test/`` subfolders if present, else all images split 90/10.
Inside, either PNGs directly (no labels) or one subfolder per class (sorted names give the
class numbers). Every image must have the same size; they load as grey if all are greyscale,
else as RGB.
"""
from __future__ import annotations

import os

import numpy as np

from genfast.data.dataset import ImageDataset, seeded_split

TEST_FRACTION = 0.1


def _to_nchw(images: np.ndarray, source: str) -> np.ndarray:
    if images.dtype != np.uint8:
        raise ValueError(f"genfast: {source}: images must be uint8, got {images.dtype}")
    if images.ndim == 3:
        return images[:, None]
    if images.ndim == 4 and images.shape[-1] in (1, 3):
        return images.transpose(0, 3, 1, 2)
    if images.ndim == 4 and images.shape[1] in (1, 3):
        return images
    raise ValueError(f"genfast: {source}: images must be [N, H, W], [N, H, W, C] or [N, C, H, W] "
                     f"with C = 1 or 3, got shape {images.shape}")


def _split_whole(images, labels, split: str):
    n_test = max(1, int(round(len(images) * TEST_FRACTION)))
    if len(images) < 2:
        raise ValueError("genfast: need at least 2 images to make a train and a test split")
    index = seeded_split(len(images), n_test, split)
    return images[index], None if labels is None else labels[index]


def load_npz(path: str, split: str) -> ImageDataset:
    with np.load(path) as archive:
        keys = set(archive.files)
        if f"{split}_images" in keys:
            images = _to_nchw(archive[f"{split}_images"], path)
            labels = archive[f"{split}_labels"] if f"{split}_labels" in keys else None
        elif "images" in keys:
            images = _to_nchw(archive["images"], path)
            labels = archive["labels"] if "labels" in keys else None
            images, labels = _split_whole(images, labels, split)
        else:
            raise ValueError(f"genfast: {path} has keys {sorted(keys)}; expected "
                             "'train_images'/'test_images' or 'images' (see genfast.data.user_data)")
    return ImageDataset(images, labels, 256, name=f"{path}/{split}")


def _pngs(folder: str) -> list[str]:
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(".png"))


def _read_pngs(paths: list[str]) -> np.ndarray:
    from PIL import Image

    pictures = [Image.open(p) for p in paths]
    grey = all(p.mode in ("L", "1", "I;16", "I") for p in pictures)
    arrays = [np.asarray(p.convert("L" if grey else "RGB")) for p in pictures]
    sizes = {a.shape for a in arrays}
    if len(sizes) > 1:
        raise ValueError(f"genfast: PNG images of different sizes {sorted(sizes)}; resize them "
                         "to one size first")
    return _to_nchw(np.stack(arrays), "PNG folder")


def _read_png_tree(folder: str):
    """Images and labels (None without class subfolders) of one folder."""
    classes = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d))
                     and _pngs(os.path.join(folder, d)))
    if classes:
        paths, labels = [], []
        for number, name in enumerate(classes):
            found = _pngs(os.path.join(folder, name))
            paths += found
            labels += [number] * len(found)
        return _read_pngs(paths), np.asarray(labels, dtype=np.int64), len(classes)
    paths = _pngs(folder)
    if not paths:
        raise ValueError(f"genfast: no PNG images in {folder}")
    return _read_pngs(paths), None, None


def load_png_folder(folder: str, split: str) -> ImageDataset:
    split_folder = os.path.join(folder, split)
    if os.path.isdir(os.path.join(folder, "train")) and os.path.isdir(os.path.join(folder, "test")):
        images, labels, classes = _read_png_tree(split_folder)
    else:
        images, labels, classes = _read_png_tree(folder)
        images, labels = _split_whole(images, labels, split)
    return ImageDataset(images, labels, 256, num_classes=classes, name=f"{folder}/{split}")
