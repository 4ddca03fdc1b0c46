"""RGB crops: PNG/JPEG/TIFF to uint8 (H, W, 3) with alpha, greyscale and 16-bit handling."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from hemalens.engine.errors import InputError, MetadataError
from hemalens.engine.io import detect_modality, make_spec, open_source, to_rgb8


@pytest.fixture
def rgb() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, (40, 50, 3), dtype=np.uint8)


def _read(path, **kw):
    kw.setdefault("pixel_size_um", 0.1)
    with open_source(make_spec(path, **kw)) as src:
        assert src.modality == "rgb"
        frames = list(src)
        assert all(f.dtype == np.uint8 and f.shape == src.shape for f in frames)
        return src, frames


def test_png_roundtrip_and_no_wavelength_needed(tmp_path, rgb):
    p = tmp_path / "crop.png"
    Image.fromarray(rgb).save(p)
    assert detect_modality(p) == "rgb"
    src, (frame,) = _read(p)
    assert src.wavelength_nm is None and src.shape == (40, 50, 3)
    np.testing.assert_array_equal(frame, rgb)


def test_rgb_needs_pixel_size(tmp_path, rgb):
    p = tmp_path / "crop.png"
    Image.fromarray(rgb).save(p)
    with pytest.raises(MetadataError, match=r"crop\.png: pixel size unknown"):
        open_source(make_spec(p))


def test_jpeg_is_rgb_even_when_grey(tmp_path, rgb):
    p = tmp_path / "crop.jpg"
    Image.fromarray(rgb).save(p, quality=95)
    _, (frame,) = _read(p)
    ref = cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)  # reference decoder
    assert np.abs(frame.astype(int) - ref.astype(int)).max() <= 2
    g = tmp_path / "grey.jpg"
    Image.fromarray(rgb[..., 0]).save(g)
    assert detect_modality(g) == "rgb"
    _, (frame,) = _read(g)
    assert (frame[..., 0] == frame[..., 1]).all() and (frame[..., 1] == frame[..., 2]).all()


def test_rgba_composited_on_white_and_opaque_alpha_dropped(tmp_path, rgb):
    alpha = np.full((40, 50, 1), 255, np.uint8)
    alpha[:10] = 0
    alpha[10:20] = 128
    p = tmp_path / "rgba.png"
    Image.fromarray(np.concatenate([rgb, alpha], axis=-1)).save(p)
    _, (frame,) = _read(p)
    assert (frame[:10] == 255).all()  # fully transparent -> white
    np.testing.assert_array_equal(frame[20:], rgb[20:])  # opaque -> unchanged
    a = 128 / 255
    expect = np.rint(rgb[10:20] * a + 255 * (1 - a))
    assert np.abs(frame[10:20].astype(int) - expect).max() <= 1
    opaque = tmp_path / "opaque.png"
    Image.fromarray(np.concatenate([rgb, np.full_like(alpha, 255)], axis=-1)).save(opaque)
    _, (frame,) = _read(opaque)
    np.testing.assert_array_equal(frame, rgb)


def test_grey_as_rgb_is_replicated(tmp_path, rgb):
    p = tmp_path / "grey.png"
    Image.fromarray(rgb[..., 1]).save(p)
    _, (frame,) = _read(p, modality="rgb")
    np.testing.assert_array_equal(frame, np.repeat(rgb[..., 1:2], 3, axis=-1))


def test_sixteen_bit_colour_scaled(tmp_path):
    rgb16 = np.random.default_rng(1).integers(0, 65536, (30, 40, 3), dtype=np.uint16)
    want = np.rint(rgb16 / 257.0)
    t = tmp_path / "c16.tif"
    tifffile.imwrite(t, rgb16, photometric="rgb")
    _, (frame,) = _read(t)
    np.testing.assert_array_equal(frame, want)
    p = tmp_path / "c16.png"
    assert cv2.imwrite(str(p), rgb16[..., ::-1])
    _, (frame,) = _read(p)
    assert np.abs(frame - want).max() <= 1  # Pillow reduces 16-bit PNG colour itself


def test_tiff_rgb_stack_and_planar(tmp_path, rgb):
    stack = np.stack([rgb, rgb[::-1], 255 - rgb])
    p = tmp_path / "stack.tif"
    tifffile.imwrite(p, stack, photometric="rgb")
    src, frames = _read(p)
    assert src.n_frames == 3
    for got, want in zip(frames, stack, strict=True):
        np.testing.assert_array_equal(got, want)
    q = tmp_path / "planar.tif"
    tifffile.imwrite(q, np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate")
    _, (frame,) = _read(q)
    np.testing.assert_array_equal(frame, rgb)


def test_to_rgb8_float_ranges():
    x = np.linspace(0, 1, 16 * 16 * 3).reshape(16, 16, 3)
    np.testing.assert_array_equal(to_rgb8(x), np.rint(x * 255).astype(np.uint8))
    np.testing.assert_array_equal(to_rgb8(x * 255), np.rint(x * 255).astype(np.uint8))
    with pytest.raises(InputError, match="float colour values"):
        to_rgb8(x * 1000 - 3, 2, "f.tif")
    with pytest.raises(InputError, match="frame 0 contains NaN"):
        to_rgb8(np.full((16, 16, 3), np.nan))
