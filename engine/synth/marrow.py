"""Simulated crops of stained (Pappenheim / May-Grünwald-Giemsa) bone-marrow smears.

One nucleated cell is centred in each ``size x size`` RGB crop over a pale pinkish
background, with a few erythrocytes and sometimes a neighbouring cell cut by the crop
border, as in crops cut from whole-slide images (paper 2, §II). Cell types, their
maturation model and frequencies are in :mod:`.marrow_cells`.

Acquisition structure: cells come from *regions* nested in *slides*. Each slide has its
own staining (azure and eosin strength, hue and saturation of the stain vectors, overall
intensity); each region its own illumination colour and gradient, focus blur and
noise. Region ids are globally unique, so cross-validation can keep regions apart.

Written files (paths relative to ``out_dir``):

- ``crops/NNNNNN.png`` (``fmt="png"``), or ``marrow.h5`` (``fmt="h5"``) holding
  ``/patches`` uint8 (N, S, S, 3), one dataset per truth column under ``/truth``, and
  per region and class a virtual dataset ``/groups/<region>/<class>`` (a view of the
  region's crops of that class, for the manifest);
- ``truth.csv``: one row per cell (:data:`TRUTH_COLUMNS`); ``cell_id`` = row = index
  into ``/patches``. Cells are numbered by slide, region, then class;
- ``manifest.csv`` (:data:`MANIFEST_COLUMNS`) for ``hemalens segment manifest.csv
  --modality rgb``: one row per crop (png) or per region and class (h5), with
  ``given_label`` = class, ``donor`` = slide, ``run`` = region and the pixel size.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import h5py
import numpy as np
from scipy import ndimage

from hemalens.engine.errors import InputError
from hemalens.engine.jobs import Progress, checkpoint
from hemalens.engine.project import ProjectWriter
from hemalens.engine.synth.marrow_cells import (
    AZURE_STAINS,
    CELL_TYPES,
    CLASSES,
    STAIN_OD,
    STAINS,
    cell_params,
    class_counts,
    draw_cell,
    draw_erythrocyte,
)

TRUTH_COLUMNS = (
    "cell_id",
    "file",
    "class",
    "lineage",
    "maturation",
    "apparent_maturation",
    "slide",
    "region",
    "diameter_um",
    "nc_ratio",
    "nucleus_shape",
    "lobes",
    "x",
    "y",
)
MANIFEST_COLUMNS = ("file", "modality", "given_label", "donor", "run", "pixel_size_um")
_NUMERIC = {"cell_id": "int64", "lobes": "int32"}
_TEXT = ("file", "class", "lineage", "slide", "region")


@dataclass(frozen=True)
class MarrowSimConfig:
    """Knobs of :func:`simulate_marrow` (defaults give the documented data set)."""

    cells: int = 2000
    seed: int = 0
    size: int = 96  # crop side, px
    fmt: str = "png"  # "png" (one file per crop) or "h5" (one file)
    fov_um: float = 24.0  # crop side in um: pixel size = fov_um / size
    slides: int = 6
    cells_per_region: int = 24
    maturation_jitter: float = 0.08  # sd of apparent vs true maturation (stage overlap)
    asynchrony: float = 0.08  # sd of each property's maturation around the apparent one
    stain_variation: float = 1.0  # scales every slide-to-slide staining difference
    erythrocytes: float = 2.5  # mean red cells per crop (all cut by the crop border)
    neighbour_rate: float = 0.35  # share of crops with a nucleated neighbour at the border
    blur_px: tuple[float, float] = (0.35, 1.0)  # range of the per-region focus blur (sigma)
    noise: tuple[float, float] = (1.0, 3.5)  # range of the per-region noise sd, grey levels

    @property
    def pixel_size_um(self) -> float:
        """Pixel size of the crops, um."""
        return self.fov_um / self.size

    def validate(self) -> None:
        """Raise ValueError naming the first unusable parameter."""
        checks = [
            (self.cells >= 1, f"cells must be >= 1, got {self.cells}"),
            (self.size >= 32, f"size must be >= 32 px, got {self.size}"),
            (self.fmt in ("png", "h5"), f"fmt must be 'png' or 'h5', got {self.fmt!r}"),
            (self.fov_um > 0, "fov_um must be > 0"),
            (self.slides >= 1, "slides must be >= 1"),
            (self.cells_per_region >= 1, "cells_per_region must be >= 1"),
            (self.maturation_jitter >= 0, "maturation_jitter must be >= 0"),
            (self.asynchrony >= 0, "asynchrony must be >= 0"),
            (self.stain_variation >= 0, "stain_variation must be >= 0"),
            (self.erythrocytes >= 0, "erythrocytes must be >= 0"),
            (0 <= self.neighbour_rate <= 1, "neighbour_rate must be within 0..1"),
            (0 <= self.blur_px[0] <= self.blur_px[1], "blur_px must be a range (lo <= hi)"),
            (0 <= self.noise[0] <= self.noise[1], "noise must be a range (lo <= hi)"),
        ]
        for ok, reason in checks:
            if not ok:
                raise ValueError(reason)


# ----------------------------------------------------------------------- slides, regions


@dataclass(frozen=True)
class Slide:
    """Staining of one slide: optical density per unit of each stain, and background."""

    name: str
    od: dict[str, np.ndarray]
    background: float  # eosin tint of the plasma film

    @classmethod
    def draw(cls, name: str, rng: np.random.Generator, variation: float) -> Slide:
        """Draw a slide's staining around the standard :data:`STAIN_OD`."""
        v = variation
        azure = float(np.exp(rng.normal(0, 0.13 * v)))
        eosin = float(np.exp(rng.normal(0, 0.16 * v)))
        hue = np.exp(rng.normal(0, 0.07 * v, size=3))  # per-channel shift of every stain
        sat = float(np.exp(rng.normal(0, 0.10 * v)))
        intensity = float(np.exp(rng.normal(0, 0.08 * v)))
        od = {}
        for name_, vec in STAIN_OD.items():
            vec = np.asarray(vec, float) * hue
            vec = vec.mean() + sat * (vec - vec.mean())
            strength = azure if name_ in AZURE_STAINS else eosin
            od[name_] = np.clip(vec, 0.01, None) * strength * intensity
        return cls(name, od, float(rng.uniform(0.06, 0.16) * min(eosin, 1.15)))


