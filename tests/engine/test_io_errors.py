"""Every bad input gives a one-line InputError naming the file and saying what is wrong."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
from PIL import Image

from hemalens.engine.errors import InputError, MetadataError
from hemalens.engine.io import detect_modality, make_spec, open_source


def _phase(n: int = 4, h: int = 32, w: int = 40) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, h, w)).astype(np.float32)


def _open_error(path: Path, **kw) -> InputError:
    spec = make_spec(path, pixel_size_um=0.3, wavelength_nm=528.0, **kw)
    with pytest.raises(InputError) as info:
        src = open_source(spec)
        try:
            for _ in src:
                pass
        finally:
            src.close()
    err = info.value
    msg = str(err)
    assert "\n" not in msg
    assert msg.startswith(str(path) + ": ")
    assert err.path == str(path)
    return err


def _write_tif(p: Path, data: np.ndarray, **kw) -> Path:
    if data.ndim == 3 and data.shape[-1] > 4:
        kw.setdefault("photometric", "minisblack")  # a stack, not planar RGB
    tifffile.imwrite(p, data, **kw)
    return p


# Each case: builder(tmp_path) -> path, extra spec kwargs, phrase expected in the reason.
def _missing(t: Path) -> Path:
    return t / "nope.tif"


def _directory(t: Path) -> Path:
    d = t / "folder.tif"
    d.mkdir()
    return d


def _empty(t: Path) -> Path:
    p = t / "empty.tif"
    p.touch()
    return p


def _truncated_tiff(t: Path) -> Path:
    full = _write_tif(t / "full.tif", _phase(5, 64, 80), metadata={"unit": "rad"})
    data = full.read_bytes()
    p = t / "cut.tif"
    p.write_bytes(data[: len(data) // 2])
    return p


def _truncated_plain_tiff(t: Path) -> Path:
    full = _write_tif(t / "plain.tif", _phase(5, 64, 80), metadata=None)
    data = full.read_bytes()
    p = t / "cutplain.tif"
    p.write_bytes(data[: len(data) * 2 // 3])
    return p


def _truncated_single_page(t: Path) -> Path:
    full = _write_tif(t / "one.tif", _phase(1, 64, 80)[0])
    data = full.read_bytes()
    p = t / "cutone.tif"
    p.write_bytes(data[: len(data) - 500])
    return p


def _text_as_tif(t: Path) -> Path:
    p = t / "notes.tif"
    p.write_text("this is not an image\n" * 20)
    return p


def _text_unknown_ext(t: Path) -> Path:
    p = t / "notes.dat"
    p.write_text("hello\n" * 20)
    return p


def _h5_no_datasets(t: Path) -> Path:
    p = t / "nodata.h5"
    with h5py.File(p, "w") as f:
        f.create_group("empty")
        f.attrs["note"] = "nothing here"
    return p


def _h5_truncated(t: Path) -> Path:
    full = t / "full.h5"
    with h5py.File(full, "w") as f:
        f["phase"] = _phase(4, 64, 64)
    data = full.read_bytes()
    p = t / "cut.h5"
    p.write_bytes(data[: len(data) // 2])
    return p


def _nan_frame(t: Path) -> Path:
    d = _phase(5)
    d[3, 4, 5] = np.nan
    return _write_tif(t / "nan.tif", d)


def _inf_frame(t: Path) -> Path:
    d = _phase(5)
    d[2, 0, 0] = np.inf
    p = t / "inf.npy"
    np.save(p, d)
    return p


def _one_d(t: Path) -> Path:
    p = t / "line.npy"
    np.save(p, np.zeros(100, np.float32))
    return p


def _four_d(t: Path) -> Path:
    p = t / "hyper.npy"
    np.save(p, np.zeros((2, 3, 32, 32), np.float32))
    return p


def _tiny(t: Path) -> Path:
    p = t / "tiny.npy"
    np.save(p, np.zeros((8, 8), np.float32))
    return p


def _rgb_stack(t: Path) -> Path:
    p = t / "rgbstack.npy"
    np.save(p, np.zeros((4, 32, 32, 3), np.float32))
    return p


def _complex(t: Path) -> Path:
    p = t / "complex.npy"
    np.save(p, np.zeros((32, 32), np.complex64))
    return p


def _bool(t: Path) -> Path:
    p = t / "mask.npy"
    np.save(p, np.zeros((32, 32), bool))
    return p


def _object(t: Path) -> Path:
    p = t / "objects.npy"
    np.save(p, np.array([[None] * 32] * 32, dtype=object), allow_pickle=True)
    return p


def _rgba_tiff_as_phase(t: Path) -> Path:
    return _write_tif(t / "rgba.tif", np.zeros((32, 32, 4), np.uint8), photometric="rgb")


def _huge_png(t: Path) -> Path:
    # 8200 x 8200 px (67 Mpx): the header alone is enough to refuse it
    p = t / "huge.png"
    Image.new("L", (8200, 8200)).save(p, optimize=False, compress_level=1)
    return p


def _huge_npy(t: Path) -> Path:
    p = t / "huge.npy"
    arr = np.lib.format.open_memmap(p, mode="w+", dtype=np.uint8, shape=(9000, 9000))
    del arr
    return p


def _truncated_npy(t: Path) -> Path:
    full = t / "full.npy"
    np.save(full, _phase(4))
    p = t / "cut.npy"
    p.write_bytes(full.read_bytes()[:-1000])
    return p


def _truncated_npz(t: Path) -> Path:
    full = t / "full.npz"
    np.savez_compressed(full, phase=_phase(4))
    p = t / "cut.npz"
    p.write_bytes(full.read_bytes()[:300])
    return p


def _truncated_png(t: Path) -> Path:
    full = t / "full.png"
    noise = np.random.default_rng(1).integers(0, 255, (64, 64), dtype=np.uint8)
    Image.fromarray(noise).save(full)
    p = t / "cut.png"
    p.write_bytes(full.read_bytes()[:400])
    return p


def _png_renamed_garbage(t: Path) -> Path:
    p = t / "fake.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    return p


def _npz_without_arrays(t: Path) -> Path:
    p = t / "scalars.npz"
    np.savez(p, pixel_size_um=0.3)
    return p


def _h5_several(t: Path) -> Path:
    p = t / "several.h5"
    with h5py.File(p, "w") as f:
        f["a"] = _phase(2)
        f["b"] = _phase(2)
    return p


CASES = [
    (_missing, {}, "file not found"),
    (_directory, {}, "is a directory"),
    (_empty, {}, "file is empty (0 bytes)"),
    (_truncated_tiff, {}, "truncated"),
    (_truncated_plain_tiff, {}, "truncated"),
    (_truncated_single_page, {}, "truncated"),
    (_text_as_tif, {}, "not a TIFF file"),
    (_text_unknown_ext, {}, "unknown file type '.dat'"),
    (_h5_no_datasets, {}, "HDF5 file holds no datasets"),
    (_h5_truncated, {}, "truncated"),
    (_nan_frame, {}, "frame 3 contains NaN values"),
    (_inf_frame, {}, "frame 2 contains infinite values"),
    (_one_d, {}, "1-D data"),
    (_four_d, {}, "4-D data"),
    (_tiny, {}, "too small"),
    (_rgb_stack, {"modality": "phase"}, "RGB colour image where phase expected"),
    (_complex, {}, "unsupported data type complex"),
    (_bool, {}, "unsupported data type boolean"),
    (_object, {}, "unsupported data type object"),
    (_rgba_tiff_as_phase, {"modality": "phase"}, "RGBA colour image where phase expected"),
    (_huge_png, {"modality": "phase", "phase_scale": 0.01}, "too large"),
    (_huge_npy, {}, "too large"),
    (_truncated_npy, {}, "truncated"),
    (_truncated_npz, {}, "truncated"),
    (_truncated_png, {"phase_scale": 0.01, "modality": "phase"}, "truncated"),
    (_png_renamed_garbage, {}, "corrupt"),
    (_npz_without_arrays, {}, "no image array"),
    (_h5_several, {}, "several image datasets"),
]


@pytest.mark.parametrize(("build", "kw", "phrase"), CASES, ids=[c[0].__name__[1:] for c in CASES])
def test_bad_input_gives_specific_one_line_error(tmp_path, build, kw, phrase):
    path = build(tmp_path)
    err = _open_error(path, **kw)
    assert phrase in err.reason, err.reason


@pytest.mark.parametrize("build", [_missing, _text_as_tif, _empty, _h5_no_datasets])
def test_detect_modality_errors_name_the_file(tmp_path, build):
    path = build(tmp_path)
    with pytest.raises(InputError) as info:
        detect_modality(path)
    assert str(path) in str(info.value)


def test_unreadable_file_is_input_error(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root can read any file")
    p = _write_tif(tmp_path / "locked.tif", _phase())
    p.chmod(0)
    _open_error(p)


def test_missing_pixel_size_and_wavelength_are_metadata_errors(tmp_path):
    p = _write_tif(tmp_path / "bare.tif", _phase())
    with pytest.raises(MetadataError, match=r"bare\.tif: pixel size unknown: pass --pixel-size"):
        open_source(make_spec(p, wavelength_nm=528.0))
    with pytest.raises(MetadataError, match=r"bare\.tif: wavelength unknown"):
        open_source(make_spec(p, pixel_size_um=0.3))


def test_integer_phase_without_scale_is_metadata_error(tmp_path):
    p = tmp_path / "counts.png"
    Image.fromarray(np.full((32, 32), 7, np.uint8)).save(p)
    with pytest.raises(MetadataError, match=r"counts\.png: integer phase image needs a scale"):
        open_source(make_spec(p, modality="phase", pixel_size_um=0.3, wavelength_nm=528.0))


def test_unknown_modality_in_spec(tmp_path):
    p = _write_tif(tmp_path / "x.tif", _phase())
    _open_error(p, modality="xray")


def test_background_problems_name_the_input(tmp_path):
    holo = tmp_path / "holo.tif"
    tifffile.imwrite(holo, np.zeros((2, 32, 32), np.uint16), metadata={"modality": "hologram"})
    err = _open_error(holo, background=tmp_path / "missing_bg.tif")
    assert "background" in err.reason and "file not found" in err.reason
    bg = tmp_path / "bg.tif"
    tifffile.imwrite(bg, np.zeros((40, 40), np.uint16))
    err = _open_error(holo, background=bg)
    assert "shape" in err.reason
    nan_bg = tmp_path / "nan_bg.npy"
    np.save(nan_bg, np.full((32, 32), np.nan, np.float32))
    err = _open_error(holo, background=nan_bg)
    assert "background hologram contains NaN" in err.reason


def test_frame_index_out_of_range(tmp_path):
    p = _write_tif(tmp_path / "three.tif", _phase(3), photometric="minisblack")
    with open_source(make_spec(p, pixel_size_um=0.3, wavelength_nm=528.0)) as src:
        with pytest.raises(IndexError):
            src.read(3)
        assert src.read(-1).shape == (32, 40)
