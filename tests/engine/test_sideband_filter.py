"""The frame-rate sideband filter gives qpretrieve's field; stacks reuse what they learnt."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile

from hemalens.engine.io import hologram as hologram_module
from hemalens.engine.io import make_spec, open_source, remove_tilt
from hemalens.engine.io.sideband_filter import SidebandFilter

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # qpretrieve warns about optional FFT back-ends
    import qpretrieve

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "real" / "hologram_cell.npz"


def _hologram(shape: tuple[int, int], seed: int, direction: float = 1.0) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    rng = np.random.default_rng(seed)
    phase = np.zeros(shape)
    for _ in range(4):
        cy, cx = rng.uniform(15, shape[0] - 15), rng.uniform(15, shape[1] - 15)
        phase += 3.0 * np.sqrt(np.clip(1 - ((yy - cy) ** 2 + (xx - cx) ** 2) / 12.0**2, 0, None))
    carrier = 2 * np.pi / 4.0 * (xx - direction * yy) / np.sqrt(2)
    counts = (1.36 + 1.2 * np.cos(carrier + phase)) * 8000 + rng.normal(0, 40, shape)
    return np.round(counts)


def _reference_field(frame: np.ndarray, padding: int, **kws) -> tuple[np.ndarray, object]:
    holo = qpretrieve.OffAxisHologram(frame, padding=padding,
                                      fft_interface=qpretrieve.fourier.FFTFilterNumpy)
    holo.run_pipeline(**kws)
    return np.asarray(holo.field).reshape(frame.shape), holo


def _assert_same_field(got: np.ndarray, expected: np.ndarray, single: bool) -> None:
    scale = np.abs(expected).max()
    if not single:
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9 * scale)
        return
    assert got.dtype == np.complex64
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6 * scale)
    strong = np.abs(expected) > 0.1 * scale  # where the phase is defined
    phase_error = np.angle(got[strong] * np.conj(expected[strong]))
    assert np.abs(phase_error).max() < 1e-5


@pytest.mark.parametrize("padding", [0, 1, 2])
@pytest.mark.parametrize("filter_name", ["smooth disk", "disk", "gauss"])
@pytest.mark.parametrize("direction", [1.0, -1.0])  # sideband in either half-plane
@pytest.mark.parametrize("single", [False, True])
def test_field_equals_qpretrieve_for_every_frame(padding, filter_name, direction, single):
    # odd and even sides: the composed shifts must hold for both (qpretrieve itself
    # refuses unpadded frames that are not square)
    shape = (97, 97) if padding == 0 else (97, 130)
    first = _hologram(shape, 0, direction)
    kws = {"filter_name": filter_name, "filter_size": 0.5}
    _, learnt = _reference_field(first, padding, **kws)
    fast = SidebandFilter.from_hologram(learnt, qpretrieve, single=single)
    for seed in (1, 2):
        frame = _hologram(shape, seed, direction)
        # later frames go through qpretrieve with the sideband learnt on the first
        pipeline = {k: v for k, v in learnt.pipeline_kws.items() if k != "output_domain"}
        expected, _ = _reference_field(frame, padding, **pipeline)
        got = fast(frame)
        assert got.shape == frame.shape
        _assert_same_field(got, expected, single)


def test_invert_phase_conjugates_like_qpretrieve():
    frame = _hologram((64, 80), 3)
    expected, learnt = _reference_field(frame, 1, filter_name="disk", filter_size=0.4,
                                        invert_phase=True)
    got = SidebandFilter.from_hologram(learnt, qpretrieve, single=False)(frame)
    _assert_same_field(got, expected, single=False)


def test_a_frame_of_another_shape_is_refused():
    _, learnt = _reference_field(_hologram((64, 80), 0), 1, filter_name="disk", filter_size=0.5)
    with pytest.raises(ValueError, match="shape"):
        SidebandFilter.from_hologram(learnt, qpretrieve)(np.zeros((64, 81)))


@pytest.mark.skipif(not REAL.exists(), reason="../shared/data/real not present")
def test_real_hologram_field_and_phase_equal_qpretrieve():
    data = np.load(REAL)
    frame, bg = data["data"].astype(np.float64), data["bg_data"].astype(np.float64)
    _, learnt = _reference_field(bg, 1, filter_name="smooth disk", filter_size=0.5)
    pipeline = {k: v for k, v in learnt.pipeline_kws.items() if k != "output_domain"}
    expected, _ = _reference_field(frame, 1, **pipeline)
    for single in (False, True):
        fast = SidebandFilter.from_hologram(learnt, qpretrieve, single=single)
        _assert_same_field(fast(frame), expected, single)


def test_remove_tilt_fits_the_least_squares_plane_of_the_background():
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[0:200, 0:300]
    y, x = np.linspace(-1, 1, 200)[:, None], np.linspace(-1, 1, 300)[None, :]
    plane = 0.7 + 0.4 * x - 0.25 * y
    cell = 3.0 * np.sqrt(np.clip(1 - ((yy - 90) ** 2 + (xx - 140) ** 2) / 30.0**2, 0, None))
    out = remove_tilt(plane + cell + rng.normal(0, 0.02, plane.shape))
    background = cell == 0
    assert abs(float(np.median(out[background]))) < 0.005
    # the plane is gone: no gradient is left in the background
    coef = np.linalg.lstsq(np.stack([np.ones(background.sum()), np.broadcast_to(x, out.shape)[
        background], np.broadcast_to(y, out.shape)[background]], 1), out[background],
        rcond=None)[0]
    assert np.abs(coef).max() < 0.005
    assert out.dtype == np.float32 and float(out.max()) == pytest.approx(3.0, abs=0.1)


def test_a_stack_read_in_chunks_learns_its_sideband_once_and_relearns_when_rewritten(
    tmp_path, monkeypatch
):
    stack = np.stack([_hologram((96, 128), s) for s in range(4)]).astype(np.uint16)
    bg = _hologram((96, 128), 99).astype(np.uint16)
    meta = {"pixel_size_um": 0.3, "wavelength_nm": 528.0, "modality": "hologram"}
    path, bg_path = tmp_path / "h.tif", tmp_path / "bg.tif"
    tifffile.imwrite(path, stack, metadata=meta, photometric="minisblack")
    tifffile.imwrite(bg_path, bg, metadata=meta, photometric="minisblack")
    spec = make_spec(path, background=bg_path)
    hologram_module._ANCHORS.clear()
    with open_source(spec) as src:  # the reference: one source reads every frame
        expected = [src.read(i) for i in range(4)]

    built = []
    real = hologram_module.OffAxisRetriever
    monkeypatch.setattr(hologram_module, "OffAxisRetriever",
                        lambda *a, **k: built.append(1) or real(*a, **k))
    for i in (3, 1, 2, 0):  # a fresh source per chunk, as an import does
        with open_source(spec) as src:
            np.testing.assert_array_equal(src.read(i), expected[i])
    assert built == []  # the retriever learnt by the first source was reused

    # the same name, new content
    tifffile.imwrite(path, stack[::-1], metadata=meta, photometric="minisblack")
    os.utime(path, ns=(1, 1))
    with open_source(spec) as src:
        np.testing.assert_array_equal(src.read(0), expected[3])
    assert built == [1]
