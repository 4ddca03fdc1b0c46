"""Whole-pipeline checks on inputs a lab will throw at it: real recordings, bad files, RGB."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from hemalens.engine.cli import main
from hemalens.engine.project import Project

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason="../shared/data/real not present")


def _segment(argv: list[str], capsys) -> tuple[int, dict]:
    capsys.readouterr()
    code = main(["segment", *argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def _good_stack(path: Path, frames: int = 10) -> Path:
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:200, :200]
    stack = rng.normal(0, 0.02, (frames, 200, 200)).astype(np.float32)
    for f in range(frames):
        cx, cy = rng.uniform(40, 160, 2)
        stack[f] += 2.5 * np.sqrt(np.clip(1 - ((xx - cx) ** 2 + (yy - cy) ** 2) / 15.0**2, 0, None))
    tifffile.imwrite(path, stack, metadata={"pixel_size_um": 0.3, "wavelength_nm": 528.0,
                                            "modality": "phase", "unit": "rad"})
    return path


@needs_real
def test_real_off_axis_hologram_yields_exactly_one_cell(tmp_path, capsys):
    # The file records no pixel size or wavelength: the user states them.
    code, report = _segment([str(REAL / "hologram_cell.npz"), "--pixel-size", "0.14",
                             "--wavelength", "633", "-o", str(tmp_path / "h.h5")], capsys)
    assert code == 0 and report["objects"] == 1 and report["cells"] == 1, report
    with Project.open(tmp_path / "h.h5") as p:
        assert 4.5 < float(p.cells["phase_max"][0]) < 5.5  # peaks near 5 rad (README)
        # The QC measure passes it; paper 1's arcLength circularity (0.81 at 0.14 um/px)
        # would reject this round cell at the paper's 0.85 cut.
        assert float(p.cells["circularity_smooth"][0]) >= 0.85
        assert float(p.cells["circularity"][0]) < float(p.cells["circularity_smooth"][0])


@needs_real
def test_real_hologram_without_pixel_size_is_a_clear_error(tmp_path, capsys):
    code, report = _segment([str(REAL / "hologram_cell.npz"), "-o", str(tmp_path / "h.h5")],
                            capsys)
    assert code == 1 and report["project"] is None
    assert "--pixel-size" in report["failed_inputs"][0]["error"]


@needs_real
def test_real_qlsi_interferogram_yields_exactly_one_object(tmp_path, capsys):
    code, report = _segment([str(REAL / "qlsi_paa_bead.h5"), "-o", str(tmp_path / "q.h5")],
                            capsys)
    assert code == 0 and report["objects"] == 1, report
    with Project.open(tmp_path / "q.h5") as p:
        assert p.inputs["modality"][0] == "qlsi"
        assert abs(float(p.inputs["pixel_size_um"][0]) - 0.06575) < 1e-6  # from the file
        assert 0.85 < float(p.cells["phase_max"][0]) < 1.0  # README: about 0.934 rad


def test_bad_inputs_in_one_batch_each_get_a_reason_and_the_rest_goes_on(tmp_path, capsys):
    good = _good_stack(tmp_path / "good.tif")
    data = good.read_bytes()
    (tmp_path / "truncated.tif").write_bytes(data[: len(data) // 3])
    (tmp_path / "empty.tif").write_bytes(b"")
    nan = tifffile.imread(good)
    nan[4] = np.nan
    tifffile.imwrite(tmp_path / "nan_frame.tif", nan,
                     metadata={"pixel_size_um": 0.3, "wavelength_nm": 528.0, "modality": "phase"})
    np.save(tmp_path / "wrong_shape.npy", np.zeros(1000, np.float32))
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., 3] = 128
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba)
    cv2.imwrite(str(tmp_path / "sixteen_bit.png"), np.full((64, 64), 1000, np.uint16))
    (tmp_path / "a_folder").mkdir()
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("file,modality,given_label,pixel_size_um,wavelength_nm\n"
                        "good.tif,phase,lymphocyte,,\n"
                        "not_there.tif,phase,monocyte,0.3,528\n")
    names = ["truncated.tif", "empty.tif", "nan_frame.tif", "wrong_shape.npy", "rgba.png",
             "sixteen_bit.png", "a_folder"]
    code, report = _segment(["--manifest", str(manifest), *[str(tmp_path / n) for n in names],
                             "--pixel-size", "0.3", "--wavelength", "528",
                             "-o", str(tmp_path / "P.hemalens")], capsys)
    assert code == 1
    errors = {Path(f["path"]).name: f["error"] for f in report["failed_inputs"]}
    assert set(errors) == set(names) - {"rgba.png"} | {"not_there.tif", "rgba.png"}
    for name, error in errors.items():
        assert name in error and "\n" not in error
    assert "nan" in errors["nan_frame.tif"].lower()
    assert "--phase-scale" in errors["sixteen_bit.png"]
    # good.tif only: the NaN frame fails its file while its block is being read, so no
    # frame of that file reaches the project.
    assert report["cells"] == 10
    with Project.open(tmp_path / "P.hemalens") as p:
        status = dict(zip([Path(f).name for f in p.inputs["file"]], p.inputs["status"],
                          strict=True))
        assert status["good.tif"] == "ok" and status["not_there.tif"] == "failed"
        assert set(p.label_names()[p.cells["input_id"] == 0]) == {"lymphocyte"}


def test_stained_rgb_crop_is_segmented_into_rgb_patches(tmp_path, capsys):
    image = np.full((240, 320, 3), (235, 225, 230), np.uint8)  # light smear background
    centres = [(70, 80), (200, 90), (120, 180), (260, 170)]
    for cx, cy in centres:
        cv2.circle(image, (cx, cy), 30, (200, 160, 210), -1)  # pink-violet cytoplasm
        cv2.circle(image, (cx - 5, cy), 16, (120, 50, 140), -1)  # purple nucleus
    crop = tmp_path / "smear.png"
    cv2.imwrite(str(crop), image[..., ::-1])  # cv2 writes BGR
    code, report = _segment([str(crop), "--pixel-size", "0.15", "--label", "neutrophil",
                             "-o", str(tmp_path / "rgb.h5")], capsys)
    assert code == 0 and report["cells"] == 4, report
    with Project.open(tmp_path / "rgb.h5") as p:
        assert p.patch_kind == "rgb"
        patch = p.image(0)
        assert patch.shape[-1] == 3 and patch.dtype == np.uint8
        assert np.allclose(p.cells["diameter_um"], 60 * 0.15, rtol=0.08)
