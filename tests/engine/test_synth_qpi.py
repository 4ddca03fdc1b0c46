"""Tests of the QPI simulator (engine/synth): files, ground truth, physics, determinism."""

from __future__ import annotations

import ast
import csv
import threading
import warnings
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from scipy import ndimage
from skimage import measure

from hemalens.engine.errors import InputError
from hemalens.engine.jobs import CallbackProgress, Cancelled
from hemalens.engine.synth import (
    LEUKOCYTES,
    MANIFEST_COLUMNS,
    TRUTH_COLUMNS,
    QPISimConfig,
    plan_runs,
    simulate_qpi,
)
from hemalens.engine.synth.cells import (
    CLASS_MODELS,
    draw_aggregate,
    draw_debris,
    draw_defocused,
    draw_erythrocyte,
    draw_leukocyte,
    draw_thrombocyte,
)
from hemalens.engine.synth.qpi import run_background

SYNTH_DIR = Path(__file__).resolve().parents[2] / "engine" / "synth"
PX = 0.3

# small frames keep the whole file fast; 8 runs (4 classes x 2 donors) of 4 frames
SMALL = QPISimConfig(
    frames=32, seed=7, holograms=True, donors=2, width=256, height=192, cells_per_frame=5.0
)


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("sim")
    return out, simulate_qpi(out, SMALL)


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> tuple[Path, list[dict]]:
    """A larger population (~1500 objects) for rates; label noise raised to 10 %."""
    out = tmp_path_factory.mktemp("many")
    cfg = QPISimConfig(
        frames=128, seed=3, donors=2, width=256, height=192, cells_per_frame=12, label_noise=0.1
    )
    simulate_qpi(out, cfg)
    return out, read_csv(out / "truth.csv")[1]


def equal_area_diameter(mask: np.ndarray) -> float:
    return float(np.sqrt(4.0 * np.count_nonzero(mask) / np.pi) * PX)


def circularity(phase: np.ndarray, level: float = 0.1) -> float:
    """4 pi A / L^2 of the largest sub-pixel iso-contour (pixel chains overestimate L)."""
    contour = max(measure.find_contours(np.pad(phase, 1), level), key=len)
    y, x = contour[:, 0], contour[:, 1]
    area = 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
    length = np.sum(np.hypot(np.diff(x), np.diff(y)))
    return float(4 * np.pi * area / length**2)


def support(phase: np.ndarray, level: float = 0.1) -> np.ndarray:
    """Thresholded, hole-filled support of an object canvas."""
    return ndimage.binary_fill_holes(phase > level)


# --- the import rule -------------------------------------------------------------------------


def test_synth_imports_no_reader_segmentation_or_qt():
    banned = ("hemalens.engine.segment", "hemalens.engine.io", "PySide6", "pyqtgraph", "qtpy")
    files = sorted(SYNTH_DIR.glob("*.py"))
    assert {f.name for f in files} >= {"__init__.py", "qpi.py", "cells.py", "optics.py"}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path.name}: use absolute imports"
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                assert not name.startswith(banned), f"{path.name} imports {name}"


# --- files, columns, metadata ----------------------------------------------------------------


