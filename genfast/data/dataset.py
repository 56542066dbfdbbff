"""The in-memory image dataset every genfast loader returns."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


class ImageDataset(Dataset):
    """Quantised images held in memory, with optional class labels.

    Attributes:
        images: uint8 tensor [N, C, H, W], values in [0, levels).
        labels: int64 tensor [N], or None when the data has no classes.
        levels: number of intensity levels (17 for digits, 256 for 8-bit data, 2 binarized).
        image_shape: (C, H, W).
        num_classes: number of classes, or None.
        name: where the data came from (for messages and checkpoints).

    ``dataset[i]`` is ``(image, label)``: an int64 tensor [C, H, W] and an int (-1 without
    labels). ``__getitems__`` lets a DataLoader fetch a whole batch with one indexing op.
    """

    def __init__(self, images, labels, levels: int, *, num_classes: int | None = None,
                 name: str = ""):
        images = torch.as_tensor(_writable(images))
        if images.ndim != 4:
            raise ValueError(f"genfast: images must be [N, C, H, W], got shape {tuple(images.shape)}")
        if images.numel() and (int(images.min()) < 0 or int(images.max()) >= levels):
            raise ValueError(f"genfast: image values must lie in [0, {levels}), got "
                             f"[{int(images.min())}, {int(images.max())}]")
        self.images = images.to(torch.uint8) if levels <= 256 else images.to(torch.int64)
        if labels is not None:
            labels = torch.as_tensor(_writable(labels)).to(torch.int64)
            if labels.shape != (len(images),):
                raise ValueError(f"genfast: {len(images)} images but labels of shape "
                                 f"{tuple(labels.shape)}")
            if num_classes is None:
                num_classes = int(labels.max()) + 1 if len(labels) else 0
        self.labels = labels
        self.levels = int(levels)
        self.image_shape = tuple(self.images.shape[1:])
        self.num_classes = num_classes if labels is not None else None
        self.name = name

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        label = -1 if self.labels is None else int(self.labels[index])
        return self.images[index].long(), label

    def __getitems__(self, indices: list[int]):
        index = torch.as_tensor(indices, dtype=torch.int64)
        images = self.images[index].long()
        labels = (torch.full((len(index),), -1, dtype=torch.int64) if self.labels is None
                  else self.labels[index])
        # A DataLoader with batched fetching hands this to its collate_fn as the batch.
        return images, labels

    def binarized(self) -> "ImageDataset":
        """The same images thresholded at half the levels: 1 where 2 * value >= levels."""
        binary = (self.images.long() * 2 >= self.levels).to(torch.uint8)
        return ImageDataset(binary, self.labels, 2, num_classes=self.num_classes,
                            name=f"{self.name} (binarized)")

    def __repr__(self) -> str:
        return (f"ImageDataset({self.name!r}, {len(self)} images of shape {self.image_shape}, "
                f"{self.levels} levels, classes={self.num_classes})")


def _writable(array) -> np.ndarray:
    """A numpy view torch can wrap: read-only buffers (np.frombuffer) are copied."""
    array = np.asarray(array)
    return array if array.flags.writeable else array.copy()


def seeded_split(n: int, n_test: int, split: str, seed: int = 0) -> np.ndarray:
    """Indices of ``split`` ("train" or "test") in a fixed seeded permutation of range(n):
    the last ``n_test`` indices of the permutation are the test split."""
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[: n - n_test] if split == "train" else order[n - n_test:])