@dataclass(frozen=True)
class Region:
    """Imaging of one region: illumination colour/gradient, blur and noise."""

    name: str
    slide: Slide
    gain: np.ndarray  # per-channel illumination (white balance x brightness)
    tilt: tuple[float, float]  # illumination gradient across a crop (fraction)
    blur_px: float
    noise: float

    @classmethod
    def draw(cls, name: str, slide: Slide, rng: np.random.Generator,
             config: MarrowSimConfig) -> Region:
        """Draw a region's imaging conditions."""
        gain = rng.uniform(0.95, 1.02) * np.exp(rng.normal(0, 0.02, size=3))
        tilt = (float(rng.normal(0, 0.02)), float(rng.normal(0, 0.02)))
        blur = float(rng.uniform(*config.blur_px))
        noise = float(rng.uniform(*config.noise))
        return cls(name, slide, gain, tilt, blur, noise)


def plan_cells(config: MarrowSimConfig) -> list[dict[str, Any]]:
    """Assign classes, maturations, slides and regions to the cells.

    Regions hold ``cells_per_region`` cells on average (classes shuffled over them) and
    are dealt round-robin to ``min(slides, regions)`` slides. Cells are then numbered by
    slide, region and class (so each region's crops of one class are contiguous).

    Parameters
    ----------
    config : MarrowSimConfig
        The simulation parameters.

    Returns
    -------
    list of dict
        Per cell: ``cell_id``, ``class``, ``lineage``, ``maturation``, ``slide`` and
        ``region`` (indices), ``key`` (an int seeding the cell's own generator).
    """
    rng = np.random.default_rng([config.seed, 1])
    counts = class_counts(config.cells)
    classes = np.repeat(np.arange(len(CLASSES)), [counts[c] for c in CLASSES])
    rng.shuffle(classes)
    n_regions = max(1, int(np.ceil(config.cells / config.cells_per_region)))
    n_slides = min(config.slides, n_regions)
    cells = []
    for r, chunk in enumerate(np.array_split(np.arange(config.cells), n_regions)):
        for i in chunk:
            name = CLASSES[classes[i]]
            lineage, lo, hi, _ = CELL_TYPES[name]
            cells.append({
                "class": name,
                "lineage": lineage,
                "maturation": float(rng.uniform(lo, hi)),
                "slide": r % n_slides,
                "region": r,
                "key": int(i),
            })
    order = {c: k for k, c in enumerate(CLASSES)}
    cells.sort(key=lambda c: (c["slide"], c["region"], order[c["class"]], c["key"]))
    for k, c in enumerate(cells):
        c["cell_id"] = k
    return cells