def test_summary_manifest_and_files(small):
    out, summary = small
    runs = plan_runs(SMALL)
    assert summary["frames"] == 32 and summary["runs"] == len(runs) == 8
    assert Path(summary["manifest"]) == (out / "manifest.csv").resolve()
    assert not list(out.glob(".hemalens-synth-*")), "staging folder left behind"
    header, rows = read_csv(out / "manifest.csv")
    assert header == list(MANIFEST_COLUMNS)
    assert len(rows) == 2 * len(runs)  # a phase row and a hologram row per run
    for run, phase_row, holo_row in zip(runs, rows[::2], rows[1::2], strict=True):
        assert phase_row["file"] == f"{run.name}_phase.tif"
        assert phase_row["modality"] == "phase" and phase_row["background_file"] == ""
        assert holo_row["file"] == f"{run.name}_holo.tif"
        assert holo_row["modality"] == "hologram"
        assert holo_row["background_file"] == f"{run.name}_holo_bg.tif"
        for row in (phase_row, holo_row):
            assert row["given_label"] == run.label and row["donor"] == run.donor
            assert row["run"] == run.name
            assert float(row["pixel_size_um"]) == 0.3 and float(row["wavelength_nm"]) == 528.0
            assert (out / row["file"]).is_file()
        with tifffile.TiffFile(out / phase_row["file"]) as tif:
            meta = tif.shaped_metadata[0]
            data = tif.asarray()
            xres = tif.pages[0].tags["XResolution"].value
        assert meta["pixel_size_um"] == 0.3 and meta["wavelength_nm"] == 528.0
        assert (meta["modality"], meta["unit"]) == ("phase", "rad")
        assert 1e4 / (xres[0] / xres[1]) == pytest.approx(0.3)  # px per cm
        assert data.dtype == np.float32 and data.shape == (run.n_frames, 192, 256)
        assert np.isfinite(data).all()
        with tifffile.TiffFile(out / holo_row["file"]) as tif:
            assert tif.shaped_metadata[0]["modality"] == "hologram"
            assert tif.shaped_metadata[0]["unit"] == "counts"
            holo = tif.asarray()
        assert holo.dtype == np.uint16 and holo.shape == data.shape
        bg = tifffile.imread(out / holo_row["background_file"])
        assert bg.dtype == np.uint16 and bg.shape == (192, 256)
        # quantised without clipping
        assert 0 < min(holo.min(), bg.min()) and max(holo.max(), bg.max()) < 65535
    files = set(summary["files"])
    assert files == {r["file"] for r in rows} | {r["background_file"] for r in rows[1::2]} | {
        "manifest.csv",
        "truth.csv",
    }


def test_truth_columns_and_values(small):
    out, summary = small
    header, rows = read_csv(out / "truth.csv")
    assert header == list(TRUTH_COLUMNS)
    assert len(rows) == summary["objects"] > 50
    assert summary["leukocytes"] == sum(r["kind"] in LEUKOCYTES for r in rows)
    runs = {r.name: r for r in plan_runs(SMALL)}
    kinds = set(LEUKOCYTES) | {"erythrocyte", "thrombocyte", "aggregate", "debris"}
    for r in rows:
        run = runs[r["run"]]
        assert r["file"] == f"{run.name}_phase.tif"
        assert (r["given_label"], r["donor"]) == (run.label, run.donor)
        assert 0 <= int(r["frame"]) < run.n_frames
        assert r["kind"] in kinds
        assert r["in_focus"] in ("True", "False") and r["touches_border"] in ("True", "False")
        x, y = float(r["x"]), float(r["y"])
        assert 0 <= x <= 255 and 0 <= y <= 191
        if r["kind"] in LEUKOCYTES:
            assert r["true_class"] == r["kind"]
        elif r["kind"] == "aggregate":
            assert r["true_class"] in (*LEUKOCYTES, "mixed")
        elif r["kind"] == "debris":
            assert r["true_class"] == ""
        else:
            assert r["true_class"] == r["kind"] and r["in_focus"] == "True"
    # object ids restart at 0 in every frame and count up
    per_frame: dict[tuple[str, str], list[int]] = {}
    for r in rows:
        per_frame.setdefault((r["file"], r["frame"]), []).append(int(r["object_id"]))
    assert all(ids == list(range(len(ids))) for ids in per_frame.values())


def test_truth_centroids_match_the_frames(small):
    """Centroids sit on the objects' phase; border flags agree with the geometry."""
    out, _ = small
    _, rows = read_csv(out / "truth.csv")
    checked = 0
    for r_index, run in enumerate(plan_runs(SMALL)[:2]):
        stack = tifffile.imread(out / f"{run.name}_phase.tif")
        bg, _ = run_background(SMALL, r_index)
        for i, frame in enumerate(stack):
            objects = cv2.GaussianBlur(frame - bg, (0, 0), 1.0) > 0.25
            labels, _ = ndimage.label(objects)
            for r in rows:
                if r["run"] != run.name or int(r["frame"]) != i or r["kind"] not in LEUKOCYTES:
                    continue
                x, y = float(r["x"]), float(r["y"])
                radius = float(r["diameter_um"]) / 2 / PX
                edge = min(x, y, 255 - x, 191 - y)
                if r["touches_border"] == "True":
                    assert edge <= 1.1 * radius + 1
                    continue
                assert edge >= 0.9 * radius
                if r["in_focus"] == "False":
                    continue
                lab = labels[int(round(y)), int(round(x))]
                assert lab > 0
                cy, cx = ndimage.center_of_mass(labels == lab)
                assert abs(cx - x) < 1.0 and abs(cy - y) < 1.0
                checked += 1
    assert checked >= 10


