"""The window opens before torch is imported, and the first-paint report says so.

``HEMALENS_STARTUP_REPORT`` is what the standalone build's smoke test and
``benchmarks/bench_startup.py`` use; here it runs in the development venv.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
from conftest import add_predictions

from hemalens.gui import app as gui_app

pytestmark = [pytest.mark.gui, pytest.mark.timeout(120)]


def _first_paint(tmp_path, *args):
    report = tmp_path / "first-paint.json"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "HOME": str(tmp_path),
           "XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
           gui_app.STARTUP_REPORT_ENV: str(report)}
    started = time.time()
    out = subprocess.run([sys.executable, "-m", "hemalens.engine.cli", "gui", *args], env=env,
                         capture_output=True, text=True, timeout=100)
    assert out.returncode == 0, out.stderr
    data = json.loads(report.read_text())
    return data, data["first_paint_unix"] - started


def test_the_window_paints_without_torch_and_quits(tmp_path):
    data, seconds = _first_paint(tmp_path)
    assert data["frozen"] is False
    assert "torch" not in data["loaded"] and "torchvision" not in data["loaded"]
    assert 0 < seconds < 60


def test_a_project_with_predictions_still_opens_without_torch(tmp_path, small_project):
    project = tmp_path / "p.hemalens"
    shutil.copytree(small_project, project)
    add_predictions(project)
    data, _ = _first_paint(tmp_path, str(project))
    assert "torch" not in data["loaded"]
    assert "h5py" in data["loaded"]  # the project was really opened before the first paint


def test_the_application_icon_is_bundled(qapp):
    icon = gui_app.app_icon()
    assert not icon.isNull()
    assert icon.pixmap(64, 64).width() == 64
