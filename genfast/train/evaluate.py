"""Test-split evaluation: the mean of each per-image metric a model reports."""
from __future__ import annotations

import math

import torch

from genfast.data import ImageDataset
from genfast.train.distributed import ProcessInfo, all_reduce_sum


def bits_per_dim(nats_per_image: float, image_shape) -> float:
    """Nats per image -> bits per dimension: nats / (C * H * W * ln 2)."""
    return nats_per_image / (math.prod(image_shape) * math.log(2))


@torch.no_grad()
def evaluate(model, data: ImageDataset, batch_size: int, device: torch.device,
             info: ProcessInfo = ProcessInfo()) -> dict[str, float]:
    """Mean over the images of ``data`` of every metric of ``model.evaluate``.

    Under torchrun each process takes every world_size-th image and the sums are all-reduced,
    so every process gets the metrics of the whole split. A metric ``X_nats`` also gets
    ``X_bits_per_dim``.
    """
    # Every process must join the same all-reduce, even one that got no images: fix the
    # metric names first.
    names = model_metric_names(model, data, device)
    was_training = model.training
    model.eval()
    indices = list(range(info.rank, len(data), info.world_size))
    sums = torch.zeros(len(names) + 1, dtype=torch.float64)  # the last entry counts images
    for start in range(0, len(indices), batch_size):
        images, labels = data.__getitems__(indices[start:start + batch_size])
        labels = labels.to(device) if data.labels is not None else None
        values = model.evaluate(images.to(device), labels)
        for i, key in enumerate(names):
            sums[i] += values[key].detach().double().sum().cpu()
        sums[-1] += len(images)
    model.train(was_training)
    totals = all_reduce_sum(sums, info)
    count = float(totals[-1])
    metrics = {k: float(totals[i]) / count for i, k in enumerate(names)}
    for key in [k for k in metrics if k.endswith("_nats")]:
        metrics[key[: -len("_nats")] + "_bits_per_dim"] = bits_per_dim(metrics[key],
                                                                       data.image_shape)
    return metrics


def model_metric_names(model, data: ImageDataset, device: torch.device) -> list[str]:
    """The metric names of ``model.evaluate``, from a one-image batch."""
    images, labels = data.__getitems__([0])
    labels = labels.to(device) if data.labels is not None else None
    was_training = model.training
    model.eval()
    names = list(model.evaluate(images.to(device), labels))
    model.train(was_training)
    return names
