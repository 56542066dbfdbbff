"""scikit-learn's embedded 8x8 digits: 1797 images, 17 grey levels, no network needed."""
from __future__ import annotations

import numpy as np

from genfast.data.dataset import ImageDataset, seeded_split

# Fixed split sizes: 1500 train, 297 test, from a seeded permutation (seed 0).
DIGITS_TEST = 297


def load_digits(split: str) -> ImageDataset:
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as exc:
        raise ImportError("genfast: the 'digits' dataset needs scikit-learn "
                          "(pip install scikit-learn)") from exc
    bunch = sklearn_digits()
    # The pixel values are counts 0..16 stored as floats; make them integers.
    images = bunch.images.astype(np.int64)[:, None]
    index = seeded_split(len(images), DIGITS_TEST, split)
    return ImageDataset(images[index], bunch.target[index], 17, num_classes=10,
                        name=f"digits/{split}")
