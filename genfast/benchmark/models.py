"""Whole-model benchmark cases: what a user of ``genfast train`` feels, not one layer alone.

Each case builds a registered model (genfast.models) with its default hyperparameters, the ones
``genfast train MODEL --data fashion-mnist`` builds, on 1x28x28 images of 256 levels, and times
two modes:

* ``train step``: one optimisation step as ``genfast train`` runs it: zero the gradients, the
  model's loss (forward and the per-pixel cross-entropy), backward, ``torch.optim.Adam.step``;
* ``evaluate``: ``model.evaluate`` on the batch (the test metrics; the VAE's includes its
  importance-weighted NLL with its default 100 samples per image).

The implementations are the model built on the ``reference`` backend (plain PyTorch layers),
``torch.compile`` of that reference model (its loss or its evaluate; the optimiser step stays
eager, as in the other two) and the model on each fast backend. All start from the same
seeded weights and see the same random images; the work of a step does not depend on either.

A whole model's torch.compile takes one to several minutes on 2 cores, so it counts as a slow
compile (``genfast bench --full`` times it); the compiled callables are kept for the rest of the
process, so a second build of the same (model, batch, mode) does not compile again.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Mapping

import torch

from genfast.benchmark.cases import Size, Target

TRAIN_STEP, EVALUATE = "train step", "evaluate"
MODEL_MODES = (TRAIN_STEP, EVALUATE)
IMAGE_SHAPE, LEVELS = (1, 28, 28), 256
# The batches timed: "small" in every run (--quick included), "large" in the others.
SMALL_BATCH, LARGE_BATCH = 16, 64

# What a compile of a whole reference model costs here; the standard run leaves it out.
SLOW_COMPILE = ("torch.compile of a whole model takes one to several minutes per batch size "
                "and mode on 2 cores")


def _sizes(image_shape: tuple[int, int, int], levels: int,
           batches: tuple[int, int]) -> tuple[Size, ...]:
    c, h, w = image_shape
    return tuple(Size(name, f"{batch}x{c}x{h}x{w}, {levels} levels", {"batch": batch})
                 for name, batch in zip(("small", "large"), batches))


@dataclass(frozen=True, eq=False)  # identity: cases are registered once
class ModelCase:
    """How to benchmark one model. It reads like an OpCase to the runner and the reports
    (name, sizes, modes, targets, ...), but builds its own timed callable (:meth:`build`)."""

    name: str
    model: str
    hparams: Mapping[str, Any] = field(default_factory=dict)
    image_shape: tuple[int, int, int] = IMAGE_SHAPE
    levels: int = LEVELS
    batches: tuple[int, int] = (SMALL_BATCH, LARGE_BATCH)
    targets: tuple[Target, ...] = ()
    description: str = ""
    backends: tuple[str, ...] = ("cpu", "triton", "cuda")
    slow_compile: str = SLOW_COMPILE
    modes: tuple[str, ...] = MODEL_MODES
    dtype: torch.dtype = torch.float32
    # What an OpCase carries and a model case has no single figure for.
    bytes_moved: Callable | None = None
    flops: Callable | None = None
    auto_op: str = ""
    peak_memory: bool = False  # whole-model peak memory is not measured (OpCase.peak_memory)

    @cached_property  # one Size object per size: results and targets key on them
    def sizes(self) -> tuple[Size, ...]:
        return _sizes(self.image_shape, self.levels, self.batches)

    def size(self, name: str) -> Size:
        for size in self.sizes:
            if size.name == name:
                return size
        raise KeyError(f"{self.name} has no size {name!r}; it has "
                       f"{[s.name for s in self.sizes]}")

    def make_model(self, backend: str, device: torch.device, seed: int = 0):
        from genfast.models import build_model

        torch.manual_seed(seed)
        return build_model(self.model, image_shape=self.image_shape, levels=self.levels,
                           backend=backend, **self.hparams).to(device)

    def make_images(self, batch: int, device: torch.device, seed: int = 0) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed + 1)
        images = torch.randint(0, self.levels, (batch, *self.image_shape), generator=generator)
        return images.to(device)

    def build(self, size: Size, mode: str, impl: str, device: str | torch.device,
              seed: int = 0) -> Callable[[], None]:
        """A callable running one ``mode`` of ``impl`` at ``size`` once, run once already (so a
        compile is done); on a GPU it ends with torch.cuda.synchronize()."""
        from genfast.benchmark.runner import COMPILE, REFERENCE

        if mode not in self.modes:
            raise ValueError(f"mode must be one of {self.modes}, got {mode!r}")
        device = torch.device(device)
        key = (self.name, size.name, mode, impl, str(device), seed)
        if impl == COMPILE and key in _COMPILED:
            step = _COMPILED[key]
            step()  # a dynamo reset since (an op case's build) recompiles here, not when timed
            return step
        model = self.make_model(REFERENCE if impl == COMPILE else impl, device, seed)
        images = self.make_images(size.params["batch"], device, seed)
        if mode == TRAIN_STEP:
            model.train()
            loss = torch.compile(model, dynamic=False) if impl == COMPILE else model
            step = _train_step(model, loss, images)
        else:
            model.eval()
            evaluate = (torch.compile(model.evaluate, dynamic=False) if impl == COMPILE
                        else model.evaluate)

            def step():
                evaluate(images)
        if device.type == "cuda":
            inner = step

            def step():
                inner()
                torch.cuda.synchronize(device)
        step()
        if impl == COMPILE:
            _COMPILED[key] = step
        return step


# Compiled steps by (case, size, mode, impl, device, seed), kept for the process.
_COMPILED: dict[tuple, Callable[[], None]] = {}


def _train_step(model, loss, images) -> Callable[[], None]:
    """One step of genfast train's loop (genfast/train/loop.py): Adam at its default lr."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss(images).backward()
        optimizer.step()
    return step


def _targets(min_vs_reference: float) -> tuple[Target, ...]:
    # Issue 22's acceptance: the training step at batch 16 on the cpu backend, this much
    # faster than the reference backend and faster than torch.compile of the reference model.
    return (Target("small", TRAIN_STEP, "cpu", min_vs_reference=min_vs_reference,
                   beat_compile=True),)


CASES = (
    ModelCase("model_pixelcnn", "pixelcnn", targets=_targets(1.5),
              description="PixelCNN, defaults: 7x7 mask A to 64 channels, 4 residual blocks "
                          "(3x3 mask B 32->32), head 64 -> 256 logits"),
    ModelCase("model_gated_pixelcnn", "gated_pixelcnn", targets=_targets(1.5),
              description="Gated PixelCNN, defaults: 5 gated layers of 32 channels"),
    ModelCase("model_pixelrnn_row", "pixelrnn", {"layer": "row"}, targets=_targets(2.5),
              description="PixelRNN, defaults: 7x7 mask A + 2 Row LSTM layers of 32 hidden"),
    ModelCase("model_pixelrnn_diagonal", "pixelrnn", {"layer": "diagonal"},
              targets=_targets(2.5),
              description="PixelRNN, defaults: 7x7 mask A + 2 Diagonal BiLSTM layers of 32 "
                          "hidden"),
    ModelCase("model_vae", "vae", targets=_targets(1.2),
              description="VAE, defaults: conv encoder/decoder of width 32, 16 latents, "
                          "256-way decoder; evaluate with 100 importance samples"),
)
