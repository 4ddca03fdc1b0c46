"""Real interferograms from qpretrieve's test data (see ../shared/data/real/README.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from hemalens.engine.errors import MetadataError
from hemalens.engine.io import detect_modality, make_spec, open_source

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
REAL = SHARED / "data" / "real"

pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared (real recordings) absent")


def _objects(mask: np.ndarray, min_pixels: int) -> list[int]:
    labels, n = ndi.label(mask)
    sizes = np.bincount(labels.ravel())[1:]
    return [int(s) for s in sizes if s >= min_pixels]


def test_hl60_cell_hologram():
    path = REAL / "hologram_cell.npz"
    assert detect_modality(path) == "hologram"
    # the file records no pixel size: it must come from the user
    with pytest.raises(MetadataError, match="pixel size unknown: pass --pixel-size"):
        open_source(make_spec(path, wavelength_nm=633.0))
    spec = make_spec(path, pixel_size_um=0.14, wavelength_nm=633.0)
    with open_source(spec) as src:
        assert src.modality == "hologram" and src.n_frames == 1 and src.shape == (200, 210)
        phase = src.read(0)
    assert phase.dtype == np.float32 and np.isfinite(phase).all()
    assert 4.5 < phase.max() < 5.5  # "peaks near 5 rad"
    border = np.concatenate([phase[:10].ravel(), phase[-10:].ravel()])
    assert abs(float(np.median(border))) < 0.1  # background at ~0 rad
    cells = _objects(phase > 1.0, min_pixels=200)
    assert len(cells) == 1
    area_um2 = cells[0] * 0.14**2  # an HL60 cell is ~10-15 um across
    assert 50 < area_um2 < 400


def test_qlsi_bead():
    path = REAL / "qlsi_paa_bead.h5"
    assert detect_modality(path) == "qlsi"
    with open_source(make_spec(path, pixel_size_um=1.0, wavelength_nm=400.0)) as src:
        # pixel size and wavelength come from the file, which wins over the spec
        assert src.pixel_size_um == pytest.approx(0.06575)
        assert src.wavelength_nm == pytest.approx(550.0)
        assert src.modality == "qlsi" and src.shape == (720, 720)
        phase = src.read(0)
    assert phase.dtype == np.float32 and np.isfinite(phase).all()
    assert phase.max() == pytest.approx(0.934, rel=0.05)
    beads = _objects(phase > phase.max() / 2, min_pixels=100)
    assert len(beads) == 1
