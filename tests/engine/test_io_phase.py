"""Phase readers round-trip data written with tifffile, numpy, h5py, Pillow and cv2."""

from __future__ import annotations

import cv2
import h5py
import numpy as np
import pytest
import tifffile
from PIL import Image

from hemalens.engine.errors import InputError
from hemalens.engine.io import detect_modality, make_spec, open_source
from hemalens.engine.io.phase import NpyStack, TiffStack, open_stack

META = {"pixel_size_um": 0.3, "wavelength_nm": 528.0, "modality": "phase", "unit": "rad"}


@pytest.fixture
def stack() -> np.ndarray:
    rng = np.random.default_rng(42)
    return rng.normal(0.0, 1.5, size=(6, 48, 64)).astype(np.float32)


def _spec(path, **kw):
    kw.setdefault("pixel_size_um", 0.3)
    kw.setdefault("wavelength_nm", 528.0)
    return make_spec(path, **kw)


def _check(src, expected: np.ndarray, *, modality: str = "phase") -> None:
    assert src.modality == modality
    assert src.n_frames == expected.shape[0]
    assert src.shape == expected.shape[1:]
    frames = list(src)
    assert len(frames) == expected.shape[0]
    for got, want in zip(frames, expected, strict=True):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)


def test_hemalens_tiff_stack_with_metadata(tmp_path, stack):
    p = tmp_path / "run01_phase.tif"
    tifffile.imwrite(p, stack, metadata=META)
    assert detect_modality(p) == "phase"
    with open_source(make_spec(p)) as src:  # everything from the file
        assert src.pixel_size_um == pytest.approx(0.3)
        assert src.wavelength_nm == pytest.approx(528.0)
        _check(src, stack)
        np.testing.assert_array_equal(src.read(4), stack[4])  # random access


def test_tiff_read_is_lazy(tmp_path, stack, monkeypatch):
    p = tmp_path / "lazy.tif"
    tifffile.imwrite(p, stack, metadata=META)
    calls = []
    orig = TiffStack.read_raw

    def spy(self, i):
        calls.append(i)
        return orig(self, i)

    monkeypatch.setattr(TiffStack, "read_raw", spy)
    with open_source(make_spec(p)) as src:
        assert src.n_frames == 6 and calls == []  # frame count without decoding
        src.read(5)
    assert calls == [5]


def test_three_frame_float_stack_stored_as_planar_rgb_is_frames(tmp_path, stack):
    # tifffile's default writes a (3, H, W) array as planar RGB; float data are frames.
    p = tmp_path / "three.tif"
    with pytest.warns(DeprecationWarning):
        tifffile.imwrite(p, stack[:3])
    with open_source(_spec(p)) as src:
        _check(src, stack[:3])


def test_single_page_and_imagej_tiff(tmp_path, stack):
    p = tmp_path / "single.tif"
    tifffile.imwrite(p, stack[0])
    with open_source(_spec(p)) as src:
        _check(src, stack[:1])
    q = tmp_path / "ij.tif"
    tifffile.imwrite(q, stack, imagej=True, resolution=(4.0, 4.0), metadata={"unit": "um"})
    with open_source(make_spec(q, wavelength_nm=600.0)) as src:
        assert src.pixel_size_um == pytest.approx(0.25)
        _check(src, stack)


def test_sixteen_bit_tiff_with_scale(tmp_path):
    counts = np.random.default_rng(3).integers(0, 4000, (3, 32, 48), dtype=np.uint16)
    # smooth phase-like counts would be phase, but noise has no carrier either
    p = tmp_path / "counts.tif"
    tifffile.imwrite(p, counts, photometric="minisblack")
    assert detect_modality(p) == "phase"
    with open_source(_spec(p, phase_scale=0.001)) as src:
        _check(src, counts.astype(np.float32) * np.float32(0.001))


def test_npy_roundtrip_memory_mapped(tmp_path, stack):
    p = tmp_path / "stack.npy"
    np.save(p, stack.astype(np.float64))
    with open_source(_spec(p)) as src:
        _check(src, stack)
    st = open_stack(p, "stack.npy")
    assert isinstance(st, NpyStack) and isinstance(st._arr, np.memmap)
    st.close()
    q = tmp_path / "one.npy"
    np.save(q, stack[0])
    with open_source(_spec(q)) as src:
        _check(src, stack[:1])


