"""Simulated QPI acquisitions of isolated leukocyte suspensions, with ground truth.

Frames come in runs as in the lab: each run is one donor and one immunomagnetically
isolated class; runs cycle over classes x donors and share the frames evenly. Every run has
its own stationary background (a median of its frames recovers it) and per-frame noise.
Written files (all paths in the CSVs relative to ``out_dir``):

- ``runRR_phase.tif``: float32 phase stack (n, height, width) in radians;
- with ``holograms=True``: ``runRR_holo.tif`` (uint16 off-axis holograms of the same frames)
  and ``runRR_holo_bg.tif`` (uint16 empty-field hologram of the run);
- ``manifest.csv``: one row per data file (phase and hologram rows);
- ``truth.csv``: one row per object. ``x``, ``y`` are the centroid (x = column, y = row, frame
  px) of the object's support, the pixels where its own phase exceeds 0.1 rad
  (:data:`~hemalens.engine.synth.cells.SUPPORT_RAD`), restricted to the frame; unweighted,
  so it compares with a segmentation mask centroid. ``touches_border`` is True when any of
  that support lies outside the frame or on its edge rows/columns.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import tifffile

from hemalens.engine.errors import InputError
from hemalens.engine.jobs import Progress, checkpoint
from hemalens.engine.synth import optics
from hemalens.engine.synth.background import frame_noise, stationary_background
from hemalens.engine.synth.cells import (
    LEUKOCYTES,
    SUPPORT_RAD,
    DrawnObject,
    draw_aggregate,
    draw_debris,
    draw_defocused,
    draw_erythrocyte,
    draw_leukocyte,
    draw_thrombocyte,
)

MANIFEST_COLUMNS = (
    "file",
    "modality",
    "given_label",
    "donor",
    "run",
    "pixel_size_um",
    "wavelength_nm",
    "background_file",
)
TRUTH_COLUMNS = (
    "file",
    "frame",
    "object_id",
    "x",
    "y",
    "kind",
    "true_class",
    "given_label",
    "diameter_um",
    "in_focus",
    "touches_border",
    "donor",
    "run",
)
#: Per-object rates of the non-leukocyte and abnormal objects; the rest are in-focus leukocytes.
OBJECT_RATES = {
    "erythrocyte": 0.06,
    "thrombocyte": 0.05,
    "aggregate": 0.03,
    "defocused": 0.05,
    "debris": 0.04,
}
#: Share of objects deliberately placed across a frame edge.
BORDER_RATE = 0.05
#: Minimum gap between the supports of neighbouring objects, micrometres.
GAP_UM = 1.0


@dataclass(frozen=True)
class QPISimConfig:
    """Parameters of a simulated acquisition (see :func:`simulate_qpi`)."""

    frames: int = 300
    seed: int = 0
    holograms: bool = False
    pixel_size_um: float = 0.3
    label_noise: float = 0.03
    donors: int = 4
    wavelength_nm: float = 528.0
    width: int = 512  # frames are 382 rows x 512 columns (numpy shape (382, 512))
    height: int = 382
    cells_per_frame: float = 10.0  # mean number of objects per frame

    def validate(self) -> None:
        """Raise ValueError naming the first unusable parameter."""
        checks = [
            (self.frames >= 1, "frames must be >= 1"),
            (self.donors >= 1, "donors must be >= 1"),
            (self.width >= 32 and self.height >= 32, "width and height must be >= 32 px"),
            (self.pixel_size_um > 0, "pixel_size_um must be > 0"),
            (self.wavelength_nm > 0, "wavelength_nm must be > 0"),
            (0.0 <= self.label_noise <= 1.0, "label_noise must be within 0..1"),
            (self.cells_per_frame >= 0, "cells_per_frame must be >= 0"),
        ]
        for ok, reason in checks:
            if not ok:
                raise ValueError(reason)


@dataclass(frozen=True)
class Run:
    """One acquisition run: a donor and an isolated class over a range of frames."""

    index: int
    name: str
    donor: str
    label: str
    n_frames: int


def plan_runs(config: QPISimConfig) -> list[Run]:
    """Split the frames evenly over runs cycling over classes x donors.

    Parameters
    ----------
    config : QPISimConfig
        The simulation parameters.

    Returns
    -------
    list of Run
        ``min(4 * donors, frames)`` runs; run ``r`` has class ``LEUKOCYTES[r % 4]`` and donor
        ``r // 4``.
    """
    n_runs = min(len(LEUKOCYTES) * config.donors, config.frames)
    width = max(2, len(str(n_runs)))
    dwidth = max(2, len(str(config.donors)))
    sizes = [len(a) for a in np.array_split(np.arange(config.frames), n_runs)]
    return [
        Run(
            r,
            f"run{r + 1:0{width}d}",
            f"donor{r // len(LEUKOCYTES) + 1:0{dwidth}d}",
            LEUKOCYTES[r % len(LEUKOCYTES)],
            sizes[r],
        )
        for r in range(n_runs)
    ]


def _true_class(label: str, noise: float, rng: np.random.Generator) -> str:
    """Return the run's class, or with probability ``noise`` another class (a contaminant)."""
    if rng.random() < noise:
        others = [c for c in LEUKOCYTES if c != label]
        return others[int(rng.integers(0, len(others)))]
    return label


