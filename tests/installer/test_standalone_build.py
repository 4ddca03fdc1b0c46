"""The standalone build (installer/): it starts the GUI and runs the CLI without Python.

Slow (not in ``make test``): builds ``dist/cpu/hemalens`` with ``installer/build.sh cpu``
(10-20 min on 2 cores), or reuses the build named by ``HEMALENS_STANDALONE`` (the path of
its ``hemalens`` executable), then runs commands from it in a clean environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from hemalens.engine import __version__

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


@pytest.fixture(scope="module")
def exe() -> Path:
    given = os.environ.get("HEMALENS_STANDALONE")
    if given:
        path = Path(given)
    else:
        out = subprocess.run(["bash", str(ROOT / "installer" / "build.sh"), "cpu"],
                             capture_output=True, text=True, timeout=3300)
        assert out.returncode == 0, out.stderr[-4000:]
        path = ROOT / "dist" / "cpu" / "hemalens" / "hemalens"
    assert path.is_file() and os.access(path, os.X_OK), path
    return path


def run(exe: Path, tmp: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the build with nothing of the development set-up: no venv, no PYTHONPATH."""
    clean = {"PATH": "/usr/bin:/bin", "HOME": str(tmp), "QT_QPA_PLATFORM": "offscreen",
             "XDG_DATA_HOME": str(tmp / "data"), "XDG_CONFIG_HOME": str(tmp / "config"),
             "OMP_NUM_THREADS": "2", **env}
    return subprocess.run([str(exe), *args], env=clean, capture_output=True, text=True,
                          timeout=600, cwd=tmp)


def test_version(exe, tmp_path):
    out = run(exe, tmp_path, "--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"hemalens {__version__}"


def test_synth_segment_info_train_predict_headless(exe, tmp_path):
    out = run(exe, tmp_path, "synth", "qpi", "sim", "--frames", "5", "--json")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "sim" / "manifest.csv").is_file()
    assert json.loads(out.stdout)
    out = run(exe, tmp_path, "segment", "--manifest", "sim/manifest.csv", "--modality", "phase",
              "-o", "sim/P.hemalens", "--json")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "sim" / "P.hemalens" / "cells.h5").is_file()
    out = run(exe, tmp_path, "info", "sim/P.hemalens", "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["cells"] > 0 and info["failed_inputs"] == 0
    # torch inside the build: a LeNet5 trains and predicts (the CPU build has no torchvision)
    out = run(exe, tmp_path, "train", "sim/P.hemalens", "--arch", "lenet5", "--epochs", "1",
              "--mc", "3", "--name", "m", "--json")
    assert out.returncode == 0, out.stderr
    out = run(exe, tmp_path, "predict", "sim/P.hemalens", "--mc", "5", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["cells"] == info["objects"]


def test_the_gui_paints_its_window_before_torch_is_imported(exe, tmp_path):
    report = tmp_path / "first-paint.json"
    started = time.time()
    out = run(exe, tmp_path, "gui", HEMALENS_STARTUP_REPORT=str(report))
    assert out.returncode == 0, out.stderr
    data = json.loads(report.read_text())
    assert data["frozen"] is True
    assert "torch" not in data["loaded"]
    assert 0 < data["first_paint_unix"] - started < 120


def test_bad_input_is_one_line_naming_the_file(exe, tmp_path):
    out = run(exe, tmp_path, "info", "missing.hemalens")
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "missing.hemalens" in out.stderr


def test_the_cpu_build_bundles_no_cuda_and_no_unused_qt(exe):
    internal = exe.parent / "_internal"
    names = [p.name for p in internal.rglob("*") if p.is_file()]
    assert not [n for n in names if n.startswith(("libcudart", "libcublas", "libcudnn",
                                                    "libnccl", "libtorch_cuda"))]
    assert not [n for n in names if n.startswith(("libQt6Qml", "libQt6Quick", "libQt6Pdf",
                                                    "libQt6Network", "libQt6WebEngine"))]
    assert "hemalens.svg" in names and "hemalens.png" in names
    dangling = [p for p in internal.rglob("*") if p.is_symlink() and not p.exists()]
    assert not dangling
