"""Wave optics of the simulator: angular-spectrum defocus and off-axis hologram formation."""

from __future__ import annotations

import numpy as np
from scipy import fft as sfft
from skimage.restoration import unwrap_phase

#: Refractive index of the suspension medium (phosphate-buffered saline).
MEDIUM_INDEX = 1.335
#: Numerical aperture of the imaging objective; limits the angular spectrum of defocused cells.
OBJECTIVE_NA = 0.4


def propagate(
    field: np.ndarray,
    distance_um: float,
    wavelength_nm: float,
    pixel_size_um: float,
    medium_index: float = MEDIUM_INDEX,
    na: float | None = OBJECTIVE_NA,
) -> np.ndarray:
    """Propagate a complex field by the angular-spectrum method.

    Parameters
    ----------
    field : numpy.ndarray
        Complex 2-D field sampled at ``pixel_size_um``; it is treated as periodic, so pad it
        beforehand where the spread of the propagated field matters.
    distance_um : float
        Propagation distance (either sign), micrometres.
    wavelength_nm : float
        Vacuum wavelength, nanometres.
    pixel_size_um : float
        Sampling interval, micrometres.
    medium_index : float
        Refractive index of the medium.
    na : float or None
        Numerical aperture of the imaging pupil; spatial frequencies above ``na / wavelength``
        are removed (``None`` keeps all propagating waves).

    Returns
    -------
    numpy.ndarray
        The propagated complex128 field, same shape as ``field``.
    """
    ny, nx = field.shape
    lam_um = wavelength_nm * 1e-3
    fy = sfft.fftfreq(ny, d=pixel_size_um)[:, None]
    fx = sfft.fftfreq(nx, d=pixel_size_um)[None, :]
    f2 = fx**2 + fy**2
    k_medium2 = (medium_index / lam_um) ** 2
    # evanescent waves do not reach the detector: drop them rather than let them grow
    keep = f2 < k_medium2
    if na is not None:
        keep &= f2 <= (na / lam_um) ** 2
    kz = 2.0 * np.pi * np.sqrt(np.where(keep, k_medium2 - f2, 0.0))
    transfer = np.where(keep, np.exp(1j * kz * distance_um), 0.0)
    # remove the plane-wave phase of the background so it stays at phase 0
    transfer *= np.exp(-1j * 2.0 * np.pi * np.sqrt(k_medium2) * distance_um)
    return sfft.ifft2(sfft.fft2(field) * transfer)


def defocus_phase(
    phase: np.ndarray,
    distance_um: float,
    wavelength_nm: float,
    pixel_size_um: float,
    pad_px: int = 32,
) -> np.ndarray:
    """Return the phase of a phase object seen out of focus.

    The object field ``exp(i*phase)`` is padded with unit field (background), propagated by
    ``distance_um`` with :func:`propagate`, and its phase unwrapped; the background of the
    result sits at 0 rad.

    Parameters
    ----------
    phase : numpy.ndarray
        In-focus phase of an isolated object on a zero background, radians.
    distance_um : float
        Defocus distance, micrometres.
    wavelength_nm : float
        Vacuum wavelength, nanometres.
    pixel_size_um : float
        Sampling interval, micrometres.
    pad_px : int
        Zero-phase margin added on each side so the blur and rings fit.

    Returns
    -------
    numpy.ndarray
        float32 phase of shape ``phase.shape + 2 * pad_px`` on each axis.
    """
    padded = np.pad(np.asarray(phase, dtype=np.float64), pad_px)
    shape = tuple(sfft.next_fast_len(s) for s in padded.shape)
    work = np.zeros(shape)
    work[: padded.shape[0], : padded.shape[1]] = padded
    out = propagate(np.exp(1j * work), distance_um, wavelength_nm, pixel_size_um)
    out = out[: padded.shape[0], : padded.shape[1]]
    wrapped = np.angle(out)
    unwrapped = unwrap_phase(wrapped)
    # unwrapping is defined up to 2*pi*k: pin the margin (background) to 0 rad
    edge = np.concatenate([unwrapped[0], unwrapped[-1], unwrapped[:, 0], unwrapped[:, -1]])
    unwrapped -= 2.0 * np.pi * np.round(np.median(edge) / (2.0 * np.pi))
    return unwrapped.astype(np.float32)


def carrier_phase(shape: tuple[int, int], period_px: float, angle_deg: float) -> np.ndarray:
    """Return the phase ramp of a tilted plane reference wave.

    Parameters
    ----------
    shape : tuple of int
        Frame shape ``(rows, columns)``.
    period_px : float
        Fringe period, pixels.
    angle_deg : float
        Direction of the fringe wave vector, degrees from the column (x) axis towards the
        row (y) axis.

    Returns
    -------
    numpy.ndarray
        float64 ramp ``2*pi*(x*cos(a) + y*sin(a)) / period``, radians.
    """
    a = np.deg2rad(angle_deg)
    k = 2.0 * np.pi / period_px
    y = np.arange(shape[0])[:, None]
    x = np.arange(shape[1])[None, :]
    return k * (x * np.cos(a) + y * np.sin(a))


def hologram_intensity(
    phase: np.ndarray, carrier: np.ndarray, reference_amplitude: float
) -> np.ndarray:
    """Return the noise-free interference ``|R + O|**2`` of an object and a reference wave.

    Parameters
    ----------
    phase : numpy.ndarray
        Object phase in radians; the object field is ``exp(i*phase)`` (amplitude 1).
    carrier : numpy.ndarray
        Phase ramp of the reference wave (see :func:`carrier_phase`).
    reference_amplitude : float
        Amplitude of the reference wave; fringe contrast is ``2r / (1 + r**2)``.

    Returns
    -------
    numpy.ndarray
        float64 intensity in units of the object intensity.
    """
    r = reference_amplitude
    return 1.0 + r * r + 2.0 * r * np.cos(phase - carrier)


def detect(
    intensity: np.ndarray,
    rng: np.random.Generator,
    counts_per_unit: float,
    read_noise: float,
    offset: float,
) -> np.ndarray:
    """Turn an intensity into camera counts with shot and read noise, quantised to uint16.

    Parameters
    ----------
    intensity : numpy.ndarray
        Noise-free intensity (see :func:`hologram_intensity`).
    rng : numpy.random.Generator
        Noise source.
    counts_per_unit : float
        Expected photo-electrons (= counts, gain 1) per unit intensity.
    read_noise : float
        Standard deviation of the Gaussian read noise, counts.
    offset : float
        Dark offset of the camera, counts.

    Returns
    -------
    numpy.ndarray
        uint16 counts.

    Raises
    ------
    ValueError
        If the counts would leave the uint16 range (the simulator never clips).
    """
    mean = intensity * counts_per_unit
    # at thousands of photo-electrons per pixel Poisson noise is Gaussian with variance = mean
    noise = rng.standard_normal(mean.shape, dtype=np.float32)
    counts = mean + noise * np.sqrt(mean + read_noise**2) + offset
    counts = np.rint(counts)
    if counts.min() < 0 or counts.max() > np.iinfo(np.uint16).max:
        raise ValueError("hologram counts outside the uint16 range; lower counts_per_unit")
    return counts.astype(np.uint16)
