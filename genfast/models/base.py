"""What every genfast model offers the trainer, the evaluator and ``genfast sample``.

A model is an ``nn.Module`` subclass of :class:`GenerativeModel`, registered by name with
:func:`register`. The training loop (``genfast train``, DDP included) knows nothing else about
it: it builds the model from its config, optimises the parameter groups of each stage in
order, evaluates on the test split and asks for samples.

Images always travel as integer tensors [B, C, H, W] with values in [0, levels): 17 grey
levels for scikit-learn's digits, 256 for Fashion-MNIST, 2 when binarized. Each model turns
them into what its network wants (e.g. x / (levels - 1)).
"""
from __future__ import annotations

import inspect
from typing import Callable

import torch
from torch import nn

MODELS: dict[str, type["GenerativeModel"]] = {}


def register(name: str) -> Callable[[type], type]:
    """Class decorator: makes the model buildable as ``build_model(name, ...)``."""
    def add(cls: type) -> type:
        MODELS[name] = cls
        cls.name = name
        return cls
    return add


class GenerativeModel(nn.Module):
    """The protocol. Subclasses implement everything that raises NotImplementedError.

    Attributes:
        name: the registry name (set by :func:`register`).
        stages: names of the optimisation stages of one training step, run in this order; one
            optimiser per stage. ("loss",) for most models, ("discriminator", "generator")
            for a GAN.
        config: the constructor's keyword arguments, enough to rebuild the model from a
            checkpoint: ``MODELS[name](**config)``.
    """

    name = ""
    stages: tuple[str, ...] = ("loss",)

    def __init__(self, image_shape: tuple[int, int, int], levels: int, **hparams):
        super().__init__()
        self.image_shape, self.levels = tuple(image_shape), int(levels)
        self.config = {"image_shape": self.image_shape, "levels": self.levels, **hparams}

    def stage_parameters(self, stage: str):
        """The parameters that stage ``stage`` optimises (default: all of them)."""
        return self.parameters()

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None,
                stage: str = "loss") -> torch.Tensor:
        """The scalar training loss of ``stage`` on a batch (mean over the images).

        Training calls the model (through DDP when distributed) once per stage, backpropagates
        this value and steps that stage's optimiser.
        """
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, images: torch.Tensor, labels: torch.Tensor | None = None
                 ) -> dict[str, torch.Tensor]:
        """Test metrics of a batch, one value per image (shape [B]); the evaluator averages.

        Names: ``nll_nats`` (negative log-likelihood, or its bound for the VAE's
        ``elbo_nats``; the evaluator adds bits per dimension), ``iw_nll_nats``,
        ``recon_mse`` ... whatever the model reports.
        """
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, n: int, *, labels: torch.Tensor | None = None,
               data: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images [n, C, H, W], integers in [0, levels). Models that reconstruct
        (the autoencoder) encode and decode ``data`` instead. The autoregressive models also
        take ``method`` ("cached" or "naive"), ``conditioning`` (their name for labels) and
        ``progress`` (see AutoregressiveModel.sample)."""
        raise NotImplementedError


def build_model(name: str, **config) -> GenerativeModel:
    """The registered model ``name`` built with ``config``; a clear error for unknown names and
    for hyperparameters the model does not take."""
    if name not in MODELS:
        known = ", ".join(sorted(MODELS)) or "none"
        raise ValueError(f"genfast: unknown model {name!r}; known models: {known}")
    signature = inspect.signature(MODELS[name])
    try:
        signature.bind(**config)
    except TypeError as exc:
        takes = ", ".join(p for p in signature.parameters if p not in ("image_shape", "levels"))
        raise ValueError(f"genfast: bad model hyperparameter for {name}: {exc}; it takes "
                         f"{takes}") from None
    return MODELS[name](**config)
