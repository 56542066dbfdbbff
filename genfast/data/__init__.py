"""Datasets for genfast's models: built-in ones that need no network, and user data.

``load_dataset(name, split, binarize=...)`` is the one entry point; see :func:`load_dataset`.
"""
from __future__ import annotations

import os

from genfast.data.dataset import ImageDataset
from genfast.data.digits import load_digits
from genfast.data.fashion_mnist import load_fashion_mnist
from genfast.data.user_data import load_npz, load_png_folder

BUILTIN = {"digits": load_digits, "fashion-mnist": load_fashion_mnist}
SPLITS = ("train", "test")

__all__ = ["BUILTIN", "ImageDataset", "load_dataset"]


def load_dataset(name: str, split: str = "train", *, binarize: bool = False) -> ImageDataset:
    """One split of a dataset, as integer images [N, C, H, W] in [0, levels).

    Args:
        name: "digits" (scikit-learn's 8x8 digits, 17 levels, 1500/297 split),
            "fashion-mnist" (28x28, 256 levels, from Debian's dataset-fashion-mnist), a path
            to an ``.npz`` of uint8 arrays, or a folder of PNG images (keys and layout:
            :mod:`genfast.data.user_data`). A "-binarized" suffix on a built-in name (e.g.
            "digits-binarized") is the same as ``binarize=True``.
        split: "train" or "test".
        binarize: threshold at half the levels (1 where 2 * value >= levels): levels = 2.
    """
    if split not in SPLITS:
        raise ValueError(f"genfast: unknown split {split!r}; choose 'train' or 'test'")
    if name.endswith("-binarized") and name[: -len("-binarized")] in BUILTIN:
        name, binarize = name[: -len("-binarized")], True
    if name in BUILTIN:
        data = BUILTIN[name](split)
    elif name.lower().endswith(".npz") and os.path.isfile(name):
        data = load_npz(name, split)
    elif os.path.isdir(name):
        data = load_png_folder(name, split)
    else:
        raise ValueError(f"genfast: unknown dataset {name!r}; use one of "
                         f"{', '.join(BUILTIN)} (optionally with '-binarized'), a path to an "
                         ".npz file or a folder of PNG images")
    return data.binarized() if binarize else data
