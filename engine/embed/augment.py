"""Training augmentation of paper 2 (§III-F): random crop offset, full rotation, flips.

Each patch gets its own random rigid transform, applied in one bilinear resampling
(``torch.nn.functional.affine_grid`` + ``grid_sample``, batched):

* rotation by an angle uniform in [0, 2π) about the patch centre (a cell on a smear has no
  preferred orientation);
* a left-right mirror with probability 1/2 (with full rotation this covers every flip);
* a random crop offset: the crop window moves by integers uniform in ``[-o, o]`` pixels along
  each axis. Paper 2 uses 11 px on 224 px patches; :func:`crop_offset` scales that to the
  network input (3 px at 64, 5 px at 96).

Pixels that come from outside the patch take the **background** value of that patch: the
median of its one-pixel border, per channel (a pale background for stained smears), not
black. All draws come from the caller's ``numpy.random.Generator``, so a seeded run repeats.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["PAPER_OFFSET", "PAPER_SIZE", "border_fill", "crop_offset", "random_view"]

PAPER_OFFSET = 11
PAPER_SIZE = 224


def crop_offset(input_size: int) -> int:
    """Paper 2's 11 px crop offset at 224 px, scaled to ``input_size`` (rounded).

    Parameters
    ----------
    input_size : int
        Side of the network input.

    Returns
    -------
    int
        Largest shift in pixels along each axis.
    """
    return int(round(PAPER_OFFSET * input_size / PAPER_SIZE))


def border_fill(x: torch.Tensor) -> torch.Tensor:
    """Per-patch, per-channel median of the one-pixel border.

    Parameters
    ----------
    x : torch.Tensor
        ``(N, C, H, W)``.

    Returns
    -------
    torch.Tensor
        ``(N, C, 1, 1)``.
    """
    ring = torch.cat(
        [x[..., 0, :], x[..., -1, :], x[..., 1:-1, 0], x[..., 1:-1, -1]], dim=-1
    )
    return ring.median(dim=-1).values[..., None, None]


def random_view(
    x: torch.Tensor,
    rng: np.random.Generator,
    *,
    max_offset: int,
    rotate: bool = True,
    flip: bool = True,
) -> torch.Tensor:
    """Apply an independent random rotation, mirror and crop offset to every patch.

    Parameters
    ----------
    x : torch.Tensor
        ``(N, C, H, W)`` float patches (H == W), e.g. the output of
        :meth:`EmbeddingNet.preprocess <hemalens.engine.embed.network.EmbeddingNet.preprocess>`.
    rng : numpy.random.Generator
        Source of the random parameters.
    max_offset : int
        Largest crop offset in pixels (see :func:`crop_offset`); 0 disables it.
    rotate, flip : bool
        Enable the full rotation / the mirror.

    Returns
    -------
    torch.Tensor
        A new tensor of the same shape; outside pixels take :func:`border_fill`.

    Raises
    ------
    ValueError
        Not a square 4-D batch, or a negative offset.
    """
    if x.ndim != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"random_view needs (N, C, S, S) patches, got {tuple(x.shape)}")
    if max_offset < 0:
        raise ValueError(f"max_offset must be >= 0, got {max_offset}")
    n, size = x.shape[0], x.shape[-1]
    angle = rng.uniform(0.0, 2 * math.pi, n) if rotate else np.zeros(n)
    mirror = np.where(rng.random(n) < 0.5, -1.0, 1.0) if flip else np.ones(n)
    shift = rng.integers(-max_offset, max_offset + 1, size=(n, 2)) if max_offset else np.zeros(
        (n, 2)
    )
    cos, sin = np.cos(angle), np.sin(angle)
    # theta maps output coordinates (normalised to [-1, 1]) to input coordinates:
    # input = R(angle) @ diag(mirror, 1) @ output + shift, shift in normalised units.
    theta = np.zeros((n, 2, 3))
    theta[:, 0, 0], theta[:, 0, 1] = cos * mirror, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin * mirror, cos
    theta[:, :, 2] = 2.0 * shift / size
    theta_t = torch.as_tensor(theta, dtype=x.dtype, device=x.device)
    grid = F.affine_grid(theta_t, list(x.shape), align_corners=False)
    fill = border_fill(x)
    out = F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out + fill