def _names(config: MarrowSimConfig, cells: list[dict]) -> tuple[list[str], list[str]]:
    n_slides = max(c["slide"] for c in cells) + 1
    n_regions = max(c["region"] for c in cells) + 1
    slides = [f"slide{s + 1:02d}" for s in range(n_slides)]
    regions = [f"{slides[r % n_slides]}_r{r // n_slides + 1:03d}" for r in range(n_regions)]
    return slides, regions


# -------------------------------------------------------------------------------- scene


def _ring_position(rng: np.random.Generator, near: float, far: float) -> tuple[float, float]:
    d = rng.uniform(near, far)
    a = rng.uniform(0, 2 * np.pi)
    return d * np.sin(a), d * np.cos(a)


def render_crop(
    cell: dict[str, Any], region: Region, config: MarrowSimConfig
) -> tuple[np.ndarray, dict[str, Any]]:
    """Render the crop of one planned cell.

    Parameters
    ----------
    cell : dict
        A row of :func:`plan_cells`.
    region : Region
        Its region (and slide).
    config : MarrowSimConfig
        Simulation parameters.

    Returns
    -------
    rgb : numpy.ndarray
        ``(S, S, 3)`` uint8 crop.
    info : dict
        ``params`` (:class:`~.marrow_cells.CellParams`), ``drawn``
        (:class:`~.marrow_cells.DrawnCell` of the centre cell).
    """
    s, px = config.size, config.pixel_size_um
    shape = (s, s)
    rng = np.random.default_rng([config.seed, 2, cell["key"]])
    params = cell_params(cell["class"], cell["maturation"], rng, config.maturation_jitter,
                         config.asynchrony)
    centre = (s / 2 + rng.normal(0, 0.6), s / 2 + rng.normal(0, 0.6))
    drawn = draw_cell(params, shape, centre, px, rng)
    conc = {k: v.copy() for k, v in drawn.conc.items()}
    radius = params.diameter_um / 2 / px
    half = s / 2

    def crosses_border(cy: float, cx: float, r: float) -> bool:
        return min(cy, cx, s - cy, s - cx) < r - 1.5

    # a neighbouring nucleated cell, only its edge inside the crop
    if rng.random() < config.neighbour_rate:
        names = list(CELL_TYPES)
        w = np.array([CELL_TYPES[c][3] for c in names])
        other = names[int(rng.choice(len(names), p=w / w.sum()))]
        lin, lo, hi, _ = CELL_TYPES[other]
        p2 = cell_params(other, rng.uniform(lo, hi), rng, config.maturation_jitter,
                         config.asynchrony)
        r2 = p2.diameter_um / 2 / px
        for _ in range(20):
            dy, dx = _ring_position(rng, radius + r2 + 1.0 / px, half * 1.4 + 0.6 * r2)
            cy, cx = centre[0] + dy, centre[1] + dx
            if crosses_border(cy, cx, r2) and min(cy, cx, s - cy, s - cx) > -0.85 * r2:
                nb = draw_cell(p2, shape, (cy, cx), px, rng)
                for k in STAINS:
                    conc[k] += nb.conc[k]
                break
    # erythrocytes around, each cut by the crop border and clear of the centre cell
    for _ in range(int(rng.poisson(config.erythrocytes))):
        for _ in range(20):
            r_rbc = 3.9 / px
            dy, dx = _ring_position(rng, radius + r_rbc + 0.8 / px, half * 1.45)
            cy, cx = centre[0] + dy, centre[1] + dx
            if crosses_border(cy, cx, r_rbc):
                hb, _ = draw_erythrocyte(shape, (cy, cx), px, rng)
                conc["hb"] += hb
                break

    rgb = render_stained(conc, region, px, rng)
    return rgb, {"params": params, "drawn": drawn}


