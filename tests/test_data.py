"""genfast.data: the built-in datasets (no network), user .npz files and PNG folders,
binarization, and clear errors for names and files it cannot read."""
import gzip
import os

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from genfast.data import ImageDataset, load_dataset
from genfast.data.fashion_mnist import DEBIAN_PACKAGE, FASHION_MNIST_DIR, load_fashion_mnist, read_idx


def test_digits_splits_are_fixed_and_disjoint():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert (len(train), len(test)) == (1500, 297)
    for data in (train, test):
        assert data.image_shape == (1, 8, 8) and data.levels == 17 and data.num_classes == 10
        assert data.images.dtype == torch.uint8 and int(data.images.max()) == 16
        assert data.labels.dtype == torch.int64 and data.labels.shape == (len(data),)
    again = load_dataset("digits", "train")
    assert torch.equal(again.images, train.images) and torch.equal(again.labels, train.labels)
    # sklearn has 1797 digits; together the splits hold each once (as a multiset of images).
    from sklearn.datasets import load_digits

    every = torch.as_tensor(load_digits().images.astype(np.int64)).flatten(1)
    ours = torch.cat([train.images, test.images]).long().flatten(1)
    assert torch.equal(torch.unique(every, dim=0), torch.unique(ours, dim=0))
    assert len(ours) == len(every)


def test_items_and_batches():
    data = load_dataset("digits", "test")
    image, label = data[3]
    assert image.dtype == torch.int64 and image.shape == (1, 8, 8)
    assert label == int(data.labels[3])
    images, labels = data.__getitems__([0, 5, 7])
    assert torch.equal(images, data.images[[0, 5, 7]].long())
    assert torch.equal(labels, data.labels[[0, 5, 7]])
    loader = DataLoader(data, batch_size=16, collate_fn=lambda batch: batch)
    images, labels = next(iter(loader))
    assert images.shape == (16, 1, 8, 8) and labels.shape == (16,)


@pytest.mark.parametrize("name, binarize", [("digits", True), ("digits-binarized", False)])
def test_binarized_digits(name, binarize):
    plain = load_dataset("digits", "train")
    data = load_dataset(name, "train", binarize=binarize)
    assert data.levels == 2 and set(data.images.unique().tolist()) == {0, 1}
    # threshold at half the levels: 2 * value >= 17, i.e. value >= 9
    assert torch.equal(data.images, (plain.images >= 9).to(torch.uint8))
    assert torch.equal(data.labels, plain.labels)


@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_DIR), reason=f"{DEBIAN_PACKAGE} not installed")
def test_fashion_mnist_from_debian_package():
    test = load_dataset("fashion-mnist", "test")
    assert len(test) == 10000 and test.image_shape == (1, 28, 28) and test.levels == 256
    assert test.num_classes == 10 and int(test.labels.max()) == 9
    binary = load_dataset("fashion-mnist-binarized", "test")
    assert binary.levels == 2 and torch.equal(binary.images, (test.images >= 128).to(torch.uint8))


def test_missing_fashion_mnist_names_the_debian_package(tmp_path):
    with pytest.raises(FileNotFoundError, match=DEBIAN_PACKAGE):
        load_fashion_mnist("train", root=str(tmp_path))


def _write_idx(path, array, compress):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape)
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_plain_and_gzipped(tmp_path, compress):
    array = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    path = tmp_path / "images-idx3-ubyte"
    _write_idx(str(path) + (".gz" if compress else ""), array, compress)
    assert np.array_equal(read_idx(str(path), 3), array)
    with pytest.raises(ValueError, match="IDX"):
        read_idx(str(path), 1)


def test_npz_with_splits_and_channels_last(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "mine.npz"
    train = rng.integers(0, 256, (6, 5, 4, 3), dtype=np.uint8)  # N, H, W, C
    np.savez(path, train_images=train, test_images=train[:2], train_labels=np.arange(6))
    data = load_dataset(str(path), "train")
    assert data.image_shape == (3, 5, 4) and data.levels == 256 and data.num_classes == 6
    assert torch.equal(data.images, torch.as_tensor(train).permute(0, 3, 1, 2))
    test = load_dataset(str(path), "test")
    assert len(test) == 2 and test.labels is None and test.num_classes is None
    assert test[0][1] == -1


def test_npz_single_array_is_split_90_10(tmp_path):
    path = tmp_path / "grey.npz"
    images = np.random.default_rng(1).integers(0, 256, (20, 7, 7), dtype=np.uint8)
    np.savez(path, images=images, labels=np.arange(20) % 2)
    train, test = load_dataset(str(path), "train"), load_dataset(str(path), "test")
    assert (len(train), len(test)) == (18, 2) and train.image_shape == (1, 7, 7)
    assert sorted(torch.cat([train.images, test.images]).flatten(1).sum(1).tolist()) == \
        sorted(torch.as_tensor(images).flatten(1).long().sum(1).tolist())


@pytest.mark.parametrize("arrays, message", [
    ({"pictures": np.zeros((3, 4, 4), np.uint8)}, "expected 'train_images'"),
    ({"images": np.zeros((3, 4, 4), np.float32)}, "must be uint8"),
    ({"images": np.zeros((3, 4, 4, 5), np.uint8)}, "C = 1 or 3"),
])
def test_bad_npz(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=message):
        load_dataset(str(path))


def _save_png(path, array):
    from PIL import Image

    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)


def test_png_folder_with_classes_and_splits(tmp_path):
    rng = np.random.default_rng(2)
    for split, count in (("train", 3), ("test", 1)):
        for cls in ("cat", "dog"):
            for k in range(count):
                _save_png(str(tmp_path / split / cls / f"{k}.png"),
                          rng.integers(0, 256, (6, 5), dtype=np.uint8))
    train = load_dataset(str(tmp_path), "train")
    assert len(train) == 6 and train.image_shape == (1, 6, 5) and train.num_classes == 2
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert len(load_dataset(str(tmp_path), "test")) == 2


def test_flat_rgb_png_folder(tmp_path):
    rng = np.random.default_rng(3)
    pictures = [rng.integers(0, 256, (4, 4, 3), dtype=np.uint8) for _ in range(10)]
    for k, p in enumerate(pictures):
        _save_png(str(tmp_path / f"{k:02d}.png"), p)
    train, test = load_dataset(str(tmp_path), "train"), load_dataset(str(tmp_path), "test")
    assert (len(train), len(test)) == (9, 1) and train.image_shape == (3, 4, 4)
    assert train.labels is None and train.levels == 256


def test_png_folder_of_mixed_sizes_is_refused(tmp_path):
    _save_png(str(tmp_path / "a.png"), np.zeros((4, 4), np.uint8))
    _save_png(str(tmp_path / "b.png"), np.zeros((5, 4), np.uint8))
    with pytest.raises(ValueError, match="different sizes"):
        load_dataset(str(tmp_path))


def test_unknown_names_and_splits():
    with pytest.raises(ValueError, match="unknown dataset 'mnist'.*digits"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="unknown split"):
        load_dataset("digits", "validation")


def test_dataset_checks_values():
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        ImageDataset(np.full((2, 1, 3, 3), 4), None, 4)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        ImageDataset(np.zeros((2, 3, 3)), None, 4)
