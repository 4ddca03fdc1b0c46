"""Off-axis hologram retrieval on synthetic holograms of a known phase object."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from hemalens.engine.errors import MetadataError
from hemalens.engine.io import (
    HologramSettings,
    OffAxisRetriever,
    carrier_strength,
    detect_modality,
    make_spec,
    open_source,
    read_manifest,
    remove_tilt,
)
from hemalens.engine.io.sources import CARRIER_THRESHOLD

H, W = 128, 160
YY, XX = np.mgrid[0:H, 0:W].astype(np.float64)


def sphere(cy: float, cx: float, radius: float = 20.0, peak: float = 3.0) -> np.ndarray:
    r2 = ((YY - cy) ** 2 + (XX - cx) ** 2) / radius**2
    return peak * np.sqrt(np.clip(1.0 - r2, 0.0, None))


def hologram(phase: np.ndarray, *, seed: int, flip: bool = False) -> np.ndarray:
    """|R + O|^2 with a 4 px oblique carrier, 16-bit counts with read noise."""
    k = 2 * np.pi / 4.0
    direction = -1.0 if flip else 1.0
    carrier = k * (XX - direction * YY) / np.sqrt(2)
    intensity = 1.0 + 0.6**2 + 2 * 0.6 * np.cos(carrier + phase)
    rng = np.random.default_rng(seed)
    counts = intensity * 8000 + rng.normal(0, 40, phase.shape)
    return np.round(counts).astype(np.uint16)


# A stationary optical background shared by every exposure, and a tilt that only the
# sample exposures have (drift between the empty-field and the sample exposures).
STATIONARY = 0.4 * np.sin(2 * np.pi * YY / 90) + 0.01 * XX
TILT = 0.012 * XX - 0.008 * YY + 1.3
OBJECTS = [sphere(60, 70), sphere(50, 110, radius=16, peak=2.0)]


def _interior(obj: np.ndarray) -> np.ndarray:
    return ndi.binary_erosion(obj > 0.3, iterations=3)


def _background(obj: np.ndarray) -> np.ndarray:
    return ndi.binary_erosion(obj == 0, iterations=4)


@pytest.fixture
def holo_files(tmp_path):
    frames = np.stack([hologram(o + STATIONARY + TILT, seed=i) for i, o in enumerate(OBJECTS)])
    bg = hologram(STATIONARY, seed=99)
    meta = {"pixel_size_um": 0.3, "wavelength_nm": 528.0, "modality": "hologram", "unit": "counts"}
    p = tmp_path / "run01_holo.tif"
    tifffile.imwrite(p, frames, metadata=meta, photometric="minisblack")
    b = tmp_path / "run01_holo_bg.tif"
    tifffile.imwrite(b, bg, metadata=meta)
    return p, b


def test_retrieved_phase_matches_object_and_background_is_flat(holo_files):
    p, b = holo_files
    with open_source(make_spec(p, background=b)) as src:
        assert src.modality == "hologram" and src.n_frames == 2 and src.shape == (H, W)
        assert (src.pixel_size_um, src.wavelength_nm) == (0.3, 528.0)
        for i, obj in enumerate(OBJECTS):
            ph = src.read(i)
            assert ph.dtype == np.float32 and np.isfinite(ph).all()
            err = ph - obj
            inside, outside = _interior(obj), _background(obj)
            assert np.sqrt(np.mean(err[inside] ** 2)) < 0.1
            assert np.percentile(np.abs(err[inside]), 95) < 0.15
            assert abs(float(np.median(ph[outside]))) < 0.02  # tilt and offset removed
            assert np.sqrt(np.mean(ph[outside] ** 2)) < 0.05
            assert ph.max() == pytest.approx(obj.max(), abs=0.15)


def test_frames_are_independent_of_reading_order(holo_files):
    p, b = holo_files
    with open_source(make_spec(p, background=b)) as s1:
        late = s1.read(1)
    with open_source(make_spec(p, background=b)) as s2:
        s2.read(0)
        np.testing.assert_array_equal(s2.read(1), late)


def test_without_background_only_the_stationary_pattern_remains(tmp_path):
    obj = OBJECTS[0]
    p = tmp_path / "nobg.tif"
    tifffile.imwrite(p, hologram(obj + TILT, seed=3), metadata={"modality": "hologram"})
    with open_source(make_spec(p, pixel_size_um=0.3, wavelength_nm=528.0)) as src:
        ph = src.read(0)
    assert np.sqrt(np.mean((ph - obj)[_interior(obj)] ** 2)) < 0.15
    assert abs(float(np.median(ph[_background(obj)]))) < 0.03


def test_auto_sign_when_the_carrier_is_tilted_the_other_way(tmp_path):
    obj = OBJECTS[0]
    holo, bg = (
        hologram(obj + TILT, seed=4, flip=True),
        hologram(np.zeros_like(obj), seed=5, flip=True),
    )
    inside = _interior(obj)
    raw = OffAxisRetriever(bg, HologramSettings(auto_sign=False))(holo)
    assert np.median(raw[inside] + obj[inside]) == pytest.approx(0, abs=0.1)  # inverted
    p = tmp_path / "flip.npz"
    np.savez(p, data=holo, bg_data=bg)
    assert detect_modality(p) == "hologram"
    with open_source(make_spec(p, pixel_size_um=0.3, wavelength_nm=633.0)) as src:
        ph = src.read(0)  # bg_data in the npz is used as the empty field
    assert np.sqrt(np.mean((ph - obj)[inside] ** 2)) < 0.1


def test_modality_detection_from_carrier(tmp_path):
    holo = hologram(OBJECTS[0], seed=6)
    phase_counts = np.round((OBJECTS[0] + 0.5) * 1000).astype(np.uint16)
    assert carrier_strength(holo) > 5 * CARRIER_THRESHOLD
    assert carrier_strength(phase_counts) < CARRIER_THRESHOLD / 2
    a, b = tmp_path / "holo.tif", tmp_path / "counts.tif"
    tifffile.imwrite(a, holo)
    tifffile.imwrite(b, phase_counts)
    assert detect_modality(a) == "hologram"
    assert detect_modality(b) == "phase"
    with pytest.raises(MetadataError, match=r"counts\.tif: integer phase image needs a scale"):
        open_source(make_spec(b, pixel_size_um=0.3, wavelength_nm=528.0))


def test_remove_tilt_recovers_objects_on_a_plane():
    rng = np.random.default_rng(0)
    obj = OBJECTS[0] + OBJECTS[1]
    plane = 0.03 * XX - 0.02 * YY + 2.0
    got = remove_tilt(obj + plane + rng.normal(0, 0.02, obj.shape))
    assert got.dtype == np.float32
    assert np.abs(got - obj).max() < 0.12
    assert abs(float(np.median(got[obj == 0]))) < 0.005


def test_qlsi_without_pitch_term_is_metadata_error(tmp_path):
    p = tmp_path / "qlsi.h5"
    with h5py.File(p, "w") as f:
        f.attrs["file_format"] = "qpformat"
        f.attrs["imaging_modality"] = "quadriwave lateral shearing interferometry"
        for name in ("0", "reference"):
            d = f.create_dataset(name, data=np.zeros((64, 64), np.uint16))
            d.attrs["wavelength"] = 5.5e-7
            d.attrs["pixel size"] = 6.5e-8
    assert detect_modality(p) == "qlsi"
    with pytest.raises(MetadataError, match=r"qlsi\.h5: QLSI pitch term unknown"):
        open_source(make_spec(p))


def test_manifest_hologram_row_with_background(holo_files):
    p, b = holo_files
    manifest = p.parent / "manifest.csv"
    manifest.write_text(
        "file,modality,given_label,donor,run,pixel_size_um,wavelength_nm,background_file\n"
        f"{p.name},hologram,monocyte,D2,run01,0.3,528.0,{b.name}\n"
    )
    (spec,) = read_manifest(manifest)
    with open_source(spec) as src:
        ph = src.read(0)
    obj = OBJECTS[0]
    assert np.sqrt(np.mean((ph - obj)[_interior(obj)] ** 2)) < 0.1


def _wrap(phase):
    return np.angle(np.exp(1j * phase))


def test_local_unwrap_recovers_thick_cells_and_leaves_thin_ones_alone():
    from skimage.restoration import unwrap_phase

    from hemalens.engine.io.hologram import phase_jumps, unwrap_local

    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:200, 0:260].astype(float)
    phase = rng.normal(0, 0.05, yy.shape)
    for cy, cx, r, peak in ((50, 60, 18, 7.5), (140, 180, 15, 2.0), (60, 75, 12, 4.5),
                            (150, 40, 20, 9.0)):
        phase += peak * np.sqrt(np.clip(1 - ((yy - cy) ** 2 + (xx - cx) ** 2) / r**2, 0, None))
    wrapped = _wrap(phase)
    assert phase_jumps(wrapped).any()
    local = unwrap_local(wrapped)
    assert np.allclose(local, phase, atol=1e-9)  # background stays at its wrapped values
    whole = unwrap_phase(wrapped)
    whole -= 2 * np.pi * np.round(np.median(whole - wrapped) / (2 * np.pi))
    assert np.allclose(local, whole, atol=1e-9)
    thin = rng.normal(0, 0.05, yy.shape)
    assert np.array_equal(unwrap_local(thin), thin)  # nothing to unwrap: untouched


def test_local_unwrap_falls_back_to_the_whole_frame_for_a_wrapping_background():
    from skimage.restoration import unwrap_phase

    from hemalens.engine.io.hologram import unwrap_local

    yy, xx = np.mgrid[0:120, 0:160].astype(float)
    ramp = 0.4 * xx  # wraps every ~16 px across the frame
    wrapped = _wrap(ramp)
    assert np.array_equal(unwrap_local(wrapped), unwrap_phase(wrapped))