def test_npz_roundtrip_with_metadata_members(tmp_path, stack):
    p = tmp_path / "frames.npz"
    np.savez_compressed(p, phase=stack, pixel_size_um=0.2, wavelength_nm=633.0)
    with open_source(make_spec(p)) as src:
        assert src.pixel_size_um == pytest.approx(0.2)
        assert src.wavelength_nm == pytest.approx(633.0)
        _check(src, stack)
    q = tmp_path / "anon.npz"
    np.savez(q, stack)  # single unnamed member arr_0
    with open_source(_spec(q)) as src:
        _check(src, stack)


def test_hdf5_single_dataset_and_suffix(tmp_path, stack):
    p = tmp_path / "phase.h5"
    with h5py.File(p, "w") as f:
        d = f.create_dataset("group/phase", data=stack)
        d.attrs["pixel_size_um"] = 0.15
        f.attrs["wavelength_nm"] = 550.0
        f["other"] = stack[:2] * 2
    with open_source(make_spec(p)) as src:  # 'phase' is preferred among several
        assert src.pixel_size_um == pytest.approx(0.15)
        assert src.wavelength_nm == pytest.approx(550.0)
        _check(src, stack)
    spec = _spec(f"{p}:/other")
    with open_source(spec) as src:
        _check(src, stack[:2] * 2)
    with pytest.raises(InputError, match="no dataset '/missing'"):
        open_source(_spec(f"{p}:/missing"))


def test_hdf5_numbered_frames(tmp_path, stack):
    p = tmp_path / "series.h5"
    with h5py.File(p, "w") as f:
        for i, fr in enumerate(stack):
            f[str(i)] = fr
    with open_source(_spec(p)) as src:
        _check(src, stack)


@pytest.mark.parametrize("bits", [8, 16])
def test_png_greyscale_with_scale(tmp_path, bits):
    rng = np.random.default_rng(bits)
    dtype = np.uint8 if bits == 8 else np.uint16
    counts = rng.integers(0, 2**bits - 1, (40, 56), dtype=dtype)
    p = tmp_path / f"phase{bits}.png"
    if bits == 8:
        Image.fromarray(counts).save(p)
    else:
        assert cv2.imwrite(str(p), counts)
    assert detect_modality(p) == "phase"
    scale = 2 * np.pi / (2**bits - 1)
    with open_source(_spec(p, phase_scale=scale)) as src:
        got = src.read(0)
        assert src.n_frames == 1 and got.dtype == np.float32
        np.testing.assert_allclose(got, counts * scale, rtol=1e-6)


def test_float_phase_ignores_phase_scale(tmp_path, stack):
    p = tmp_path / "f.npy"
    np.save(p, stack)
    with open_source(_spec(p, phase_scale=123.0)) as src:
        np.testing.assert_array_equal(src.read(0), stack[0])


def test_forced_modality_overrides_detection(tmp_path, stack):
    p = tmp_path / "x.tif"
    tifffile.imwrite(p, stack, metadata=META)
    with open_source(make_spec(p, modality="rgb")) as src:
        assert src.modality == "rgb" and src.shape == (48, 64, 3)
        with pytest.raises(InputError, match=r"x\.tif: frame 0 has float colour values"):
            src.read(0)


def test_trailing_channel_axis_and_npz_string_metadata(tmp_path, stack):
    p = tmp_path / "chan.npy"
    np.save(p, stack[0][:, :, None])
    with open_source(_spec(p)) as src:
        _check(src, stack[:1])
    q = tmp_path / "meta.npz"
    np.savez(q, data=(stack[:2] * 100).astype(np.int16), modality="phase", phase_scale=0.01)
    assert detect_modality(q) == "phase"  # stated, so no carrier test is needed
    with open_source(_spec(q)) as src:  # phase_scale comes from the archive
        _check(src, (stack[:2] * 100).astype(np.int16).astype(np.float32) * np.float32(0.01))


def test_tiff_pages_appended_one_by_one_are_all_read(tmp_path, stack):
    """A stack written with tifffile's append=True is one series per page: all are frames."""
    p = tmp_path / "appended.tif"
    for frame in stack[:3]:
        tifffile.imwrite(p, frame, append=True)
    assert len(tifffile.TiffFile(p).series) == 3
    with open_source(_spec(p, modality="phase")) as src:
        _check(src, stack[:3])


def test_tiff_with_pages_of_different_shapes_is_refused_in_one_line(tmp_path, stack):
    p = tmp_path / "mixed.tif"
    tifffile.imwrite(p, stack[0], append=True)
    tifffile.imwrite(p, stack[1][:32, :40], append=True)
    with pytest.raises(InputError) as err:
        open_source(_spec(p, modality="phase"))
    msg = str(err.value)
    assert msg.startswith(str(p)) and "different shapes" in msg and "48x64" in msg
    assert "32x40" in msg and "\n" not in msg
