from __future__ import annotations

import subprocess
import sys

import pyqtgraph as pg
import pytest
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from hemalens.gui import app as gui_app
from hemalens.gui import demo
from hemalens.gui.main_window import MainWindow

pytestmark = [pytest.mark.gui, pytest.mark.timeout(60)]

HEAVY = ["h5py", "scipy", "skimage", "cv2", "torch", "qpretrieve", "tifffile",
         "hemalens.engine.project.store", "hemalens.engine.demo"]


def test_start_up_imports_stay_light():
    code = (
        "import sys; import hemalens.gui.app, hemalens.gui.main_window; "
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env={"QT_QPA_PLATFORM": "offscreen", "PATH": ""})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_create_app_names_the_application_and_configures_pyqtgraph():
    app = gui_app.create_app()
    assert app is QApplication.instance()
    assert app.applicationName() == "HemaLens" and app.organizationName() == "HemaLens"
    assert pg.getConfigOption("imageAxisOrder") == "row-major"


def _main_window():
    wins = [w for w in QApplication.topLevelWidgets()
            if isinstance(w, MainWindow) and w.isVisible()]
    return wins[-1] if wins else None


def _quit_when(condition, seen, timeout_ms=10000):
    """Poll in the event loop; record the window state, close it and quit the loop."""
    timer = QTimer()
    timer.setInterval(20)
    state = {"left": timeout_ms // 20}

    def tick():
        win = _main_window()
        state["left"] -= 1
        if win is not None and (condition(win) or state["left"] <= 0):
            timer.stop()
            try:
                seen.append((win.windowTitle(), win.session.n_cells if win.session else 0))
            finally:  # an error here must not leave the event loop running forever
                win.close()
                QApplication.quit()

    timer.timeout.connect(tick)
    timer.start()
    return timer


def test_run_opens_the_given_project_and_returns_the_exit_code(small_project, message_boxes):
    seen = []
    timer = _quit_when(lambda w: w.project is not None, seen)
    assert gui_app.run(project=str(small_project)) == 0
    del timer
    assert seen == [("HemaLens — small", 300)]
    assert message_boxes == []


def test_run_with_a_bad_project_reports_it_and_still_runs(tmp_path, message_boxes):
    bad = tmp_path / "nope.h5"
    seen = []
    timer = _quit_when(lambda w: True, seen)
    assert gui_app.run(project=str(bad)) == 0
    del timer
    assert seen == [("HemaLens", 0)]
    assert len(message_boxes) == 1 and str(bad) in message_boxes[0][2]


def test_run_demo_builds_then_opens_the_demo(tmp_path, monkeypatch, project_factory,
                                             message_boxes):
    path = tmp_path / "demo" / "demo.hemalens"
    monkeypatch.setattr(demo, "demo_project_path", lambda: path)

    def fake_build(p, progress=None):
        progress.set_progress(1, 1)
        return project_factory(p, n=25)

    monkeypatch.setattr(demo, "load_builder", lambda: fake_build)
    seen = []
    timer = _quit_when(lambda w: w.project is not None, seen)
    assert gui_app.run(demo=True) == 0
    del timer
    assert seen == [("HemaLens — demo", 25)] and path.is_dir()
    assert message_boxes == []


def test_installed_pyside_does_not_leak_references_to_none():
    # PySide6 6.12.0 drops a reference to None on every void call (label.setText, …); on
    # CPython 3.11 that aborts the app after a few thousand calls. pyproject excludes it.
    from PySide6.QtWidgets import QLabel

    label = QLabel()
    before = sys.getrefcount(None)
    for _ in range(2000):
        label.setText("x")
    assert sys.getrefcount(None) >= before - 10
