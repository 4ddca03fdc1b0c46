"""Cell types of stained bone-marrow smears and how one cell is drawn.

The 15 classes are those of Gräbel et al. (paper 2, Fig. 1). Three lineages mature
along a continuous parameter ``t`` in [0, 1]: granulocytic (blast -> segmented),
erythroid (proerythroblast -> orthochromatic) and monocytic (promonocyte -> monocyte);
a class is an interval of ``t`` and the intervals of one lineage touch. Eosinophils,
basophils and lymphocytes have their own ``t`` (within-class variation only).

Every visual property is a smooth (PCHIP) function of the cell's *apparent* maturation
(``t`` plus per-cell jitter) plus its own per-cell noise, so neighbouring stages overlap
near their common boundary as they do for human annotators.

A cell is drawn as stain concentration maps (:data:`STAINS`), not colours: the slide's
stain vectors turn them into optical density and the scene into RGB (Beer-Lambert), so
one staining change acts on every structure consistently.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.interpolate import PchipInterpolator

#: Stain components a cell is drawn in (one concentration map each).
STAINS = ("chromatin", "blue", "pink", "hb", "azur", "neutral", "eos", "baso")

#: Optical density per unit concentration (R, G, B) of a standard
#: May-Grünwald-Giemsa/Pappenheim stain: purple chromatin (azure-eosinate), azure-blue
#: RNA (basophilic cytoplasm), pale pink-lilac (neutral cytoplasm), salmon haemoglobin,
#: red-purple azurophilic, lilac neutral, orange-red eosinophil and blue-black basophil
#: granules. The first five (azure side) scale with the slide's azure strength, the
#: eosin side (pink, hb, eos) with its eosin strength.
STAIN_OD: dict[str, tuple[float, float, float]] = {
    "chromatin": (0.95, 1.50, 0.62),
    "blue": (0.90, 0.58, 0.14),
    "pink": (0.10, 0.50, 0.28),
    "hb": (0.14, 0.62, 0.56),
    "azur": (0.75, 1.50, 0.60),
    "neutral": (0.28, 0.55, 0.26),
    "eos": (0.08, 0.75, 1.10),
    "baso": (1.40, 1.90, 0.95),
}
AZURE_STAINS = ("chromatin", "blue", "azur", "neutral", "baso")

#: name -> (lineage, t_lo, t_hi, proportion). Proportions follow the shape of paper 2's
#: Fig. 2 (log scale, ~1.5-2 orders of magnitude): segmented granulocytes and poly-/
#: orthochromatic erythroblasts most common, basophils and promonocytes rarest.
CELL_TYPES: dict[str, tuple[str, float, float, float]] = {
    "blast": ("granulocytic", 0.00, 0.12, 0.025),
    "promyelocyte": ("granulocytic", 0.12, 0.30, 0.040),
    "myelocyte": ("granulocytic", 0.30, 0.50, 0.080),
    "metamyelocyte": ("granulocytic", 0.50, 0.66, 0.075),
    "band_granulocyte": ("granulocytic", 0.66, 0.82, 0.085),
    "segmented_granulocyte": ("granulocytic", 0.82, 1.00, 0.170),
    "proerythroblast": ("erythroid", 0.00, 0.20, 0.018),
    "basophilic_erythroblast": ("erythroid", 0.20, 0.45, 0.045),
    "polychromatic_erythroblast": ("erythroid", 0.45, 0.75, 0.150),
    "orthochromatic_erythroblast": ("erythroid", 0.75, 1.00, 0.110),
    "eosinophil": ("eosinophilic", 0.00, 1.00, 0.030),
    "basophil": ("basophilic", 0.00, 1.00, 0.004),
    "promonocyte": ("monocytic", 0.00, 0.40, 0.006),
    "monocyte": ("monocytic", 0.40, 1.00, 0.045),
    "lymphocyte": ("lymphoid", 0.00, 1.00, 0.097),
}
CLASSES: tuple[str, ...] = tuple(CELL_TYPES)
LINEAGES: tuple[str, ...] = tuple(dict.fromkeys(v[0] for v in CELL_TYPES.values()))

# Property knots per lineage: name -> (t knots, values). Properties:
# diameter (um), nc (nucleus/cell area), shape (0 round .. 0.3 indented .. 0.45 kidney ..
# 0.65 band .. 1 segmented), chromatin (0 fine .. 1 coarse/clumped), density (nuclear
# stain), nucleoli (visibility), blue/pink/hb (cytoplasm stain), azur/neutral/eos/baso
# (granule load), halo (perinuclear clear zone), vacuoles, ecc (nucleus off-centre).
_G = (0.0, 0.06, 0.21, 0.40, 0.58, 0.74, 0.91, 1.0)  # granulocytic class centres + ends
_E = (0.0, 0.10, 0.325, 0.60, 0.875, 1.0)
_M = (0.0, 0.20, 0.45, 0.70, 1.0)
_1 = (0.0, 1.0)
_KNOTS: dict[str, dict[str, tuple[tuple[float, ...], tuple[float, ...]]]] = {
    "granulocytic": {
        "diameter": (_G, (14.5, 14.5, 16.5, 14.5, 13.2, 12.6, 12.2, 12.0)),
        "nc": (_G, (0.78, 0.76, 0.56, 0.48, 0.42, 0.36, 0.33, 0.32)),
        "shape": (_G, (0.0, 0.0, 0.04, 0.14, 0.42, 0.63, 0.87, 0.97)),
        "chromatin": (_G, (0.05, 0.08, 0.30, 0.50, 0.65, 0.78, 0.90, 0.95)),
        "density": (_G, (0.75, 0.78, 0.85, 0.95, 1.05, 1.12, 1.20, 1.22)),
        "nucleoli": (_G, (1.0, 1.0, 0.55, 0.0, 0.0, 0.0, 0.0, 0.0)),
        "blue": (_G, (0.70, 0.66, 0.55, 0.22, 0.10, 0.06, 0.04, 0.04)),
        "pink": (_G, (0.04, 0.05, 0.12, 0.30, 0.36, 0.38, 0.38, 0.38)),
        "hb": (_1, (0.0, 0.0)),
        "azur": (_G, (0.0, 0.06, 1.0, 0.20, 0.04, 0.0, 0.0, 0.0)),
        "neutral": (_G, (0.0, 0.0, 0.10, 0.80, 0.90, 0.90, 0.90, 0.90)),
        "eos": (_1, (0.0, 0.0)),
        "baso": (_1, (0.0, 0.0)),
        "halo": (_G, (0.0, 0.0, 0.7, 0.45, 0.05, 0.0, 0.0, 0.0)),
        "vacuoles": (_1, (0.0, 0.0)),
        "ecc": (_G, (0.10, 0.12, 0.50, 0.50, 0.30, 0.15, 0.10, 0.10)),
    },
    "erythroid": {
        "diameter": (_E, (17.0, 16.0, 13.5, 10.8, 8.8, 8.2)),
        "nc": (_E, (0.80, 0.76, 0.64, 0.48, 0.24, 0.20)),
        "shape": (_1, (0.0, 0.0)),
        "chromatin": (_E, (0.10, 0.14, 0.55, 0.80, 0.98, 1.0)),
        "density": (_E, (0.85, 0.90, 1.05, 1.22, 1.55, 1.65)),
        "nucleoli": (_E, (1.0, 0.9, 0.05, 0.0, 0.0, 0.0)),
        "blue": (_E, (1.25, 1.25, 1.10, 0.45, 0.12, 0.06)),
        "pink": (_1, (0.0, 0.0)),
        "hb": (_E, (0.0, 0.0, 0.06, 0.36, 0.62, 0.70)),
        "azur": (_1, (0.0, 0.0)),
        "neutral": (_1, (0.0, 0.0)),
        "eos": (_1, (0.0, 0.0)),
        "baso": (_1, (0.0, 0.0)),
        "halo": (_E, (0.55, 0.50, 0.15, 0.0, 0.0, 0.0)),
        "vacuoles": (_1, (0.0, 0.0)),
        "ecc": (_E, (0.10, 0.10, 0.15, 0.25, 0.45, 0.50)),
    },
    "monocytic": {
        "diameter": (_M, (16.0, 16.5, 16.0, 15.2, 14.8)),
        "nc": (_M, (0.70, 0.64, 0.56, 0.50, 0.46)),
        "shape": (_M, (0.08, 0.22, 0.34, 0.44, 0.52)),
        "chromatin": (_M, (0.15, 0.22, 0.32, 0.40, 0.45)),
        "density": (_M, (0.80, 0.82, 0.86, 0.90, 0.92)),
        "nucleoli": (_M, (0.75, 0.50, 0.10, 0.0, 0.0)),
        "blue": (_M, (0.55, 0.50, 0.38, 0.30, 0.28)),
        "pink": (_M, (0.06, 0.08, 0.12, 0.15, 0.16)),
        "hb": (_1, (0.0, 0.0)),
        "azur": (_M, (0.15, 0.20, 0.25, 0.28, 0.28)),
        "neutral": (_1, (0.0, 0.0)),
        "eos": (_1, (0.0, 0.0)),
        "baso": (_1, (0.0, 0.0)),
        "halo": (_1, (0.0, 0.0)),
        "vacuoles": (_M, (0.0, 0.1, 0.3, 0.5, 0.6)),
        "ecc": (_M, (0.25, 0.30, 0.30, 0.30, 0.30)),
    },
    "eosinophilic": {
        "diameter": (_1, (13.0, 14.5)),
        "nc": (_1, (0.34, 0.30)),
        "shape": (_1, (0.80, 0.92)),
        "chromatin": (_1, (0.80, 0.90)),
        "density": (_1, (1.10, 1.20)),
        "nucleoli": (_1, (0.0, 0.0)),
        "blue": (_1, (0.08, 0.05)),
        "pink": (_1, (0.15, 0.12)),
        "hb": (_1, (0.0, 0.0)),
        "azur": (_1, (0.0, 0.0)),
        "neutral": (_1, (0.0, 0.0)),
        "eos": (_1, (0.85, 1.0)),
        "baso": (_1, (0.0, 0.0)),
        "halo": (_1, (0.0, 0.0)),
        "vacuoles": (_1, (0.0, 0.0)),
        "ecc": (_1, (0.10, 0.10)),
    },
    "basophilic": {
        "diameter": (_1, (11.0, 12.5)),
        "nc": (_1, (0.45, 0.40)),
        "shape": (_1, (0.50, 0.80)),
        "chromatin": (_1, (0.70, 0.80)),
        "density": (_1, (0.95, 1.05)),
        "nucleoli": (_1, (0.0, 0.0)),
        "blue": (_1, (0.12, 0.10)),
        "pink": (_1, (0.20, 0.20)),
        "hb": (_1, (0.0, 0.0)),
        "azur": (_1, (0.0, 0.0)),
        "neutral": (_1, (0.0, 0.0)),
        "eos": (_1, (0.0, 0.0)),
        "baso": (_1, (0.85, 1.0)),
        "halo": (_1, (0.0, 0.0)),
        "vacuoles": (_1, (0.0, 0.0)),
        "ecc": (_1, (0.15, 0.15)),
    },
    "lymphoid": {  # t: small mature lymphocyte -> large (reactive-looking) lymphocyte
        "diameter": (_1, (7.6, 11.0)),
        "nc": (_1, (0.88, 0.68)),
        "shape": (_1, (0.0, 0.08)),
        "chromatin": (_1, (0.88, 0.62)),
        "density": (_1, (1.32, 1.08)),
        "nucleoli": (_1, (0.0, 0.10)),
        "blue": (_1, (0.42, 0.48)),
        "pink": (_1, (0.02, 0.03)),
        "hb": (_1, (0.0, 0.0)),
        "azur": (_1, (0.0, 0.15)),
        "neutral": (_1, (0.0, 0.0)),
        "eos": (_1, (0.0, 0.0)),
        "baso": (_1, (0.0, 0.0)),
        "halo": (_1, (0.0, 0.0)),
        "vacuoles": (_1, (0.0, 0.0)),
        "ecc": (_1, (0.20, 0.30)),
    },
}
PROPERTIES: tuple[str, ...] = tuple(_KNOTS["granulocytic"])
_CURVES = {
    lin: {p: PchipInterpolator(np.array(k), np.array(v)) for p, (k, v) in props.items()}
    for lin, props in _KNOTS.items()
}
#: Per-cell noise of each property: ("mul", sd of log factor) or ("add", sd).
_NOISE: dict[str, tuple[str, float]] = {
    "diameter": ("mul", 0.07),
    "nc": ("add", 0.04),
    "shape": ("add", 0.05),
    "chromatin": ("add", 0.07),
    "density": ("mul", 0.08),
    "nucleoli": ("add", 0.12),
    "blue": ("mul", 0.15),
    "pink": ("mul", 0.20),
    "hb": ("mul", 0.15),
    "azur": ("mul", 0.25),
    "neutral": ("mul", 0.20),
    "eos": ("mul", 0.10),
    "baso": ("mul", 0.10),
    "halo": ("add", 0.10),
    "vacuoles": ("add", 0.10),
    "ecc": ("add", 0.10),
}
_BOUNDS = {"nc": (0.12, 0.92), "shape": (0.0, 1.0), "chromatin": (0.0, 1.0)}


@dataclass(frozen=True)
class CellParams:
    """Everything that decides how one nucleated cell looks (see :func:`cell_params`)."""

    cls: str
    lineage: str
    t: float  # true maturation within the lineage
    t_apparent: float  # t plus the per-cell jitter the properties follow
    props: dict[str, float]
    lobes: int

    @property
    def diameter_um(self) -> float:
        """Diameter of the round cell before outline noise, um."""
        return self.props["diameter"]


def class_counts(n: int, proportions: dict[str, float] | None = None) -> dict[str, int]:
    """Split ``n`` cells over the classes in proportion, every class at least once.

    When ``n`` >= the number of classes each class first gets one cell and the rest is
    shared by largest remainder of ``p * (n - k)``; below that the largest remainders of
    ``p * n`` decide which classes appear.

    Parameters
    ----------
    n : int
        Number of cells.
    proportions : dict, optional
        Class -> weight (default the :data:`CELL_TYPES` proportions).

    Returns
    -------
    dict of str to int
        Counts in class order, summing to ``n``.
    """
    p = proportions or {c: v[3] for c, v in CELL_TYPES.items()}
    names = list(p)
    w = np.array([p[c] for c in names], float)
    w /= w.sum()
    base = np.ones(len(names), int) if n >= len(names) else np.zeros(len(names), int)
    share = w * (n - base.sum())
    counts = base + np.floor(share).astype(int)
    left = n - counts.sum()
    order = np.argsort(-(share - np.floor(share)), kind="stable")
    counts[order[:left]] += 1
    return {c: int(k) for c, k in zip(names, counts, strict=True)}


def cell_params(
    cls: str,
    t: float,
    rng: np.random.Generator,
    t_jitter: float = 0.08,
    asynchrony: float = 0.08,
) -> CellParams:
    """Draw the look of one cell of class ``cls`` at maturation ``t``.

    Parameters
    ----------
    cls : str
        One of :data:`CLASSES`.
    t : float
        Maturation within the lineage (inside the class interval).
    rng : numpy.random.Generator
        Source of the per-cell noise.
    t_jitter : float
        Standard deviation of the apparent maturation around ``t``; larger values make
        neighbouring stages overlap more.
    asynchrony : float
        Standard deviation of each property's own maturation around the apparent one
        (nucleus and cytoplasm need not mature in step).

    Returns
    -------
    CellParams
        Property values after noise, and the number of nuclear lobes.
    """
    lineage = CELL_TYPES[cls][0]
    t_app = float(np.clip(t + rng.normal(0.0, t_jitter), 0.0, 1.0))
    props: dict[str, float] = {}
    for name in PROPERTIES:
        t_prop = float(np.clip(t_app + rng.normal(0.0, asynchrony), 0.0, 1.0))
        value = float(_CURVES[lineage][name](t_prop))
        kind, sd = _NOISE[name]
        if kind == "mul":
            value *= float(np.exp(rng.normal(0, sd)))
        else:
            value += rng.normal(0, sd)
        lo, hi = _BOUNDS.get(name, (0.0, np.inf))
        props[name] = float(np.clip(value, lo, hi))
    # more lobes with maturation; eosinophils mostly bilobed ("spectacles")
    if lineage == "eosinophilic":
        lobes = 2 if rng.random() < 0.8 else 3
    else:
        mean = 2.0 + 2.0 * max(0.0, t_app - 0.75) / 0.25
        lobes = int(np.clip(round(rng.normal(mean, 0.7)), 2, 5))
    return CellParams(cls, lineage, float(t), t_app, props, lobes)


@dataclass
class DrawnCell:
    """Stain maps of one drawn cell on the crop grid.

    ``conc`` maps stain name -> (S, S) concentration; ``cell`` and ``nucleus`` are soft
    masks in [0, 1]; ``granules`` marks granule pixels (any kind).
    """

    conc: dict[str, np.ndarray]
    cell: np.ndarray
    nucleus: np.ndarray
    granules: np.ndarray


def _soft(inside_px: np.ndarray, edge_px: float = 0.7) -> np.ndarray:
    """Anti-aliased mask from a signed inside distance (px)."""
    return np.clip(0.5 + inside_px / (2 * edge_px), 0.0, 1.0).astype(np.float32)


def _noise_field(shape: tuple[int, int], sigma_px: float, rng: np.random.Generator) -> np.ndarray:
    """Smoothed Gaussian noise with unit standard deviation."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_px)
    return f / max(float(f.std()), 1e-6)


