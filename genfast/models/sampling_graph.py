"""Cached sampling on a GPU as one CUDA graph, captured once and replayed per call.

A cached sampling step is a handful of tiny kernels per layer, pixel and colour: at 28x28 a
PixelCNN issues tens of thousands of launches per image batch, and the GPU waits on Python
between them. The whole draw has a fixed sequence of launches for a given model, batch size
and device, so it is captured once (``torch.cuda.CUDAGraph``) with the noise and labels read
from static buffers, and each later call refills those buffers from the generator, replays the
graph and copies the images out.

The samples equal those of the eager cached sampler for the same generator state: the noise is
drawn with the same generator calls in the same order (:func:`sampling.row_noise`), and the
replayed kernels are the eager ones. The graph reads the model's parameters in place, so it
stays valid while an optimiser updates them in place; when a parameter tensor is replaced
(``.to()``, ``load_state_dict(..., assign=True)``) the model's graphs are captured anew.
"""
from __future__ import annotations

import torch

from genfast.models import sampling

_GRAPHS_ATTRIBUTE = "_genfast_sampling_graphs"


class GraphedSampler:
    """One captured cached-sampling run of ``model`` for ``n`` images."""

    def __init__(self, model, n: int, labels: torch.Tensor | None):
        self.model, self.n = model, n
        self.device = next(model.parameters()).device
        c, h, w = model.image_shape
        # 0.5: a valid uniform for the warm-up run, before any noise is drawn.
        self.noise = torch.full((h, w, c, n), 0.5, dtype=torch.float64, device=self.device)
        self.labels = None if labels is None else labels.clone()
        # Warm up on a side stream, as torch.cuda.graphs advises: Triton compiles its kernels
        # and cuBLAS creates its handles there, not inside the capture.
        with torch.cuda.device(self.device):
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self._draw()
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.images = self._draw()

    def _draw(self) -> torch.Tensor:
        # A new stepper each time: its caches are allocated and zeroed inside the graph, so
        # every replay starts from empty caches.
        stepper = self.model.cached_stepper(self.n, self.labels)
        c, h, w = self.model.image_shape
        images = torch.zeros(self.n, c, h, w, dtype=torch.int64, device=self.device)
        for i in range(h):
            sampling.draw_row(stepper, images, i, self.noise[i])
        return images

    def sample(self, labels: torch.Tensor | None,
               generator: torch.Generator | None) -> torch.Tensor:
        if (labels is None) != (self.labels is None):
            raise ValueError("genfast: the sampling graph was captured with"
                             f"{'out' if self.labels is None else ''} labels")
        if labels is not None:
            self.labels.copy_(labels)
        self.noise.copy_(sampling.row_noise(self.model.image_shape, self.n, generator,
                                            self.device))
        self.graph.replay()
        return self.images  # the graph's output buffer: valid until the next replay


def check_available(model) -> None:
    """A clear error where a CUDA graph cannot be used."""
    device = next(model.parameters()).device
    if device.type != "cuda":
        raise ValueError(f"genfast: cuda_graph=True needs the model on a CUDA device, it is on "
                         f"{device}")


def graphed_sample(model, n: int, labels: torch.Tensor | None,
                   generator: torch.Generator | None) -> torch.Tensor:
    """Cached sampling through the model's graph for (n, dtype, labels or not), captured on
    the first call."""
    # The graph reads the parameters at their addresses: new tensors mean new graphs.
    addresses = tuple(p.data_ptr() for p in model.parameters())
    cached_addresses, graphs = model.__dict__.get(_GRAPHS_ATTRIBUTE, (None, {}))
    if cached_addresses != addresses:
        graphs = {}
        model.__dict__[_GRAPHS_ATTRIBUTE] = (addresses, graphs)
    key = (n, labels is None)
    if key not in graphs:
        graphs[key] = GraphedSampler(model, n, labels)
    return graphs[key].sample(labels, generator)

