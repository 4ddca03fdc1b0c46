"""The command line contract: help, version, JSON keys, exit codes, bad inputs in a batch."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from hemalens.engine import __version__
from hemalens.engine.cli import main

SEGMENT_KEYS = {"inputs", "frames", "objects", "cells", "rejected", "failed_inputs", "warnings",
                "seconds", "project"}


def _phase_stack(path: Path, frames: int = 12, seed: int = 0) -> Path:
    """A small phase stack: 3 sphere-like cells (8 um at 0.3 um/px) per frame, flowing past."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:256, :256]
    stack = rng.normal(0, 0.02, (frames, 256, 256)).astype(np.float32)
    for f in range(frames):
        centres: list[np.ndarray] = []
        while len(centres) < 3:  # random, non-touching, inside the frame
            c = rng.uniform(20, 236, 2)
            if all(np.hypot(*(c - o)) > 32 for o in centres):
                centres.append(c)
        for cx, cy in centres:
            r2 = ((xx - cx) ** 2 + (yy - cy) ** 2) / (13.3**2)
            stack[f] += (2.0 * np.sqrt(np.clip(1 - r2, 0, None))).astype(np.float32)
    tifffile.imwrite(path, stack, metadata={"pixel_size_um": 0.3, "wavelength_nm": 528.0,
                                            "modality": "phase", "unit": "rad"})
    return path


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert __version__ in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for command in ("gui", "synth", "segment", "info", "export"):
        assert command in text


def test_segment_batch_reports_bad_inputs_and_keeps_going(tmp_path, capsys):
    good = _phase_stack(tmp_path / "good.tif")
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    folder = tmp_path / "a_directory"
    folder.mkdir()
    missing = tmp_path / "missing.tif"
    project = tmp_path / "P.h5"
    code = main(["segment", str(good), str(empty), str(truncated), str(folder), str(missing),
                 "-o", str(project), "--json"])
    report = _json(capsys)
    assert code == 1
    assert set(report) == SEGMENT_KEYS
    assert report["inputs"] == 5 and report["frames"] == 12
    assert report["cells"] == 36, report
    failed = {Path(f["path"]).name: f["error"] for f in report["failed_inputs"]}
    assert set(failed) == {"empty.tif", "truncated.tif", "a_directory", "missing.tif"}
    for name, error in failed.items():
        assert name in error and "\n" not in error
    assert project.exists()

    code = main(["info", str(project), "--json"])
    info = _json(capsys)
    assert code == 0 and info["cells"] == 36 and info["failed_inputs"] == 4

    out_csv = tmp_path / "cells.csv"
    assert main(["export", str(project), str(out_csv)]) == 0
    with open(out_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 36
    for column in ("cell_id", "file", "frame", "x", "y", "diameter_um", "circularity", "area_um2",
                   "optical_volume_um3", "qc_pass", "qc_reason", "given_label"):
        assert column in rows[0]
    assert {r["file"] for r in rows} == {str(good)}
    diameters = np.array([float(r["diameter_um"]) for r in rows])
    assert np.allclose(diameters, 8.0, rtol=0.05)


def test_segment_with_only_bad_inputs_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "notes.tif"
    bad.write_text("this is not an image")
    project = tmp_path / "P.h5"
    code = main(["segment", str(bad), "-o", str(project), "--json"])
    report = _json(capsys)
    assert code == 1 and report["project"] is None and not project.exists()
    assert "notes.tif" in report["failed_inputs"][0]["error"]


def test_missing_pixel_size_is_a_clear_error(tmp_path, capsys):
    arr = tmp_path / "phase.npy"
    np.save(arr, np.zeros((64, 64), np.float32))
    code = main(["segment", str(arr), "-o", str(tmp_path / "P.h5"), "--json"])
    report = _json(capsys)
    assert code == 1
    assert "pixel size" in report["failed_inputs"][0]["error"].lower()


def test_bad_project_gives_one_line_error(tmp_path, capsys):
    foreign = tmp_path / "foreign.h5"
    foreign.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    assert main(["info", str(foreign)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hemalens: error:") and "foreign.h5" in err and "\n" not in err


def test_segment_needs_inputs(tmp_path, capsys):
    assert main(["segment", "-o", str(tmp_path / "P.h5")]) == 2
    assert "input" in capsys.readouterr().err
