"""Few-label classification on learned features against raw pixels.

The use of an autoencoder's encoder from the lecture: with few labels, a small classifier on
features learned without labels can beat the same classifier on pixels. The classifier here
is multinomial logistic regression (one linear layer, L2-penalised cross-entropy fitted with
L-BFGS on the standardised inputs), the same for both inputs so only the representation
differs.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.nn import functional as F


def fit_logistic_regression(inputs: torch.Tensor, labels: torch.Tensor, num_classes: int, *,
                            l2: float = 1e-2, max_iter: int = 200
                            ) -> Callable[[torch.Tensor], torch.Tensor]:
    """Fits softmax regression on inputs [N, F] and integer labels [N].

    Returns ``predict``: [M, F] -> predicted classes [M]. The inputs are standardised with the
    training set's mean and standard deviation (so one ``l2`` suits features and pixels);
    ``l2`` multiplies the squared weight norm, added to the mean cross-entropy.
    """
    if inputs.dim() != 2 or labels.shape != (inputs.shape[0],):
        raise ValueError(f"genfast: fit_logistic_regression needs inputs [N, F] and labels [N], "
                         f"got {tuple(inputs.shape)} and {tuple(labels.shape)}")
    inputs = inputs.detach().double()
    mean, std = inputs.mean(0), inputs.std(0, unbiased=False).clamp_min(1e-6)
    weight = torch.zeros(inputs.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    standardised = (inputs - mean) / std
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=max_iter,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(standardised @ weight + bias, labels) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    weight, bias = weight.detach(), bias.detach()

    def predict(new_inputs: torch.Tensor) -> torch.Tensor:
        return (((new_inputs.detach().double() - mean) / std) @ weight + bias).argmax(1)

    return predict


def pick_per_class(labels: torch.Tensor, per_class: int, seed: int = 0) -> torch.Tensor:
    """Indices of ``per_class`` random examples of each class present in labels [N]."""
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in labels.unique().tolist():
        members = (labels == c).nonzero().flatten()
        if members.numel() < per_class:
            raise ValueError(f"genfast: class {c} has {members.numel()} examples, fewer than "
                             f"per_class={per_class}")
        chosen.append(members[torch.randperm(members.numel(), generator=generator)[:per_class]])
    return torch.cat(chosen)


@torch.no_grad()
def _in_batches(fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                batch: int = 1024) -> torch.Tensor:
    return torch.cat([fn(images[i:i + batch]) for i in range(0, images.shape[0], batch)])


def few_label_accuracy(encode: Callable[[torch.Tensor], torch.Tensor],
                       train_images: torch.Tensor, train_labels: torch.Tensor,
                       test_images: torch.Tensor, test_labels: torch.Tensor, *,
                       per_class: int = 10, l2: float = 1e-2, seed: int = 0) -> dict[str, float]:
    """Test accuracy of logistic regression fitted on ``per_class`` labelled training images
    per class, on ``encode``'s features and on raw pixels.

    Args:
        encode: integer images [B, C, H, W] -> features [B, F] (e.g. AutoEncoder.encode; call
            model.eval() first).
        train_images, test_images: integer images [N, C, H, W]; train_labels, test_labels [N].
    Returns:
        {"features_accuracy", "pixels_accuracy" (fractions in [0, 1]), "labelled" (count)}.
    """
    labelled = pick_per_class(train_labels, per_class, seed)
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    accuracies = {}
    for name, represent in (("features", encode), ("pixels", lambda x: x.flatten(1).float())):
        predict = fit_logistic_regression(_in_batches(represent, train_images[labelled]),
                                          train_labels[labelled], num_classes, l2=l2)
        predicted = predict(_in_batches(represent, test_images))
        accuracies[f"{name}_accuracy"] = (predicted == test_labels).double().mean().item()
    return {**accuracies, "labelled": int(labelled.numel())}