def render_stained(conc: dict[str, np.ndarray], region: Any, px: float,
                   rng: np.random.Generator) -> np.ndarray:
    """Render stain concentrations as a slide region's brightfield RGB image.

    Beer-Lambert optical density of each stain (the slide's stain vectors) over an uneven
    plasma film, the region's illumination gain and tilt, its blur and its noise.

    Parameters
    ----------
    conc : dict of str to numpy.ndarray
        Concentration map per stain (:data:`STAINS`), all of one square shape.
    region : Region
        The slide region (stains, gain, tilt, blur, noise).
    px : float
        Pixel size, micrometres.
    rng : numpy.random.Generator
        Random state (the film, then the noise).

    Returns
    -------
    numpy.ndarray
        ``(S, S, 3)`` uint8.
    """
    slide = region.slide
    shape = next(iter(conc.values())).shape
    s = shape[0]
    od = np.zeros((*shape, 3), np.float32)
    film = ndimage.gaussian_filter(rng.standard_normal(shape), 3.0 / px)
    film = 1 + 0.15 * film / max(float(film.std()), 1e-6)  # uneven plasma film
    od += (slide.background * film)[..., None] * slide.od["pink"].astype(np.float32)
    for k in STAINS:
        od += conc[k][..., None] * slide.od[k].astype(np.float32)
    yy, xx = np.mgrid[0:s, 0:s] / s - 0.5
    light = region.gain[None, None, :] * (1 + region.tilt[0] * yy + region.tilt[1] * xx)[..., None]
    img = 255.0 * light * np.exp(-od)
    img = ndimage.gaussian_filter(img, (region.blur_px, region.blur_px, 0))
    img += rng.normal(0, region.noise, size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------- files


def _prepare_out_dir(out_dir: Path) -> Path:
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "exists and is not a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".hemalens-synth-", dir=out_dir))
    except OSError as err:
        raise InputError(out_dir, f"cannot write the simulation here: {err.strerror}") from err


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _write_h5(path: Path, patches: np.ndarray, truth: list[dict], groups: dict) -> None:
    # fixed layout and no timestamps: equal inputs give equal bytes
    with h5py.File(path, "w", libver=("v110", "v110"), track_order=True) as f:
        f.create_dataset("patches", data=patches, chunks=(1, *patches.shape[1:]),
                         compression="gzip", compression_opts=4, shuffle=True,
                         track_times=False)
        g = _group(f, "truth")
        for col in TRUTH_COLUMNS:
            values = [row[col] for row in truth]
            if col in _TEXT:
                data = np.array(values, dtype=h5py.string_dtype("utf-8"))
            else:
                data = np.array([float(v) for v in values], _NUMERIC.get(col, "float32"))
            g.create_dataset(col, data=data, track_times=False)
        # views into /patches ("." = this file), so the manifest can name them
        source = h5py.VirtualSource(".", "patches", shape=patches.shape, dtype=np.uint8)
        top = _group(f, "groups")
        for (region, cls), (a, b) in groups.items():
            parent = top[region] if region in top else _group(top, region)
            layout = h5py.VirtualLayout(shape=(b - a, *patches.shape[1:]), dtype=np.uint8)
            layout[:] = source[a:b]
            dcpl = layout._get_dcpl(".")
            dcpl.set_obj_track_times(False)
            space = h5py.h5s.create_simple(layout.shape)
            tid = h5py.h5t.py_create(np.dtype(np.uint8), logical=1)
            h5py.h5d.create(parent.id, cls.encode(), tid, space, dcpl=dcpl).close()


def _group(parent: h5py.Group, name: str) -> h5py.Group:
    """Create a group without modification times (byte-stable files)."""
    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    gcpl.set_obj_track_times(False)
    h5py.h5g.create(parent.id, name.encode(), gcpl=gcpl).close()
    return parent[name]


def simulate_marrow(
    out_dir: str | Path,
    *,
    cells: int,
    seed: int,
    size: int = 96,
    fmt: str = "png",
    progress: Progress | None = None,
    config: MarrowSimConfig | None = None,
) -> dict[str, Any]:
    """Simulate stained bone-marrow cell crops with ground truth.

    Parameters
    ----------
    out_dir : str or Path
        Output folder, created when missing; files of the same names are replaced.
    cells : int
        Number of crops (>= 1); with >= 15 every class has at least one.
    seed : int
        Random seed; equal arguments give byte-identical files.
    size : int
        Crop side in px (>= 32); the field of view stays ``config.fov_um``.
    fmt : {"png", "h5"}
        One PNG per crop, or one HDF5 file.
    progress : Progress, optional
        Status and per-cell progress; cancellation raises
        :class:`~hemalens.engine.jobs.Cancelled` and leaves no new files.
    config : MarrowSimConfig, optional
        Further knobs; its ``cells``, ``seed``, ``size`` and ``fmt`` are overridden by
        the arguments.

    Returns
    -------
    dict
        JSON-ready ``{"out_dir", "cells", "classes": {name: n}, "slides", "regions",
        "pixel_size_um", "format", "truth", "manifest", "seconds"}``.

    Raises
    ------
    ValueError
        ``cells < 1``, ``size < 32``, an unknown ``fmt`` or another bad knob.
    InputError
        ``out_dir`` is a file or cannot be written.
    """
    start = time.perf_counter()
    base = config or MarrowSimConfig()
    config = MarrowSimConfig(**(asdict(base) | {"cells": int(cells), "seed": int(seed),
                                                 "size": int(size), "fmt": fmt}))
    config.validate()
    out = Path(out_dir)
    stage = _prepare_out_dir(out)
    try:
        summary = _simulate_into(stage, config, progress)
        for name in summary.pop("files"):
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(stage / name, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return {
        "out_dir": str(out.resolve()),
        **summary,
        "truth": str((out / "truth.csv").resolve()),
        "manifest": str((out / "manifest.csv").resolve()),
        "seconds": round(time.perf_counter() - start, 3),
    }


def _simulate_into(stage: Path, config: MarrowSimConfig, progress: Progress | None) -> dict:
    cells = plan_cells(config)
    slide_names, region_names = _names(config, cells)
    srng = np.random.default_rng([config.seed, 3])
    slides = [Slide.draw(n, srng, config.stain_variation) for n in slide_names]
    regions = [
        Region.draw(n, slides[r % len(slides)], srng, config)
        for r, n in enumerate(region_names)
    ]
    s, px = config.size, config.pixel_size_um
    h5 = config.fmt == "h5"
    if not h5:
        (stage / "crops").mkdir()
    patches = np.empty((len(cells), s, s, 3), np.uint8) if h5 else None
    truth: list[dict] = []
    if progress is not None:
        progress.set_status("simulating marrow crops")
        progress.set_progress(0, len(cells))
    for k, cell in enumerate(cells):
        checkpoint(progress)
        region = regions[cell["region"]]
        rgb, info = render_crop(cell, region, config)
        file = "marrow.h5" if h5 else f"crops/{k:06d}.png"
        if patches is not None:
            patches[k] = rgb
        else:
            cv2.imwrite(str(stage / file), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        p = info["params"]
        m = info["drawn"].cell
        ys, xs = np.nonzero(m > 0.5)
        truth.append({
            "cell_id": k,
            "file": file,
            "class": cell["class"],
            "lineage": cell["lineage"],
            "maturation": f"{cell['maturation']:.4f}",
            "apparent_maturation": f"{p.t_apparent:.4f}",
            "slide": slide_names[cell["slide"]],
            "region": region_names[cell["region"]],
            "diameter_um": f"{np.sqrt(4 * (m > 0.5).sum() / np.pi) * px:.3f}",
            "nc_ratio": f"{info['drawn'].nucleus.sum() / max(m.sum(), 1e-6):.3f}",
            "nucleus_shape": f"{p.props['shape']:.3f}",
            "lobes": p.lobes if p.props["shape"] > 0.62 else 1,
            "x": f"{xs.mean() + 0.5:.2f}" if xs.size else "nan",
            "y": f"{ys.mean() + 0.5:.2f}" if ys.size else "nan",
        })
        if progress is not None:
            progress.set_progress(k + 1, len(cells))
    checkpoint(progress)
    common = {"modality": "rgb", "pixel_size_um": f"{px:g}"}
    manifest: list[dict] = []
    groups: dict[tuple[str, str], tuple[int, int]] = {}
    for row in truth:
        key = (row["region"], row["class"])
        a, _ = groups.get(key, (row["cell_id"], 0))
        groups[key] = (a, row["cell_id"] + 1)
    if h5:
        assert patches is not None  # allocated above whenever h5 is set
        _write_h5(stage / "marrow.h5", patches, truth, groups)
        for (region, cls), _ in groups.items():
            slide = region.split("_")[0]
            manifest.append({"file": f"marrow.h5:/groups/{region}/{cls}", "given_label": cls,
                             "donor": slide, "run": region, **common})
    else:
        for row in truth:
            manifest.append({"file": row["file"], "given_label": row["class"],
                             "donor": row["slide"], "run": row["region"], **common})
    _write_csv(stage / "manifest.csv", MANIFEST_COLUMNS, manifest)
    _write_csv(stage / "truth.csv", TRUTH_COLUMNS, truth)
    counts: dict[str, int] = {}
    for row in truth:
        counts[row["class"]] = counts.get(row["class"], 0) + 1
    return {
        "cells": len(truth),
        "classes": {c: counts[c] for c in CLASSES if c in counts},
        "slides": len(slide_names),
        "regions": len(region_names),
        "pixel_size_um": px,
        "format": config.fmt,
        "files": ["marrow.h5" if h5 else "crops", "manifest.csv", "truth.csv"],
    }


# ------------------------------------------------------------------------------ project


def _read_truth(sim_dir: Path) -> list[dict[str, str]]:
    path = sim_dir / "truth.csv"
    if not path.is_file():
        raise InputError(path, "no truth.csv: not a marrow simulation folder")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    need = ("cell_id", "file", "class", "slide", "region", "diameter_um", "x", "y", "maturation")
    missing = [c for c in need if rows and c not in rows[0]]
    if not rows or missing:
        raise InputError(path, f"not a marrow truth table (missing {missing or 'rows'})")
    return rows


def import_marrow_patches(
    sim_dir: str | Path, project_path: str | Path, *, progress: Progress | None = None
) -> dict[str, Any]:
    """Write a project whose cells are the simulated crops, without segmentation.

    Each crop is one cell: its patch is the crop, ``qc_pass`` is True, ``given_label``
    and ``original_label`` are the true class. There is one input row per *region*
    (``file`` = the crops folder or ``marrow.h5``, ``donor`` = slide, ``run`` = region,
    ``n_frames`` = its crops, ``given_label`` empty since classes are mixed); a cell's
    region is ``project.inputs["run"][project.cells["input_id"]]`` and its slide
    ``inputs["donor"][...]``. Cells keep the simulation's order, so project
    ``cell_id`` == truth ``cell_id``; ``frame`` is the crop's index within its region.
    ``x``/``y``/``diameter_um``/``area_um2`` come from the drawn cell mask (truth, not
    measured); the extra column ``maturation`` holds the true maturation ``t``.

    Parameters
    ----------
    sim_dir : str or Path
        Folder written by :func:`simulate_marrow`.
    project_path : str or Path
        Destination ``.h5`` (written atomically).
    progress : Progress, optional
        Status and per-region progress; cancellation raises
        :class:`~hemalens.engine.jobs.Cancelled` and writes nothing.

    Returns
    -------
    dict
        ``{"project", "cells", "inputs", "classes": [names], "seconds"}``.

    Raises
    ------
    InputError
        The folder has no usable ``truth.csv`` or a crop cannot be read.
    """
    start = time.perf_counter()
    sim = Path(sim_dir)
    rows = _read_truth(sim)
    h5_path = sim / "marrow.h5"
    from_h5 = rows[0]["file"] == "marrow.h5"
    first = _load_crop(sim, rows[0], None) if not from_h5 else None
    h5 = h5py.File(h5_path, "r") if from_h5 else None
    try:
        if h5 is not None:
            shape = tuple(h5["patches"].shape[1:])
        else:
            assert first is not None  # read above when the crops are PNGs
            shape = first.shape
        regions: dict[str, list[dict[str, str]]] = {}
        for row in rows:
            regions.setdefault(row["region"], []).append(row)
        present = {row["class"] for row in rows}
        classes = [c for c in CLASSES if c in present] + sorted(present - set(CLASSES))
        px = MarrowSimConfig().fov_um / shape[0]
        if progress is not None:
            progress.set_status("importing marrow crops")
            progress.set_progress(0, len(regions))
        with ProjectWriter(project_path, patch_kind="rgb", patch_shape=shape, classes=classes,
                           meta={"source": "synth marrow", "sim_dir": str(sim.resolve())}) as w:
            for done, (region, members) in enumerate(regions.items(), start=1):
                checkpoint(progress)
                source = h5_path if h5 is not None else sim / "crops"
                input_id = w.add_input({
                    "file": source.name, "path": str(source.resolve()), "modality": "rgb",
                    "pixel_size_um": px, "donor": members[0]["slide"], "run": region,
                    "n_frames": len(members), "status": "ok",
                })
                ids = np.array([int(r["cell_id"]) for r in members])
                if h5 is not None:
                    images = h5["patches"][ids[0] : ids[-1] + 1]
                    if len(images) != len(ids) or not np.array_equal(np.diff(ids), 1):
                        images = h5["patches"][np.sort(ids)]
                else:
                    images = np.stack([_load_crop(sim, r, shape) for r in members])
                n = len(members)
                codes = np.array([classes.index(r["class"]) for r in members], np.int16)
                diam = np.array([float(r["diameter_um"]) for r in members], np.float32)
                w.append({
                    "input_id": np.full(n, input_id, np.int32),
                    "frame": np.arange(n, dtype=np.int32),
                    "object_id": np.zeros(n, np.int32),
                    "x": np.array([float(r["x"]) for r in members], np.float32),
                    "y": np.array([float(r["y"]) for r in members], np.float32),
                    "bbox_w": np.full(n, shape[1], np.int32),
                    "bbox_h": np.full(n, shape[0], np.int32),
                    "diameter_um": diam,
                    "area_um2": (np.pi * diam**2 / 4).astype(np.float32),
                    "qc_pass": np.ones(n, bool),
                    "given_label": codes,
                    "original_label": codes,
                    "maturation": np.array([float(r["maturation"]) for r in members], np.float32),
                }, images)
                if progress is not None:
                    progress.set_progress(done, len(regions))
            n_cells = w.n_cells
        final = w.path
    finally:
        if h5 is not None:
            h5.close()
    return {
        "project": str(Path(final).resolve()),
        "cells": int(n_cells),
        "inputs": len(regions),
        "classes": classes,
        "seconds": round(time.perf_counter() - start, 3),
    }


def _load_crop(sim: Path, row: dict[str, str], shape: tuple[int, ...] | None) -> np.ndarray:
    path = sim / row["file"]
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(path, "cannot read the crop (missing or not an image)")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if shape is not None and rgb.shape != shape:
        raise InputError(path, f"crop of shape {rgb.shape}, expected {shape}")
    return rgb