@dataclass
class _Placed:
    drawn: DrawnObject
    kind: str
    in_focus: bool
    top: int
    left: int
    cy: float  # canvas centre in frame px
    cx: float
    radius: float  # bounding radius in px, incl. the gap


def _draw_random_object(
    label: str,
    config: QPISimConfig,
    factors: tuple[float, float],
    rng: np.random.Generator,
) -> tuple[DrawnObject, str, bool]:
    """Draw one object of a kind chosen at the configured rates; return (object, kind, focus)."""
    px, noise = config.pixel_size_um, config.label_noise
    kinds = list(OBJECT_RATES)
    p = np.array([OBJECT_RATES[k] for k in kinds] + [1.0 - sum(OBJECT_RATES.values())])
    choice = (kinds + ["leukocyte"])[int(rng.choice(len(p), p=p))]
    if choice == "erythrocyte":
        return draw_erythrocyte(rng, px), "erythrocyte", True
    if choice == "thrombocyte":
        return draw_thrombocyte(rng, px), "thrombocyte", True
    if choice == "debris":
        return draw_debris(rng, px), "debris", True
    if choice == "aggregate":
        n = 2 if rng.random() < 0.75 else 3
        members = [_true_class(label, noise, rng) for _ in range(n)]
        return draw_aggregate(members, rng, px, *factors), "aggregate", True
    cls = _true_class(label, noise, rng)
    if choice == "defocused":
        dz = rng.uniform(4.0, 15.0) * rng.choice([-1.0, 1.0])
        drawn, _ = draw_defocused(cls, dz, rng, px, config.wavelength_nm, *factors)
        return drawn, cls, False
    return draw_leukocyte(cls, rng, px, *factors), cls, True


def _place(
    drawn: DrawnObject,
    placed: list[_Placed],
    shape: tuple[int, int],
    gap_px: float,
    rng: np.random.Generator,
    tries: int = 40,
) -> tuple[int, int, float, float, float] | None:
    """Find a free spot for ``drawn``; return (top, left, cy, cx, radius) or None."""
    h, w = shape
    ph, pw = drawn.phase.shape
    cy0, cx0 = ph // 2, pw // 2
    ys, xs = np.nonzero(np.abs(drawn.phase) > 0.05)
    if ys.size == 0:
        return None
    reach = float(np.sqrt(((ys - cy0) ** 2 + (xs - cx0) ** 2).max())) + 0.5
    border = rng.random() < BORDER_RATE
    for _ in range(tries):
        if border:
            # centre inside the frame but closer to an edge than the object's extent
            d = rng.uniform(0.0, 0.85 * reach)
            side = int(rng.choice(4, p=np.array([w, w, h, h]) / (2 * (w + h))))
            along = rng.uniform(0, w - 1 if side < 2 else h - 1)
            cy, cx = {0: (d, along), 1: (h - 1 - d, along), 2: (along, d), 3: (along, w - 1 - d)}[
                side
            ]
        else:
            lo_y, hi_y = reach + 1, h - 2 - reach
            lo_x, hi_x = reach + 1, w - 2 - reach
            if hi_y <= lo_y or hi_x <= lo_x:
                return None
            cy, cx = rng.uniform(lo_y, hi_y), rng.uniform(lo_x, hi_x)
        top, left = int(round(cy)) - cy0, int(round(cx)) - cx0
        cy, cx = top + cy0, left + cx0
        if all(np.hypot(cy - o.cy, cx - o.cx) >= reach + o.radius + gap_px for o in placed):
            return top, left, float(cy), float(cx), reach
    return None


