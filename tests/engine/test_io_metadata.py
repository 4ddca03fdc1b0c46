"""Pixel size / wavelength from files and the file-wins-spec-fills-gaps rule."""

from __future__ import annotations

import logging

import h5py
import numpy as np
import pytest
import tifffile
from PIL import Image

from hemalens.engine.errors import MetadataError
from hemalens.engine.io import make_spec, open_source
from hemalens.engine.io.metadata import (
    FileMetadata,
    mapping_metadata,
    modality_from_text,
    resolve_pixel_size,
    resolve_wavelength,
)

FRAMES = np.zeros((2, 32, 32), np.float32)


def _px(path, **kw):
    with open_source(make_spec(path, wavelength_nm=kw.pop("wl", 500.0), **kw)) as src:
        return src.pixel_size_um


def test_file_wins_spec_fills_gaps(caplog):
    spec = make_spec("x.tif", pixel_size_um=0.5, wavelength_nm=600.0)
    meta = FileMetadata(pixel_size_um=0.3)
    with caplog.at_level(logging.WARNING, logger="hemalens.engine.io.metadata"):
        assert resolve_pixel_size(meta, spec) == 0.3  # file wins, >1% apart -> warning
    assert "using the file's value" in caplog.text
    assert resolve_wavelength(meta, spec, required=True) == 600.0  # spec fills the gap
    assert resolve_pixel_size(FileMetadata(), spec) == 0.5
    assert resolve_wavelength(FileMetadata(), make_spec("x"), required=False) is None


def test_implausible_values(tmp_path):
    # a spec value in metres instead of micrometres is refused
    with pytest.raises(MetadataError, match=r"x: pixel size 3e-07 um is implausible"):
        resolve_pixel_size(FileMetadata(), make_spec("x", pixel_size_um=3e-7))
    with pytest.raises(MetadataError, match="wavelength 0.528 nm is implausible"):
        resolve_wavelength(FileMetadata(), make_spec("x", wavelength_nm=0.528), required=True)
    # a 72 dpi placeholder in a file is ignored, not used
    assert mapping_metadata({"pixel_size_um": 352.7}).pixel_size_um is None


def test_hemalens_json_tiff(tmp_path):
    p = tmp_path / "h.tif"
    meta = {"pixel_size_um": 0.3, "wavelength_nm": 528.0, "modality": "phase", "unit": "rad"}
    tifffile.imwrite(p, FRAMES, metadata=meta, photometric="minisblack")
    with open_source(make_spec(p, pixel_size_um=0.9, wavelength_nm=633.0)) as src:
        assert (src.pixel_size_um, src.wavelength_nm) == (0.3, 528.0)


def test_imagej_units_and_centimetre_resolution(tmp_path):
    p = tmp_path / "ij_nm.tif"
    tifffile.imwrite(p, FRAMES, imagej=True, resolution=(1 / 250, 1 / 250), metadata={"unit": "nm"})
    assert _px(p) == pytest.approx(0.25)
    q = tmp_path / "cm.tif"
    tifffile.imwrite(q, FRAMES[0], resolution=(1e4 / 0.2, 1e4 / 0.2), resolutionunit="CENTIMETER")
    assert _px(q) == pytest.approx(0.2)
    r = tmp_path / "inch.tif"  # 300 dpi is a placeholder: falls back to the spec
    tifffile.imwrite(r, FRAMES[0], resolution=(300, 300), resolutionunit="INCH")
    assert _px(r, pixel_size_um=0.4) == pytest.approx(0.4)
    with pytest.raises(MetadataError, match="pixel size unknown"):
        _px(r)


def test_ome_tiff_physical_size(tmp_path):
    p = tmp_path / "x.ome.tif"
    tifffile.imwrite(
        p, FRAMES, ome=True, metadata={"PhysicalSizeX": 120.0, "PhysicalSizeXUnit": "nm"}
    )
    assert _px(p) == pytest.approx(0.12)


def test_hdf5_attributes_um_and_qpformat_metres(tmp_path):
    p = tmp_path / "qp.h5"
    with h5py.File(p, "w") as f:
        d = f.create_dataset("phase", data=FRAMES)
        d.attrs["pixel size"] = 6.575e-8
        d.attrs["wavelength"] = 5.5e-7
    with open_source(make_spec(p)) as src:
        assert src.pixel_size_um == pytest.approx(0.06575)
        assert src.wavelength_nm == pytest.approx(550.0)
    q = tmp_path / "um.h5"
    with h5py.File(q, "w") as f:
        f["phase"] = FRAMES
        f.attrs["pixel_size_um"] = 0.11  # root attributes count as well
        f.attrs["wavelength_nm"] = 633.0
    with open_source(make_spec(q)) as src:
        assert (src.pixel_size_um, src.wavelength_nm) == (0.11, 633.0)


def test_png_physical_resolution(tmp_path):
    p = tmp_path / "g.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(p, dpi=(25400 / 0.5, 25400 / 0.5))
    with open_source(make_spec(p, modality="phase", phase_scale=0.01, wavelength_nm=500)) as src:
        assert src.pixel_size_um == pytest.approx(0.5, rel=1e-3)


def test_modality_wording():
    assert modality_from_text(b"quadriwave lateral shearing interferometry") == "qlsi"
    assert modality_from_text("off-axis digital holography") == "hologram"
    assert modality_from_text("phase") == "phase"
    assert modality_from_text(3) is None