def _splat(
    shape: tuple[int, int],
    ys: np.ndarray,
    xs: np.ndarray,
    amp: np.ndarray,
    sigma_px: float,
) -> np.ndarray:
    """Gaussian blobs of peak ``amp`` at (ys, xs) (bilinear sub-pixel placement)."""
    img = np.zeros(shape, np.float32)
    h, w = shape
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    fy, fx = ys - y0, xs - x0
    for dy, dx, wt in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx),
                       (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yy, xx = y0 + dy, x0 + dx
        ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        np.add.at(img, (yy[ok], xx[ok]), (amp * wt)[ok])
    return ndimage.gaussian_filter(img, sigma_px) * np.float32(2 * np.pi * sigma_px**2)


def _nucleus_inside(
    yy: np.ndarray, xx: np.ndarray, centre: tuple[float, float], radius_px: float,
    p: CellParams, rng: np.random.Generator,
) -> np.ndarray:
    """Signed inside distance (px) of the nucleus: a tube swept along an arc.

    A tube of half-width ``w`` around a centreline of length ``L``: ``L = 0`` gives a
    round nucleus; a short curved line an indented, then kidney-shaped one; a long one
    a C-shaped band; constrictions of the width make lobes joined by thin filaments.
    ``w`` keeps the nucleus area at ``nc`` times the cell area.
    """
    s, nc = p.props["shape"], p.props["nc"]
    area = nc * np.pi * radius_px**2
    length = radius_px * float(np.interp(s, (0, 0.1, 0.3, 0.45, 0.6, 0.75, 1.0),
                                         (0, 0.05, 0.5, 0.95, 1.55, 2.0, 2.5)))
    depth = float(np.clip((s - 0.62) / 0.28, 0.0, 1.0)) * 0.92  # lobe constriction
    area /= 1.0 - 0.35 * depth  # constrictions remove area: widen to keep nc
    w = (-length + np.sqrt(length**2 + np.pi * area)) / np.pi
    bend = float(np.interp(s, (0, 0.3, 0.45, 0.6, 0.75, 1.0), (1.0, 1.02, 1.15, 1.6, 2.1, 2.2)))
    rho = max(w * bend, 1e-3)
    rho = min(rho, max(0.9 * radius_px - w, w * 1.02))
    span = min(length / rho, 2 * np.pi - 2.4 * np.arcsin(min(1.0, w / rho)))
    a0 = rng.uniform(0, 2 * np.pi)
    m = 24 if length > 0.5 else 1
    u = np.linspace(0, 1, m) if m > 1 else np.array([0.5])
    ang = a0 + (u - 0.5) * span
    wig = rng.uniform(0, 0.15) * s
    r_line = rho * (1 + wig * np.sin(2 * np.pi * u * rng.uniform(1, 2) + rng.uniform(0, 6.3)))
    mean_off = np.sinc(span / (2 * np.pi)) if span > 0 else 1.0  # centroid of the arc
    cy = centre[0] - rho * mean_off * np.sin(a0)
    cx = centre[1] - rho * mean_off * np.cos(a0)
    py, px = cy + r_line * np.sin(ang), cx + r_line * np.cos(ang)
    width = np.full(m, w)
    if depth > 0 and m > 1:
        k = p.lobes
        for j in range(1, k):
            uj = j / k + rng.normal(0, 0.04)
            width *= 1 - depth * np.exp(-(((u - uj) / (0.35 / k)) ** 2))
        width = np.maximum(width, 0.35)
    # elliptic nuclei: squash coordinates around the nucleus centre
    aspect = rng.uniform(1.0, 1.25)
    beta = rng.uniform(0, np.pi)
    cb, sb = np.cos(beta), np.sin(beta)

    def squash(y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dy, dx = y - centre[0], x - centre[1]
        a = (dx * cb + dy * sb) / np.sqrt(aspect)
        b = (-dx * sb + dy * cb) * np.sqrt(aspect)
        return a, b

    ga, gb = squash(yy, xx)
    la, lb = squash(py, px)
    d = np.sqrt((ga[..., None] - la) ** 2 + (gb[..., None] - lb) ** 2)
    return (width - d).max(axis=-1)


def draw_cell(
    p: CellParams,
    shape: tuple[int, int],
    centre_px: tuple[float, float],
    px_um: float,
    rng: np.random.Generator,
) -> DrawnCell:
    """Draw one nucleated cell as stain concentration maps on an ``(S, S)`` grid.

    Parameters
    ----------
    p : CellParams
        The cell's properties.
    shape : tuple of int
        Grid shape (rows, columns).
    centre_px : tuple of float
        Cell centre (row, column) in px; may lie outside the grid (a neighbour).
    px_um : float
        Pixel size, um.
    rng : numpy.random.Generator
        Source of outline, texture and granule noise.

    Returns
    -------
    DrawnCell
        Concentration maps and soft masks.
    """
    q = p.props
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32) + 0.5
    radius = q["diameter"] / 2 / px_um
    dy, dx = yy - centre_px[0], xx - centre_px[1]
    rr, th = np.hypot(dy, dx), np.arctan2(dy, dx)
    irregular = 0.045 if p.lineage == "monocytic" else 0.02
    edge = radius * (1 + sum(rng.normal(0, irregular / k) * np.cos(k * th + rng.uniform(0, 6.3))
                             for k in (2, 3, 4, 5)))
    cell = _soft(edge - rr)
    # nucleus, placed off-centre by ecc x the free room
    n_extent = radius * np.sqrt(q["nc"]) * (1 + 0.6 * q["shape"])
    room = max(0.0, 0.92 * radius - n_extent)
    phi = rng.uniform(0, 2 * np.pi)
    off = float(np.clip(q["ecc"], 0, 1)) * room
    nc_centre = (centre_px[0] + off * np.sin(phi), centre_px[1] + off * np.cos(phi))
    n_inside = _nucleus_inside(yy, xx, nc_centre, radius, p, rng)
    nucleus = _soft(n_inside) * cell

    # chromatin: fine and even in blasts, coarse clumps with pale gaps in mature cells
    c = q["chromatin"]
    tex = _noise_field(shape, (0.14 + 0.36 * c) / px_um, rng)
    chrom = q["density"] * (1 + (0.10 + 0.42 * c) * np.tanh((0.6 + 2.2 * c) * tex))
    blue = np.zeros(shape, np.float32)
    nucleoli = float(np.clip(q["nucleoli"], 0, 1))
    if nucleoli > 0.05:
        k = int(rng.integers(1, 4))
        inside = np.flatnonzero(n_inside.ravel() > 0.9 / px_um)
        if inside.size:
            pick = rng.choice(inside, size=min(k, inside.size), replace=False)
            r_nl = rng.uniform(0.45, 0.85, size=pick.size) / px_um
            spots = np.zeros(shape, np.float32)
            for idx, r in zip(pick, r_nl, strict=True):
                y0, x0 = divmod(int(idx), shape[1])
                spots = np.maximum(spots, _soft(r - np.hypot(yy - y0 - 0.5, xx - x0 - 0.5)))
            chrom = chrom * (1 - 0.8 * nucleoli * spots)
            blue += 0.3 * nucleoli * spots * nucleus
    conc = {name: np.zeros(shape, np.float32) for name in STAINS}
    conc["chromatin"] = (chrom * nucleus).astype(np.float32)

    # cytoplasm: azure-blue RNA fading, pink/haemoglobin rising with maturation
    mottle = 1 + 0.08 * _noise_field(shape, 1.2 / px_um, rng)
    dist_out = np.maximum(-n_inside, 0) * px_um  # um outside the nucleus
    halo = float(np.clip(q["halo"], 0, 1))
    hof = np.exp(-((dist_out / 1.2) ** 2)) * (1 + np.cos(th - phi)) / 2 if halo > 0 else 0
    clear = 1 - 0.55 * halo * hof
    vac = float(np.clip(q["vacuoles"], 0, 1))
    if vac > 0.05:
        n_vac = int(rng.poisson(8 * vac))
        holes = np.zeros(shape, np.float32)
        for _ in range(n_vac):
            r = radius * np.sqrt(rng.uniform(0.2, 0.8))
            a = rng.uniform(0, 2 * np.pi)
            rv = rng.uniform(0.3, 0.6) / px_um
            holes = np.maximum(holes, _soft(rv - np.hypot(dy - r * np.sin(a), dx - r * np.cos(a))))
        clear = clear * (1 - 0.75 * holes * (1 - nucleus))
    under = cell * (1 - 0.8 * nucleus)  # little cytoplasm lies above/below the nucleus
    conc["blue"] = (q["blue"] * under * mottle * clear + blue).astype(np.float32)
    conc["pink"] = (q["pink"] * under * mottle * clear).astype(np.float32)
    conc["hb"] = (q["hb"] * under * mottle * clear).astype(np.float32)

    # granules: count per um2 of cell, size (sigma, um), amplitude, share over the nucleus
    area_um2 = np.pi * (q["diameter"] / 2) ** 2
    granules = np.zeros(shape, np.float32)
    for name, per_um2, sigma_um, amp, over_nucleus in (
        ("azur", 0.9 if p.lineage == "granulocytic" else 0.7, 0.17, 1.1, 0.6),
        ("neutral", 2.5, 0.11, 0.55, 0.1),
        ("eos", 2.4, 0.22, 0.85, 0.15),
        ("baso", 0.30, 0.30, 1.4, 1.0),
    ):
        load = q[name]
        if load < 0.02:
            continue
        if p.lineage == "monocytic" or p.lineage == "lymphoid":
            sigma_um, amp = 0.10, 0.7  # fine azurophilic dust
        n = int(rng.poisson(load * per_um2 * area_um2))
        if n == 0:
            continue
        r = radius * 0.95 * np.sqrt(rng.uniform(0, 1, size=4 * n))
        ang = rng.uniform(0, 2 * np.pi, size=4 * n)
        gy, gx = centre_px[0] + r * np.sin(ang), centre_px[1] + r * np.cos(ang)
        iy = np.clip(gy.astype(int), 0, shape[0] - 1)
        ix = np.clip(gx.astype(int), 0, shape[1] - 1)
        on_nuc = nucleus[iy, ix] > 0.5
        keep = ~on_nuc | (rng.uniform(size=4 * n) < over_nucleus)
        gy, gx = gy[keep][:n], gx[keep][:n]
        amps = amp * rng.uniform(0.6, 1.2, size=gy.size).astype(np.float32)
        blobs = _splat(shape, gy, gx, amps, sigma_um / px_um) * cell
        conc[name] += blobs
        granules = np.maximum(granules, np.clip(blobs / (0.5 * amp), 0, 1))
    return DrawnCell(conc, cell, nucleus, granules)


def draw_erythrocyte(
    shape: tuple[int, int], centre_px: tuple[float, float], px_um: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw a red blood cell: a salmon disc with a pale centre (biconcave).

    Parameters
    ----------
    shape : tuple of int
        Grid shape.
    centre_px : tuple of float
        Centre (row, column), px.
    px_um : float
        Pixel size, um.
    rng : numpy.random.Generator
        Size and stain noise.

    Returns
    -------
    hb : numpy.ndarray
        Haemoglobin concentration map.
    mask : numpy.ndarray
        Soft cell mask.
    """
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32) + 0.5
    radius = rng.normal(7.5, 0.4) / 2 / px_um
    aspect = rng.uniform(1.0, 1.12)
    beta = rng.uniform(0, np.pi)
    dy, dx = yy - centre_px[0], xx - centre_px[1]
    a = (dx * np.cos(beta) + dy * np.sin(beta)) / np.sqrt(aspect)
    b = (-dx * np.sin(beta) + dy * np.cos(beta)) * np.sqrt(aspect)
    rr = np.hypot(a, b)
    mask = _soft(radius - rr)
    pallor = 1 - rng.uniform(0.35, 0.55) * np.exp(-((rr / (0.45 * radius)) ** 2))
    hb = rng.uniform(0.55, 0.75) * mask * pallor
    return hb.astype(np.float32), mask