def _slices(top: int, left: int, part: tuple[int, int], shape: tuple[int, int]):
    """Frame and canvas slices of the overlap of a canvas at (top, left) with the frame."""
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + part[0], shape[0]), min(left + part[1], shape[1])
    if y1 <= y0 or x1 <= x0:
        return None
    return (slice(y0, y1), slice(x0, x1)), (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))


def _truth_geometry(o: _Placed, shape: tuple[int, int]) -> tuple[float, float, bool]:
    """Centroid (x, y) of the object's visible support and whether it touches the border."""
    h, w = shape
    ys, xs = np.nonzero(o.drawn.phase > SUPPORT_RAD)
    ys, xs = ys + o.top, xs + o.left
    touches = bool(
        ys.size and (ys.min() <= 0 or xs.min() <= 0 or ys.max() >= h - 1 or xs.max() >= w - 1)
    )
    inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    if not inside.any():  # too faint to threshold: fall back to the drawing centre
        return o.cx, o.cy, touches
    return float(xs[inside].mean()), float(ys[inside].mean()), touches


def render_frame(
    label: str,
    config: QPISimConfig,
    factors: tuple[float, float],
    rng: np.random.Generator,
) -> tuple[np.ndarray, list[_Placed]]:
    """Draw the objects of one frame on a zero background.

    Parameters
    ----------
    label : str
        The run's class (the class of most leukocytes).
    config : QPISimConfig
        Simulation parameters (frame size, pixel size, rates).
    factors : tuple of float
        The donor's (size, phase) factors.
    rng : numpy.random.Generator
        Source of the objects.

    Returns
    -------
    (numpy.ndarray, list)
        float32 object phase of shape (height, width) and the placed objects.
    """
    shape = (config.height, config.width)
    frame = np.zeros(shape, dtype=np.float32)
    placed: list[_Placed] = []
    gap_px = GAP_UM / config.pixel_size_um
    for _ in range(int(rng.poisson(config.cells_per_frame))):
        drawn, kind, in_focus = _draw_random_object(label, config, factors, rng)
        spot = _place(drawn, placed, shape, gap_px, rng)
        if spot is None:  # frame too crowded for this one: leave it out
            continue
        top, left, cy, cx, reach = spot
        sl = _slices(top, left, drawn.phase.shape, shape)
        if sl is None:
            continue
        frame[sl[0]] += drawn.phase[sl[1]]
        placed.append(_Placed(drawn, kind, in_focus, top, left, cy, cx, reach))
    return frame, placed


def _write_tiff(path: Path, data: np.ndarray, config: QPISimConfig, modality: str) -> None:
    unit = "rad" if modality == "phase" else "counts"
    metadata = {
        "pixel_size_um": config.pixel_size_um,
        "wavelength_nm": config.wavelength_nm,
        "modality": modality,
        "unit": unit,
    }
    # pixels per centimetre: the TIFF unit standard readers (ImageJ, Fiji) understand
    res = 1e4 / config.pixel_size_um
    tifffile.imwrite(
        path,
        data,
        photometric="minisblack",  # never read a 3- or 4-frame stack as RGB
        metadata=metadata,
        resolution=(res, res),
        resolutionunit="CENTIMETER",
    )


