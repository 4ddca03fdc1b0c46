"""Light augmentation for cell patches: random flips and 90-degree rotations.

A cell in suspension has no preferred orientation, so each of the 8 symmetries of the square
(dihedral group D4: rotation by k * 90 degrees, optionally mirrored) is an equally valid
view of it. These are exact pixel permutations: no interpolation, no change of phase values.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["random_dihedral"]


def random_dihedral(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Apply an independent random D4 symmetry to every patch.

    Parameters
    ----------
    x : torch.Tensor
        ``(N, H, W)`` or ``(N, C, H, W)`` square patches (H == W).
    rng : numpy.random.Generator
        Draws the symmetry of each patch (so a seeded run is reproducible).

    Returns
    -------
    torch.Tensor
        A new tensor of the same shape: patch i mirrored left-right with probability 1/2,
        then rotated by ``k_i * 90`` degrees, ``k_i`` uniform in 0..3.

    Raises
    ------
    ValueError
        Patches that are not square.
    """
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"rotations need square patches, got {tuple(x.shape[-2:])}")
    n = x.shape[0]
    flip = torch.from_numpy(rng.random(n) < 0.5).to(x.device)
    k = rng.integers(0, 4, size=n)
    shape = (n,) + (1,) * (x.ndim - 1)
    out = torch.where(flip.view(shape), x.flip(-1), x)
    for r in range(1, 4):
        sel = np.flatnonzero(k == r)
        if sel.size:
            idx = torch.from_numpy(sel).to(x.device)
            out[idx] = torch.rot90(out[idx], r, dims=(-2, -1))
    return out