# --- acquisition structure -------------------------------------------------------------------


def test_runs_cycle_over_classes_and_donors():
    runs = plan_runs(QPISimConfig(frames=300, donors=4))
    assert len(runs) == 16
    assert sorted(r.n_frames for r in runs) == [18] * 4 + [19] * 12
    assert {(r.label, r.donor) for r in runs} == {
        (c, f"donor{d:02d}") for c in LEUKOCYTES for d in range(1, 5)
    }
    assert [r.label for r in runs[:4]] == list(LEUKOCYTES)
    assert [r.name for r in runs[:2]] == ["run01", "run02"]
    # fewer frames than runs: one frame per run, none empty
    assert [r.n_frames for r in plan_runs(QPISimConfig(frames=3))] == [1, 1, 1]


def test_rates_and_label_noise(many):
    _, rows = many
    n = len(rows)
    assert n > 1000

    def frac(pred) -> float:
        return sum(map(pred, rows)) / n

    def within(p_obs: float, p: float, count: int) -> bool:  # 4 binomial sigma
        return abs(p_obs - p) <= 4 * np.sqrt(p * (1 - p) / count) + 1e-9

    for kind, p in [("erythrocyte", 0.06), ("thrombocyte", 0.05), ("aggregate", 0.03),
                    ("debris", 0.04)]:  # fmt: skip
        assert within(frac(lambda r, k=kind: r["kind"] == k), p, n), kind
    assert within(frac(lambda r: r["in_focus"] == "False"), 0.05, n)
    assert 0.02 <= frac(lambda r: r["touches_border"] == "True") <= 0.10
    leuk = [r for r in rows if r["kind"] in LEUKOCYTES]
    contaminated = sum(r["kind"] != r["given_label"] for r in leuk) / len(leuk)
    assert within(contaminated, 0.1, len(leuk))
    # the in-focus diameters of each class fall in its range (donor factors included)
    ranges = {"lymphocyte": (5.6, 8.8), "monocyte": (8.4, 12.8), "neutrophil": (7.5, 10.7),
              "eosinophil": (7.5, 10.7)}  # fmt: skip
    for cls, (lo, hi) in ranges.items():
        d = np.array([float(r["diameter_um"]) for r in leuk if r["kind"] == cls])
        assert lo <= d.min() and d.max() <= hi, cls
    med = {c: np.median([float(r["diameter_um"]) for r in leuk if r["kind"] == c]) for c in ranges}
    assert med["lymphocyte"] < med["neutrophil"] < med["monocyte"]
    assert abs(med["neutrophil"] - med["eosinophil"]) < 0.6  # confusable on size
    eryth = [float(r["diameter_um"]) for r in rows if r["kind"] == "erythrocyte"]
    assert 7.0 < np.median(eryth) < 8.0


def test_no_label_noise_means_no_contaminants(tmp_path):
    cfg = QPISimConfig(frames=8, seed=1, width=192, height=128, cells_per_frame=8, label_noise=0)
    simulate_qpi(tmp_path, cfg)
    _, rows = read_csv(tmp_path / "truth.csv")
    leuk = [r for r in rows if r["kind"] in LEUKOCYTES]
    assert leuk and all(r["true_class"] == r["given_label"] for r in leuk)


# --- object models ---------------------------------------------------------------------------


