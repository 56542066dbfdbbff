"""Nearest-neighbour distances between generated and held-out images: the GAN's test score.

A GAN has no likelihood to report. Two distances stand in (in the spirit of the precision and
recall of generative models, Sajjadi et al. 2018, reduced to nearest neighbours in pixel space):

- sample -> test: how far each generated image is from the closest held-out image. Low means
  the samples look like real images (quality); a GAN that memorised its training set is not
  rewarded, because the held-out images were never seen.
- test -> sample: how far each held-out image is from the closest generated image. Low means the
  samples cover the data (diversity); mode collapse makes it high.

Distances are root-mean-square pixel differences in [0, 1] units. Both depend on how many
images each side has (more candidates, closer neighbours), so compare scores computed with the
same batch size only.
"""
from __future__ import annotations

import torch


def nearest_rms_distances(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For pixels a [N, *] and b [M, *] in [0, 1]: (distance from each a to its nearest b [N],
    distance from each b to its nearest a [M]), root-mean-square over the pixels."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    if a.shape[1] != b.shape[1] or not a.shape[0] or not b.shape[0]:
        raise ValueError(f"genfast: nearest_rms_distances needs non-empty batches of equal image "
                         f"size, got {tuple(a.shape)} and {tuple(b.shape)}")
    distances = torch.cdist(a, b) / a.shape[1] ** 0.5  # [N, M]
    return distances.min(1).values.float(), distances.min(0).values.float()
