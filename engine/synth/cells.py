"""Phase models of the objects in a blood-cell suspension, each drawn on a small local canvas.

Every leukocyte is a sphere-like optical thickness ``h = sqrt(1 - rho**2)`` over a slightly
elliptic, slightly irregular outline, modulated by its nucleus (higher refractive index, so
more phase), a smooth cytoplasm texture and granules. Class traits (size, peak phase, nucleus
shape, granularity) overlap between classes on purpose: neutrophils and eosinophils share
size and phase ranges, some neutrophil nuclei look bilobed and some eosinophil nuclei
trilobed, and granule contrast varies from cell to cell.

Canvases hold the object alone on a zero background, in radians, float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from hemalens.engine.synth.optics import defocus_phase

LEUKOCYTES = ("lymphocyte", "monocyte", "neutrophil", "eosinophil")
KINDS = LEUKOCYTES + ("erythrocyte", "thrombocyte", "aggregate", "debris")
#: Phase above which a pixel belongs to an object (support for centroid and border flags).
SUPPORT_RAD = 0.1


@dataclass(frozen=True)
class ClassModel:
    """Size and phase distribution of one leukocyte class (before donor factors)."""

    diameter_um: tuple[float, float, float, float]  # mean, sd, min, max
    peak_rad: tuple[float, float, float, float]  # mean, sd, min, max
    nucleus_contrast: tuple[float, float]  # uniform range, relative to the cytoplasm


# Neutrophil/eosinophil overlap is tuned so that a LeNet5 (default TrainConfig) trained on
# ~7.4k simulated cells reaches a test macro-F1 of ~0.93 against the true classes, near paper
# 1's 0.925 (benchmarks/bench_difficulty.py): eosinophils are a little larger and denser,
# mostly bilobed, with coarser, brighter granules; the distributions still overlap.
CLASS_MODELS: dict[str, ClassModel] = {
    "lymphocyte": ClassModel((7.1, 0.5, 6.0, 8.2), (2.9, 0.4, 1.9, 3.8), (0.12, 0.30)),
    "monocyte": ClassModel((10.4, 0.7, 9.0, 12.0), (2.4, 0.4, 1.4, 3.6), (0.10, 0.25)),
    "neutrophil": ClassModel((9.0, 0.5, 8.0, 10.0), (2.3, 0.4, 1.3, 3.5), (0.12, 0.30)),
    "eosinophil": ClassModel((9.3, 0.5, 8.1, 10.0), (2.8, 0.4, 1.7, 3.8), (0.10, 0.26)),
}


@dataclass(frozen=True)
class DrawnObject:
    """One object on its own canvas.

    Attributes
    ----------
    phase : numpy.ndarray
        float32 canvas, radians, zero background (defocused cells: rings go below zero).
    diameter_um : float
        Drawn physical diameter: equal-area diameter of the drawn outline (aggregates: of
        the union of the members' outlines; defocused cells: of the in-focus cell).
    peak_rad : float
        Peak phase of the drawn object (before any defocus).
    true_class : str
        Cell class, ``"mixed"`` for mixed aggregates, ``""`` for debris.
    members : tuple of str
        Classes of an aggregate's members (empty otherwise).
    """

    phase: np.ndarray
    diameter_um: float
    peak_rad: float
    true_class: str
    members: tuple[str, ...] = ()


def _clipped_normal(rng: np.random.Generator, spec: tuple[float, float, float, float]) -> float:
    mean, sd, lo, hi = spec
    return float(np.clip(rng.normal(mean, sd), lo, hi))


def _soft_disc(x: np.ndarray, y: np.ndarray, cx: float, cy: float, r: float, w: float):
    """Smooth indicator of a disc: 1 inside, 0 outside, edge width ``w``."""
    return 0.5 * (1.0 - np.tanh((np.hypot(x - cx, y - cy) - r) / w))


class _Frame:
    """Coordinates of a square canvas around a (sub-pixel) centre, in um and cell units."""

    def __init__(self, radius_um: float, pixel_size_um: float, rng: np.random.Generator):
        self.px = pixel_size_um
        self.half = int(np.ceil(radius_um / pixel_size_um)) + 2
        n = 2 * self.half + 1
        sy, sx = rng.uniform(-0.5, 0.5, size=2)
        idx = np.arange(n, dtype=np.float64) - self.half
        self.v = ((idx - sy) * pixel_size_um)[:, None] * np.ones((1, n))  # rows, um
        self.u = np.ones((n, 1)) * ((idx - sx) * pixel_size_um)[None, :]  # columns, um
        self.shape = (n, n)


def _outline(
    f: _Frame, r_um: float, rng: np.random.Generator, ratio: tuple[float, float], wobble: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (normalised radius rho, x, y in cell units) of a rotated, wobbly ellipse.

    The ellipse has the area of a disc of radius ``r_um``; ``wobble`` is the standard deviation
    of the relative amplitude of outline harmonics 2-5.
    """
    q = rng.uniform(*ratio)
    a, b = r_um / np.sqrt(q), r_um * np.sqrt(q)
    t = rng.uniform(0.0, 2.0 * np.pi)
    xr = f.u * np.cos(t) + f.v * np.sin(t)
    yr = -f.u * np.sin(t) + f.v * np.cos(t)
    phi = np.arctan2(yr, xr)
    bump = np.ones_like(phi)
    for k in range(2, 6):
        bump += rng.normal(0.0, wobble) * np.cos(k * phi + rng.uniform(0, 2 * np.pi))
    rho = np.hypot(xr / a, yr / b) / bump
    return rho, xr / r_um, yr / r_um


def _texture(f: _Frame, rng: np.random.Generator, corr_um: float) -> np.ndarray:
    """Smooth zero-mean, unit-std random texture with correlation length ``corr_um``."""
    white = rng.standard_normal(f.shape)
    t = cv2.GaussianBlur(white, (0, 0), corr_um / f.px, borderType=cv2.BORDER_REFLECT)
    return (t - t.mean()) / (t.std() + 1e-12)


def _granules(
    f: _Frame,
    rng: np.random.Generator,
    where: np.ndarray,
    count: int,
    sigma_um: float,
    amplitude: tuple[float, float],
) -> np.ndarray:
    """Gaussian granules at random pixels of ``where``, each of peak height ~amplitude."""
    ys, xs = np.nonzero(where)
    img = np.zeros(f.shape)
    if ys.size == 0 or count <= 0:
        return img
    pick = rng.integers(0, ys.size, size=count)
    sigma = sigma_um / f.px
    k = cv2.getGaussianKernel(int(2 * np.ceil(3 * sigma) + 1), sigma, ktype=cv2.CV_64F)
    centre = float(k[k.size // 2, 0] ** 2)  # peak of a blurred unit impulse
    np.add.at(img, (ys[pick], xs[pick]), rng.uniform(*amplitude, size=count) / centre)
    return cv2.sepFilter2D(img, -1, k, k, borderType=cv2.BORDER_CONSTANT)


def _lobes(
    x: np.ndarray, y: np.ndarray, n: int, r: float, gap: float, w: float, rng: np.random.Generator
) -> np.ndarray:
    """Nuclear lobes of radius ``r`` (cell units) strung along a curved arc."""
    arc_r = rng.uniform(0.35, 0.55)
    step = 2.0 * r * gap / arc_r  # angular spacing: lobes touch when gap ~ 1
    start = rng.uniform(0, 2 * np.pi)
    # the arc's centre sits off the cell centre so the lobe chain is centred in the cell
    angles = start + step * (np.arange(n) - (n - 1) / 2)
    cx0, cy0 = -arc_r * np.cos(start), -arc_r * np.sin(start)
    mask = np.zeros_like(x)
    for ang in angles:
        jx, jy = rng.normal(0.0, 0.04, size=2)
        lx, ly = cx0 + arc_r * np.cos(ang) + jx, cy0 + arc_r * np.sin(ang) + jy
        mask = np.maximum(mask, _soft_disc(x, y, lx, ly, r * rng.uniform(0.85, 1.15), w))
    return mask


def _nucleus(kind: str, x: np.ndarray, y: np.ndarray, w: float, rng: np.random.Generator):
    """Soft nucleus mask (0..1) of class ``kind`` in cell units (cell radius = 1)."""
    if kind == "lymphocyte":  # large, round, slightly eccentric
        off, a = rng.uniform(0.0, 0.12), rng.uniform(0, 2 * np.pi)
        return _soft_disc(x, y, off * np.cos(a), off * np.sin(a), rng.uniform(0.68, 0.85), w)
    if kind == "monocyte":  # kidney: a disc with a notch bitten out of one side
        a = rng.uniform(0, 2 * np.pi)
        rn = rng.uniform(0.5, 0.64)
        off = rng.uniform(0.05, 0.2)
        cx, cy = off * np.cos(a), off * np.sin(a)
        notch_r = rn * rng.uniform(0.45, 0.7)
        nd = rn * rng.uniform(0.8, 1.05)
        body = _soft_disc(x, y, cx, cy, rn, w)
        notch = _soft_disc(x, y, cx - nd * np.cos(a), cy - nd * np.sin(a), notch_r, w)
        return body * (1.0 - notch)
    if kind == "neutrophil":  # 3-5 lobes; close packing makes some look bi- or trilobed
        n = int(rng.choice([2, 3, 4, 5], p=[0.05, 0.4, 0.4, 0.15]))
        r = rng.uniform(0.19, 0.28)
        return _lobes(x, y, n, r, rng.uniform(0.75, 1.25), w, rng)
    if kind == "eosinophil":  # mostly bilobed, sometimes trilobed
        n = int(rng.choice([2, 3], p=[0.85, 0.15]))
        r = rng.uniform(0.24, 0.32)
        return _lobes(x, y, n, r, rng.uniform(0.8, 1.3), w, rng)
    raise ValueError(f"unknown leukocyte class {kind!r}")


def draw_leukocyte(
    kind: str,
    rng: np.random.Generator,
    pixel_size_um: float,
    size_factor: float = 1.0,
    phase_factor: float = 1.0,
) -> DrawnObject:
    """Draw one in-focus leukocyte.

    Parameters
    ----------
    kind : str
        One of :data:`LEUKOCYTES`.
    rng : numpy.random.Generator
        Source of every random trait of the cell.
    pixel_size_um : float
        Canvas sampling, micrometres per pixel.
    size_factor, phase_factor : float
        Multiplicative donor factors on diameter and peak phase.

    Returns
    -------
    DrawnObject
        The cell centred (to within half a pixel) on a square canvas.
    """
    model = CLASS_MODELS[kind]
    diameter = _clipped_normal(rng, model.diameter_um) * size_factor
    peak = _clipped_normal(rng, model.peak_rad) * phase_factor
    r_um = diameter / 2
    f = _Frame(r_um * 1.2, pixel_size_um, rng)
    rho, x, y = _outline(f, r_um, rng, (0.86, 1.0), 0.012)
    h = np.sqrt(np.clip(1.0 - rho**2, 0.0, None))
    inside = h > 0
    w = 0.2 / r_um  # nucleus edge width: 0.2 um
    nucleus = _nucleus(kind, x, y, w, rng)
    contrast = rng.uniform(*model.nucleus_contrast)
    smooth = _texture(f, rng, 0.8) * rng.uniform(0.015, 0.045)
    body = h * (1.0 + contrast * nucleus + smooth)
    # scale the smooth body to the drawn peak, then add fine structure on top
    phase = body * (peak / body.max())
    cytoplasm = inside & (rho < 0.92) & (nucleus < 0.5)
    area_scale = (diameter / 9.0) ** 2
    if kind == "neutrophil":  # many fine granules, faint to moderate
        n = int(rng.uniform(150, 330) * area_scale)
        g = _granules(f, rng, cytoplasm, n, rng.uniform(0.18, 0.26), (0.0, rng.uniform(0.02, 0.06)))
    elif kind == "eosinophil":  # fewer coarse, bright granules of varying contrast
        n = int(rng.uniform(45, 110) * area_scale)
        amp = rng.uniform(0.07, 0.2)
        g = _granules(f, rng, cytoplasm, n, rng.uniform(0.3, 0.45), (0.5 * amp, amp))
    elif kind == "monocyte":  # a few low-phase vacuoles
        n = int(rng.integers(0, 5))
        g = -_granules(f, rng, cytoplasm, n, 0.4, (0.03, 0.12))
    else:
        g = np.zeros(f.shape)
    phase = phase + peak * h * g
    return DrawnObject(phase.astype(np.float32), diameter, peak, kind)


def draw_erythrocyte(rng: np.random.Generator, pixel_size_um: float) -> DrawnObject:
    """Draw a red blood cell: biconcave (Evans-Fung) profile, low phase peaking at the rim.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the cell's traits.
    pixel_size_um : float
        Canvas sampling, micrometres per pixel.

    Returns
    -------
    DrawnObject
        Peak phase 0.3-0.8 rad on the rim, about a third of it in the centre.
    """
    diameter = _clipped_normal(rng, (7.5, 0.35, 6.6, 8.4))
    peak = rng.uniform(0.3, 0.8)
    f = _Frame(diameter / 2 * 1.2, pixel_size_um, rng)
    rho, _, _ = _outline(f, diameter / 2, rng, (0.85, 1.0), 0.01)
    r2 = np.clip(rho**2, 0.0, 1.0)
    h = np.sqrt(1.0 - r2) * (0.81 + 7.83 * r2 - 4.39 * r2**2)  # Evans & Fung 1972
    h[rho >= 1.0] = 0.0
    return DrawnObject((h * (peak / h.max())).astype(np.float32), diameter, peak, "erythrocyte")


def draw_thrombocyte(rng: np.random.Generator, pixel_size_um: float) -> DrawnObject:
    """Draw a platelet: a small (2-3 um) flattened ellipsoid of low phase (0.2-0.5 rad).

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the platelet's traits.
    pixel_size_um : float
        Canvas sampling, micrometres per pixel.

    Returns
    -------
    DrawnObject
        The platelet on its canvas.
    """
    diameter = rng.uniform(2.0, 3.0)
    peak = rng.uniform(0.2, 0.5)
    f = _Frame(diameter / 2 * 1.6, pixel_size_um, rng)
    rho, _, _ = _outline(f, diameter / 2, rng, (0.55, 0.95), 0.02)
    h = np.sqrt(np.clip(1.0 - rho**2, 0.0, None))
    return DrawnObject((h * peak).astype(np.float32), diameter, peak, "thrombocyte")


def draw_debris(rng: np.random.Generator, pixel_size_um: float) -> DrawnObject:
    """Draw a cell fragment: small (1.5-3.5 um), irregular outline, low flat phase.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of the fragment's traits.
    pixel_size_um : float
        Canvas sampling, micrometres per pixel.

    Returns
    -------
    DrawnObject
        The fragment; ``diameter_um`` is the equal-area diameter of its drawn outline.
    """
    d0 = rng.uniform(1.5, 3.5)
    peak = rng.uniform(0.15, 0.6)
    f = _Frame(d0 / 2 * 2.0, pixel_size_um, rng)
    rho, _, _ = _outline(f, d0 / 2, rng, (0.5, 1.0), 0.07)
    h = np.clip(1.0 - rho**2, 0.0, None) ** 0.3
    h = h * (1.0 + 0.15 * _texture(f, rng, 0.5)) * (h > 0)
    phase = np.clip(h, 0.0, None) * (peak / max(h.max(), 1e-9))
    diameter = float(np.sqrt(4.0 * np.count_nonzero(phase > 0) / np.pi) * pixel_size_um)
    return DrawnObject(phase.astype(np.float32), diameter, peak, "")


def _paste_max(canvas: np.ndarray, part: np.ndarray, top: int, left: int) -> None:
    h, w = part.shape
    region = canvas[top : top + h, left : left + w]
    np.maximum(region, part, out=region)


def draw_aggregate(
    classes: list[str],
    rng: np.random.Generator,
    pixel_size_um: float,
    size_factor: float = 1.0,
    phase_factor: float = 1.0,
) -> DrawnObject:
    """Draw 2-3 leukocytes that touch and slightly overlap, forming one non-round blob.

    Parameters
    ----------
    classes : list of str
        Class of each member (2 or 3 entries).
    rng : numpy.random.Generator
        Source of the members and their arrangement.
    pixel_size_um : float
        Canvas sampling, micrometres per pixel.
    size_factor, phase_factor : float
        Donor factors passed to :func:`draw_leukocyte`.

    Returns
    -------
    DrawnObject
        ``true_class`` is the members' class when they agree, else ``"mixed"``;
        ``diameter_um`` is the equal-area diameter of the union of the members' outlines.
    """
    cells = [draw_leukocyte(c, rng, pixel_size_um, size_factor, phase_factor) for c in classes]
    radii = [c.diameter_um / 2 / pixel_size_um for c in cells]  # px
    centres = [np.zeros(2)]
    for i in range(1, len(cells)):
        for _ in range(50):
            j = int(rng.integers(0, i))
            a = rng.uniform(0, 2 * np.pi)
            # overlap of 6-18 % of the summed radii: touching, not separable by a threshold
            d = (radii[i] + radii[j]) * rng.uniform(0.82, 0.94)
            c = centres[j] + d * np.array([np.sin(a), np.cos(a)])
            if all(np.hypot(*(c - centres[k])) >= (radii[i] + radii[k]) * 0.82 for k in range(i)):
                break
        centres.append(c)
    pos = np.array(centres)
    halves = np.array([c.phase.shape[0] // 2 for c in cells])
    lo = np.floor((pos - halves[:, None]).min(axis=0)).astype(int)
    hi = np.ceil((pos + halves[:, None]).max(axis=0)).astype(int)
    size = hi - lo + 1
    canvas = np.zeros(tuple(size), dtype=np.float32)
    union = np.zeros(tuple(size), dtype=bool)
    for cell, p, half in zip(cells, pos, halves, strict=True):
        top, left = (np.rint(p).astype(int) - half - lo).tolist()
        _paste_max(canvas, cell.phase, top, left)
        h, w = cell.phase.shape
        union[top : top + h, left : left + w] |= cell.phase > 0
    diameter = float(np.sqrt(4.0 * np.count_nonzero(union) / np.pi) * pixel_size_um)
    true_class = classes[0] if len(set(classes)) == 1 else "mixed"
    peak = float(max(c.peak_rad for c in cells))
    return DrawnObject(canvas, diameter, peak, true_class, tuple(classes))


def draw_defocused(
    kind: str,
    distance_um: float,
    rng: np.random.Generator,
    pixel_size_um: float,
    wavelength_nm: float,
    size_factor: float = 1.0,
    phase_factor: float = 1.0,
) -> tuple[DrawnObject, DrawnObject]:
    """Draw a leukocyte seen ``distance_um`` out of focus (angular-spectrum propagation).

    Parameters
    ----------
    kind : str
        One of :data:`LEUKOCYTES`.
    distance_um : float
        Defocus distance, micrometres (either sign).
    rng : numpy.random.Generator
        Source of the cell's traits.
    pixel_size_um : float
        Canvas sampling, micrometres per pixel.
    wavelength_nm : float
        Vacuum wavelength, nanometres.
    size_factor, phase_factor : float
        Donor factors passed to :func:`draw_leukocyte`.

    Returns
    -------
    (DrawnObject, DrawnObject)
        The defocused cell (blurred, with rings; canvas padded so they fit) and the same cell
        in focus, on its own smaller canvas centred at the same point.
    """
    cell = draw_leukocyte(kind, rng, pixel_size_um, size_factor, phase_factor)
    # the defocus blur spreads by ~|z| * tan(asin(NA / n)) ~ 0.3 |z|: leave room for rings
    pad = int(np.ceil((0.4 * abs(distance_um) + 3.0) / pixel_size_um))
    blurred = defocus_phase(cell.phase, distance_um, wavelength_nm, pixel_size_um, pad)
    return DrawnObject(blurred, cell.diameter_um, cell.peak_rad, kind), cell
