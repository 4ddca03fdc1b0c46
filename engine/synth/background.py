"""Background of simulated phase frames: a stationary pattern per run plus per-frame noise.

The stationary part (offset, tilt, banding fringes, dust specks) is what a median of many
frames recovers; the per-frame part is slightly spatially correlated Gaussian noise.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Gaussian correlation length of the per-frame noise, pixels.
NOISE_CORRELATION_PX = 0.8


def stationary_background(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Draw the stationary phase background of one run.

    Parameters
    ----------
    shape : tuple of int
        Frame shape ``(rows, columns)``.
    rng : numpy.random.Generator
        Source of the pattern's parameters.

    Returns
    -------
    numpy.ndarray
        float32 phase in radians: a random absolute offset (-1.5..1.5 rad), a tilt of up to
        ~0.6 rad across the frame, 2-4 banding fringes of 0.1-0.3 rad amplitude and a few
        fixed dust specks (small bright or dark blobs with a faint ring).
    """
    h, w = shape
    y = np.arange(h, dtype=np.float64)[:, None]
    x = np.arange(w, dtype=np.float64)[None, :]
    bg = np.full(shape, rng.uniform(-1.5, 1.5))
    # tilt: a slope of up to 0.6 rad over the frame diagonal
    slope = rng.uniform(0.0, 0.6) / np.hypot(h, w)
    a = rng.uniform(0.0, 2.0 * np.pi)
    bg = bg + slope * (np.cos(a) * (x - w / 2) + np.sin(a) * (y - h / 2))
    # banding: a few broad interference fringes (stray reflections in the optics)
    for _ in range(int(rng.integers(2, 5))):
        period = rng.uniform(60.0, 260.0)
        a = rng.uniform(0.0, np.pi)
        amp = rng.uniform(0.1, 0.3) / 2.0  # 0.1-0.3 rad peak to valley
        bg = bg + amp * np.cos(
            2.0 * np.pi * (np.cos(a) * x + np.sin(a) * y) / period + rng.uniform(0, 2 * np.pi)
        )
    # dust specks on the optics: out of focus, so a blob with a weak opposite-sign ring
    n_dust = int(rng.integers(4, 12))
    for _ in range(n_dust):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        s = rng.uniform(1.0, 3.5)
        amp = rng.uniform(0.08, 0.4) * rng.choice([-1.0, 1.0])
        r0, r1 = int(max(cy - 6 * s, 0)), int(min(cy + 6 * s + 1, h))
        c0, c1 = int(max(cx - 6 * s, 0)), int(min(cx + 6 * s + 1, w))
        rr = np.hypot(y[r0:r1] - cy, x[:, c0:c1] - cx) / s
        bg[r0:r1, c0:c1] += amp * (np.exp(-0.5 * rr**2) - 0.25 * np.exp(-0.5 * (rr - 2.5) ** 2))
    return bg.astype(np.float32)


def frame_noise(shape: tuple[int, int], sigma_rad: float, rng: np.random.Generator) -> np.ndarray:
    """Draw one frame of slightly spatially correlated Gaussian phase noise.

    Parameters
    ----------
    shape : tuple of int
        Frame shape ``(rows, columns)``.
    sigma_rad : float
        Standard deviation of the noise, radians.
    rng : numpy.random.Generator
        Noise source.

    Returns
    -------
    numpy.ndarray
        float32 noise with zero mean and standard deviation ``sigma_rad``.
    """
    white = rng.standard_normal(shape, dtype=np.float32)
    k1 = cv2.getGaussianKernel(7, NOISE_CORRELATION_PX, ktype=cv2.CV_64F)
    # white noise of unit variance filtered by k has variance sum(k**2): undo that exactly
    gain = 1.0 / float(np.sqrt(np.sum(np.outer(k1, k1) ** 2)))
    smooth = cv2.sepFilter2D(white, -1, k1, k1, borderType=cv2.BORDER_REFLECT)
    return smooth * np.float32(sigma_rad * gain)