def test_leukocyte_sizes_measured_from_phase():
    """Thresholding the canvas at 0.1 rad recovers the drawn diameter within the class range."""
    rng = np.random.default_rng(11)
    nominal = {"lymphocyte": (6.0, 8.2), "monocyte": (9.0, 12.0), "neutrophil": (8.0, 10.0),
               "eosinophil": (8.0, 10.0)}  # fmt: skip
    peaks = []
    for cls, (lo, hi) in nominal.items():
        measured = []
        for _ in range(40):
            cell = draw_leukocyte(cls, rng, PX)
            d = equal_area_diameter(support(cell.phase))
            assert d == pytest.approx(cell.diameter_um, rel=0.03)
            measured.append(d)
            peaks.append(float(cell.phase.max()))
            # sphere-like: the phase falls from the middle towards the rim
            assert cell.phase.max() > 3 * np.percentile(cell.phase[cell.phase > 0], 5)
        assert lo - 0.1 <= min(measured) and max(measured) <= hi + 0.1, cls
    peaks_arr = np.array(peaks)
    assert np.mean((peaks_arr >= 0.5) & (peaks_arr <= 4.0)) >= 0.95


def test_outlines_are_round_and_classes_differ_in_texture():
    rng = np.random.default_rng(5)
    circ = []
    fine_energy: dict[str, list[float]] = {c: [] for c in LEUKOCYTES}
    for cls in LEUKOCYTES:
        for _ in range(25):
            cell = draw_leukocyte(cls, rng, PX)
            mask = support(cell.phase).astype(np.uint8)
            circ.append(circularity(cell.phase))
            inner = cv2.erode(mask, np.ones((7, 7), np.uint8)) > 0
            hp = cell.phase - cv2.GaussianBlur(cell.phase, (0, 0), 1.5)
            fine_energy[cls].append(float(np.std(hp[inner]) / cell.peak_rad))
    assert np.mean(np.array(circ) >= 0.9) >= 0.95
    med = {c: np.median(v) for c, v in fine_energy.items()}
    # granulocytes are granular, lymphocytes smooth; granularity overlaps between neu and eos
    assert med["lymphocyte"] < 0.7 * min(med["neutrophil"], med["eosinophil"])
    assert max(fine_energy["neutrophil"]) > min(fine_energy["eosinophil"])


def test_other_objects():
    rng = np.random.default_rng(2)
    for _ in range(10):
        rbc = draw_erythrocyte(rng, PX)
        assert 0.3 <= rbc.phase.max() <= 0.8
        d = equal_area_diameter(support(rbc.phase, 0.02))
        assert 6.4 <= d <= 8.6
        c = np.array(rbc.phase.shape) // 2
        centre = rbc.phase[c[0] - 1 : c[0] + 2, c[1] - 1 : c[1] + 2].mean()
        assert centre < 0.6 * rbc.phase.max()  # biconcave: the rim outshines the centre
        plt = draw_thrombocyte(rng, PX)
        assert 2.0 <= plt.diameter_um <= 3.0 and plt.phase.max() <= 0.5
        deb = draw_debris(rng, PX)
        assert deb.true_class == "" and deb.diameter_um < 4.5 and deb.phase.max() <= 0.6


def test_aggregate_is_one_non_round_blob():
    rng = np.random.default_rng(4)
    for members in (["neutrophil", "neutrophil"], ["lymphocyte", "monocyte", "eosinophil"]):
        agg = draw_aggregate(members, rng, PX)
        mask = agg.phase > 0.1
        labels, n = ndimage.label(mask)
        assert n == 1
        assert circularity(agg.phase) < 0.85
        single = max(CLASS_MODELS[m].diameter_um[3] for m in members)
        assert agg.diameter_um > single
        assert agg.diameter_um == pytest.approx(equal_area_diameter(agg.phase > 0), rel=1e-6)
    assert agg.true_class == "mixed"
    assert draw_aggregate(["monocyte"] * 2, rng, PX).true_class == "monocyte"


