"""Fashion-MNIST (28x28, 256 grey levels) from Debian's ``dataset-fashion-mnist`` package.

The package installs the original IDX files under /usr/share/datasets/fashion-mnist; they are
read with numpy, gzipped or not. Nothing is downloaded.
"""
from __future__ import annotations

import gzip
import os

import numpy as np

from genfast.data.dataset import ImageDataset

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
DEBIAN_PACKAGE = "dataset-fashion-mnist"
_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
# IDX magic numbers: 0x00000803 (uint8, 3 dims) for images, 0x00000801 for labels.
_MAGIC = {3: 2051, 1: 2049}


def read_idx(path: str, ndim: int) -> np.ndarray:
    """The uint8 array stored in an IDX file (``path`` or ``path.gz``)."""
    for candidate, opener in ((path, open), (path + ".gz", gzip.open)):
        if os.path.exists(candidate):
            with opener(candidate, "rb") as f:
                data = f.read()
            break
    else:
        raise FileNotFoundError(path)
    magic = int.from_bytes(data[:4], "big")
    if magic != _MAGIC[ndim]:
        raise ValueError(f"genfast: {path} is not a {ndim}-d uint8 IDX file (magic {magic:#x})")
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion_mnist(split: str, root: str = FASHION_MNIST_DIR) -> ImageDataset:
    image_file, label_file = _FILES[split]
    try:
        images = read_idx(os.path.join(root, image_file), 3)
        labels = read_idx(os.path.join(root, label_file), 1)
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"genfast: Fashion-MNIST not found under {root} ({exc} is missing). Install the "
            f"Debian package {DEBIAN_PACKAGE} (apt-get install {DEBIAN_PACKAGE}); genfast "
            "never downloads data.") from None
    return ImageDataset(images[:, None], labels, 256, num_classes=10,
                        name=f"fashion-mnist/{split}")