def _prepare_out_dir(out_dir: Path) -> Path:
    """Create ``out_dir`` if needed and return a fresh staging folder inside it."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "exists and is not a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".hemalens-synth-", dir=out_dir))
    except OSError as err:
        raise InputError(out_dir, f"cannot write the simulation here: {err.strerror}") from err


class _Instrument:
    """Fixed properties of the (simulated) holographic microscope."""

    def __init__(self, shape: tuple[int, int], rng: np.random.Generator):
        period = rng.uniform(3.6, 4.4)
        angle = rng.uniform(35.0, 55.0)
        self.carrier = optics.carrier_phase(shape, period, angle)
        self.reference_amplitude = rng.uniform(0.22, 0.32)  # fringe contrast ~0.4-0.55
        # brightest fringe at ~35000 counts: well inside uint16, no clipping
        self.counts_per_unit = 35000.0 / (1.0 + self.reference_amplitude) ** 2
        self.read_noise = 6.0
        self.offset = 100.0

    def hologram(self, phase: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        intensity = optics.hologram_intensity(phase, self.carrier, self.reference_amplitude)
        return optics.detect(intensity, rng, self.counts_per_unit, self.read_noise, self.offset)


def simulate_qpi(
    out_dir: str | Path, config: QPISimConfig, progress: Progress | None = None
) -> dict:
    """Simulate a QPI acquisition and write frames, ``manifest.csv`` and ``truth.csv``.

    Parameters
    ----------
    out_dir : str or Path
        Output folder, created when missing; existing files of the same names are replaced.
    config : QPISimConfig
        Simulation parameters; the output is byte-identical for equal configs.
    progress : Progress, optional
        Receives status and per-frame progress; cancellation raises
        :class:`~hemalens.engine.jobs.Cancelled` and leaves no new files behind.

    Returns
    -------
    dict
        JSON-able summary: ``out_dir``, ``frames``, ``runs``, ``objects``, ``leukocytes``
        (objects whose kind is a leukocyte class, defocused ones included), ``files``
        (written files relative to ``out_dir``), ``manifest``, ``truth`` (paths),
        ``seconds`` and ``config``.

    Raises
    ------
    InputError
        If ``out_dir`` is a file or cannot be written.
    ValueError
        If ``config`` holds an unusable value.
    """
    start = time.perf_counter()
    config.validate()
    out = Path(out_dir)
    stage = _prepare_out_dir(out)
    try:
        summary = _simulate_into(stage, config, progress)
        for name in summary["files"]:
            os.replace(stage / name, out / name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    summary.update(
        out_dir=str(out.resolve()),
        manifest=str((out / "manifest.csv").resolve()),
        truth=str((out / "truth.csv").resolve()),
        seconds=round(time.perf_counter() - start, 3),
        config=asdict(config),
    )
    return summary


def _seed_tree(config: QPISimConfig, n_runs: int) -> list[np.random.SeedSequence]:
    """Independent seeds: instrument, donors, then one per run (spawned once per call)."""
    return np.random.SeedSequence(config.seed).spawn(2 + n_runs)


def _run_generators(seq: np.random.SeedSequence) -> list[np.random.Generator]:
    """Return the generators of one run: background, objects, frame noise, hologram noise."""
    return [np.random.default_rng(s) for s in seq.spawn(4)]


def run_background(config: QPISimConfig, run: int) -> tuple[np.ndarray, float]:
    """Recreate the stationary background of one run, as contained in its frames.

    Parameters
    ----------
    config : QPISimConfig
        The configuration the files were simulated with.
    run : int
        Run index (0-based; ``run01`` is 0).

    Returns
    -------
    (numpy.ndarray, float)
        float32 background phase (height, width) in radians and the standard deviation of
        the run's per-frame noise.
    """
    runs = plan_runs(config)
    bg_rng = _run_generators(_seed_tree(config, len(runs))[2 + run])[0]
    background = stationary_background((config.height, config.width), bg_rng)
    return background, float(bg_rng.uniform(0.02, 0.05))


def _simulate_into(stage: Path, config: QPISimConfig, progress: Progress | None) -> dict:
    runs = plan_runs(config)
    shape = (config.height, config.width)
    inst_seq, donor_seq, *run_seqs = _seed_tree(config, len(runs))
    instrument = _Instrument(shape, np.random.default_rng(inst_seq))
    donor_rng = np.random.default_rng(donor_seq)
    donor_factors = {
        d: (
            float(np.clip(donor_rng.normal(1.0, 0.03), 0.94, 1.06)),
            float(np.clip(donor_rng.normal(1.0, 0.04), 0.92, 1.08)),
        )
        for d in sorted({r.donor for r in runs})
    }
    files: list[str] = []
    manifest: list[dict] = []
    truth: list[dict] = []
    done, total = 0, config.frames
    if progress is not None:
        progress.set_status("simulating frames")
        progress.set_progress(0, total)
    for run, seq in zip(runs, run_seqs, strict=True):
        bg_rng, obj_rng, noise_rng, holo_rng = _run_generators(seq)
        background = stationary_background(shape, bg_rng)
        noise_sigma = bg_rng.uniform(0.02, 0.05)
        phase_name = f"{run.name}_phase.tif"
        stack = np.empty((run.n_frames, *shape), dtype=np.float32)
        holos = np.empty((run.n_frames, *shape), dtype=np.uint16) if config.holograms else None
        for i in range(run.n_frames):
            checkpoint(progress)
            objects, placed = render_frame(run.label, config, donor_factors[run.donor], obj_rng)
            stack[i] = background + frame_noise(shape, noise_sigma, noise_rng) + objects
            if holos is not None:
                holos[i] = instrument.hologram(stack[i], holo_rng)
            for k, o in enumerate(placed):
                x, y, touches = _truth_geometry(o, shape)
                truth.append(
                    {
                        "file": phase_name,
                        "frame": i,
                        "object_id": k,
                        "x": f"{x:.3f}",
                        "y": f"{y:.3f}",
                        "kind": o.kind,
                        "true_class": o.drawn.true_class,
                        "given_label": run.label,
                        "diameter_um": f"{o.drawn.diameter_um:.3f}",
                        "in_focus": str(o.in_focus),
                        "touches_border": str(touches),
                        "donor": run.donor,
                        "run": run.name,
                    }
                )
            done += 1
            if progress is not None:
                progress.set_progress(done, total)
        _write_tiff(stage / phase_name, stack, config, "phase")
        files.append(phase_name)
        common = {
            "given_label": run.label,
            "donor": run.donor,
            "run": run.name,
            "pixel_size_um": f"{config.pixel_size_um:g}",
            "wavelength_nm": f"{config.wavelength_nm:g}",
        }
        manifest.append({"file": phase_name, "modality": "phase", **common, "background_file": ""})
        if holos is not None:
            holo_name, bg_name = f"{run.name}_holo.tif", f"{run.name}_holo_bg.tif"
            empty = background + frame_noise(shape, noise_sigma, noise_rng)
            _write_tiff(stage / holo_name, holos, config, "hologram")
            _write_tiff(stage / bg_name, instrument.hologram(empty, holo_rng), config, "hologram")
            files += [holo_name, bg_name]
            manifest.append(
                {"file": holo_name, "modality": "hologram", **common, "background_file": bg_name}
            )
    checkpoint(progress)
    _write_csv(stage / "manifest.csv", MANIFEST_COLUMNS, manifest)
    _write_csv(stage / "truth.csv", TRUTH_COLUMNS, truth)
    files += ["manifest.csv", "truth.csv"]
    return {
        "frames": config.frames,
        "runs": len(runs),
        "objects": len(truth),
        "leukocytes": sum(row["kind"] in LEUKOCYTES for row in truth),
        "files": files,
    }


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
