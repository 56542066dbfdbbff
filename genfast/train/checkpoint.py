"""Checkpoints: everything needed to rebuild a model and to continue training exactly.

A checkpoint is a dict of tensors and plain Python values, saved with torch.save (written
atomically) and loaded with torch.load(weights_only=True), which builds no other object, so
loading one cannot run code:

    model        registry name (build_model(model, **config) rebuilds it)
    config       model.config: the constructor's keyword arguments
    state_dict   the model's parameters and buffers
    optimizers   {stage: optimizer.state_dict()}
    epoch        epochs completed
    data         dataset name, binarize    the data it was trained on
    train        the training options (batch size, learning rate, seed, epochs); no RNG state
                 is stored: each epoch reseeds from (seed, epoch, rank), so a resumed run
                 draws what the uninterrupted run would have drawn
    history      one record per epoch (losses, step time)
    metrics      the test metrics, once evaluated
"""
from __future__ import annotations

import os
import pickle

import torch

from genfast.models import GenerativeModel, build_model

CHECKPOINT_NAME = "checkpoint.pt"
REQUIRED_KEYS = ("model", "config", "state_dict")


def save_checkpoint(path: str, checkpoint: dict) -> None:
    """Writes atomically (a temporary file renamed), so a crash never leaves half a file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    partial = path + ".partial"
    torch.save(checkpoint, partial)
    os.replace(partial, path)


def load_checkpoint(path: str) -> dict:
    """The checkpoint dict at ``path`` (a file, or a directory holding checkpoint.pt)."""
    if os.path.isdir(path):
        path = os.path.join(path, CHECKPOINT_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"genfast: no checkpoint at {path}")
    # weights_only: tensors and plain Python records only, so opening a checkpoint someone shared
    # cannot run the code its pickle names.
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(f"genfast: {path} holds objects other than tensors and plain Python "
                         f"values, which genfast does not load ({exc})") from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(checkpoint, dict) or k not in checkpoint]
    if missing:
        raise ValueError(f"genfast: {path} is not a genfast checkpoint (missing {missing})")
    return checkpoint


def model_from_checkpoint(checkpoint: dict, **overrides) -> GenerativeModel:
    """The model rebuilt from its config (``overrides`` replace config entries, e.g. the
    backend) with the saved weights loaded."""
    model = build_model(checkpoint["model"], **{**checkpoint["config"], **overrides})
    model.load_state_dict(checkpoint["state_dict"])
    return model