@pytest.mark.parametrize("dz", [-12.0, 6.0])
def test_defocused_cell_is_blurred_with_rings(dz):
    rng = np.random.default_rng(8)
    blurred, sharp = draw_defocused("neutrophil", dz, rng, PX, 528.0)
    pad = (blurred.phase.shape[0] - sharp.phase.shape[0]) // 2
    focus = np.pad(sharp.phase, pad)
    assert blurred.diameter_um == sharp.diameter_um and blurred.true_class == "neutrophil"

    def grad(a: np.ndarray) -> float:
        gy, gx = np.gradient(a)
        return float(np.percentile(np.hypot(gx, gy), 99.5))

    assert grad(blurred.phase) < 0.8 * grad(focus)  # blurred
    # rings: the phase dips below zero around the cell and the radial profile oscillates
    c = np.array(blurred.phase.shape) / 2 - 0.5
    yy, xx = np.indices(blurred.phase.shape)
    r = np.hypot(yy - c[0], xx - c[1]).astype(int)
    profile = ndimage.mean(blurred.phase, r, index=np.arange(r.max()))
    edge = sharp.diameter_um / 2 / PX
    outside = profile[int(edge) - 2 : int(edge) + 25]
    assert outside.min() < -0.02
    signs = np.sign(outside[np.abs(outside) > 0.003])
    assert np.count_nonzero(np.diff(signs)) >= 2
    assert blurred.phase.min() < -0.03 and sharp.phase.min() >= -0.2
    # background is pinned at 0 rad and the cell stays where it was
    assert abs(np.median(blurred.phase[:3])) < 0.01
    cy, cx = ndimage.center_of_mass(blurred.phase > 0.3)
    assert abs(cy - c[0]) < 2 and abs(cx - c[1]) < 2


# --- background ------------------------------------------------------------------------------


def test_background_is_stationary_within_and_differs_between_runs(tmp_path):
    cfg = QPISimConfig(frames=40, seed=2, donors=1, width=192, height=128, cells_per_frame=3)
    simulate_qpi(tmp_path, cfg)
    stack = tifffile.imread(tmp_path / "run01_phase.tif")
    bg0, sigma = run_background(cfg, 0)
    bg1, _ = run_background(cfg, 1)
    assert 0.02 <= sigma <= 0.05
    median = np.median(stack, axis=0)
    diff = np.abs(median - bg0)
    assert np.median(diff) < 0.02 and np.percentile(diff, 90) < 0.05
    # the pattern is not flat: fringes/tilt/dust of a few tenths of a radian
    assert np.ptp(bg0) > 0.2
    # another run has another pattern and offset
    assert np.std((bg0 - bg0.mean()) - (bg1 - bg1.mean())) > 0.03
    # per-frame noise: right size, slightly correlated, fresh every frame
    residual = stack - bg0
    quiet = np.all(np.abs(residual) < 0.3, axis=0)
    noise = residual[:, quiet]
    robust_std = 1.4826 * np.median(np.abs(noise - np.median(noise)))  # faint objects aside
    assert robust_std == pytest.approx(sigma, rel=0.15)
    r0 = residual[0] * quiet
    lag1 = np.sum(r0[:, 1:] * r0[:, :-1]) / np.sum(r0 * r0)
    assert 0.2 < lag1 < 0.9
    assert np.std(residual[0][quiet] - residual[1][quiet]) > sigma


# --- holograms -------------------------------------------------------------------------------


def test_hologram_round_trip_with_qpretrieve(small):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # qpretrieve warns about optional FFT backends
        import qpretrieve
    from skimage.restoration import unwrap_phase

    out, _ = small
    holo = tifffile.imread(out / "run02_holo.tif")
    empty = tifffile.imread(out / "run02_holo_bg.tif")
    phase = tifffile.imread(out / "run02_phase.tif")
    bg, _ = run_background(SMALL, 1)
    # carrier: oblique fringes with a period of 3.5-4.5 px
    spec = np.abs(np.fft.fftshift(np.fft.fft2(empty - empty.mean())))
    spec[96 - 8 : 96 + 9, 128 - 8 : 128 + 9] = 0
    py, pxx = np.unravel_index(np.argmax(spec), spec.shape)
    fy, fx = (py - 96) / 192, (pxx - 128) / 256
    assert 3.5 <= 1 / np.hypot(fy, fx) <= 4.5
    assert 25 <= np.degrees(np.arctan2(abs(fy), abs(fx))) <= 65
    cell_errors = []
    for i in range(len(holo)):
        h = qpretrieve.OffAxisHologram(holo[i])
        h.run_pipeline(filter_name="disk", filter_size=1 / 2)
        b = qpretrieve.OffAxisHologram(empty)
        b.process_like(h)
        got = unwrap_phase(np.squeeze(h.phase - b.phase))
        want = phase[i] - bg
        smooth = cv2.GaussianBlur(want, (0, 0), 1.0)
        gy, gx = np.gradient(smooth)
        calm = np.hypot(gx, gy) < 0.1  # away from sharp edges
        calm[:10], calm[-10:], calm[:, :10], calm[:, -10:] = False, False, False, False
        background = calm & (np.abs(smooth) < 0.1)
        got -= 2 * np.pi * np.round(np.median(got[background] - want[background]) / (2 * np.pi))
        assert np.median(np.abs(got - want)[calm]) < 0.05
        # the retrieval low-passes (filter radius = half the carrier frequency): compare with
        # the truth lightly smoothed, which drops the pixel-scale part of the frame noise
        err = np.abs(got - smooth)
        assert np.percentile(err[background], 95) < 0.1
        assert np.percentile(err[calm], 90) < 0.1
        cell_errors.append(err[calm & (want > 1.0)])
    # inside cells: granules are finer than the retrieval resolves
    cell_err = np.concatenate(cell_errors)
    assert cell_err.size > 100 and np.median(cell_err) < 0.12


# --- determinism, errors, progress -----------------------------------------------------------


def test_deterministic_for_a_seed(small, tmp_path):
    out, summary = small
    again = simulate_qpi(tmp_path / "again", SMALL)
    assert again["files"] == summary["files"]
    for name in summary["files"]:
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes(), name
    other = replace(QPISimConfig(**again["config"]), seed=8, holograms=False)
    simulate_qpi(tmp_path / "other", other)
    a = tifffile.imread(out / "run01_phase.tif")
    b = tifffile.imread(tmp_path / "other" / "run01_phase.tif")
    assert a.shape == b.shape and not np.array_equal(a, b)
    assert (tmp_path / "other" / "truth.csv").read_bytes() != (out / "truth.csv").read_bytes()


def test_phase_frames_independent_of_holograms(small, tmp_path):
    out, _ = small
    cfg = replace(SMALL, holograms=False)
    summary = simulate_qpi(tmp_path, cfg)
    assert not any("holo" in f for f in summary["files"])
    for name in ("run01_phase.tif", "truth.csv"):
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes()


def test_unusable_out_dir_and_config(tmp_path):
    target = tmp_path / "taken.txt"
    target.write_text("not a folder")
    with pytest.raises(InputError) as err:
        simulate_qpi(target, QPISimConfig(frames=1))
    assert str(target) in str(err.value) and "not a folder" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(InputError):
        simulate_qpi(target / "below", QPISimConfig(frames=1))
    for bad in ({"frames": 0}, {"label_noise": 1.5}, {"pixel_size_um": 0.0}, {"width": 8}):
        with pytest.raises(ValueError):
            simulate_qpi(tmp_path / "x", QPISimConfig(**bad))


def test_progress_and_cancellation(tmp_path):
    seen: list[tuple[int, int | None]] = []
    cfg = QPISimConfig(frames=6, seed=0, width=128, height=96, cells_per_frame=2)
    simulate_qpi(tmp_path / "ok", cfg, CallbackProgress(on_progress=lambda *a: seen.append(a)))
    assert seen[0] == (0, 6) and seen[-1] == (6, 6) and len(seen) == 7

    stop = threading.Event()
    progress = CallbackProgress(on_progress=lambda d, t: d >= 3 and stop.set(), cancel_event=stop)
    target = tmp_path / "cancelled"
    with pytest.raises(Cancelled):
        simulate_qpi(target, cfg, progress)
    assert target.is_dir() and not any(target.iterdir())  # nothing half-written left behind
