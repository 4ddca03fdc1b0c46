"""Application entry point: ``hemalens gui [PROJECT] [--demo]``.

Only Qt, pyqtgraph and numpy are imported at module level so the window opens fast;
the engine's heavier parts are imported when first used.

Setting ``HEMALENS_STARTUP_REPORT=FILE`` makes the application write, at the main
window's first paint, one JSON object to FILE (the wall-clock time of that paint and
which heavy libraries were loaded by then) and quit. The installer's smoke test and
``benchmarks/bench_startup.py`` measure the time to first window with it, identically
in the development venv and in the standalone build.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import QCoreApplication, QEvent, QObject, QTimer
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication, QWidget

from hemalens.gui.main_window import MainWindow

_configured = False
_gc: pg.util.garbage_collector.GarbageCollector | None = None


def collect_garbage_in_gui_thread() -> None:
    """Run Python's cyclic garbage collector only from a timer in the GUI thread.

    Automatic collection runs in whichever thread happens to allocate, e.g. a Dask
    client's event-loop thread during a job on a cluster; finalising Qt objects there
    deadlocks the application. pyqtgraph's ``GarbageCollector`` disables automatic
    collection and collects from a ``QTimer`` (every second) in the GUI thread.
    Call once the QApplication exists.
    """
    global _gc
    if _gc is None:
        from pyqtgraph.util.garbage_collector import GarbageCollector

        _gc = GarbageCollector(interval=1.0)

#: Environment variable naming the file of the first-paint report (see the module docstring).
STARTUP_REPORT_ENV = "HEMALENS_STARTUP_REPORT"
#: Libraries whose presence at first paint the report records (torch must not be there).
HEAVY_MODULES = ("torch", "torchvision", "sklearn", "matplotlib", "scipy", "skimage", "cv2",
                 "h5py", "captum", "lime", "openTSNE", "pytorch_metric_learning")


def app_icon() -> QIcon:
    """Return the application icon from the bundled resources (SVG, with a PNG fallback).

    Returns
    -------
    QIcon
        The icon; a null icon when the resources are missing.
    """
    folder = resources.files("hemalens.resources")
    icon = QIcon()
    for name in ("hemalens.svg", "hemalens.png"):
        item = folder / name
        if item.is_file():
            icon.addFile(str(item))
    return icon


class _FirstPaintReport(QObject):
    """Write the first-paint report of one window to ``path`` and quit the application."""

    def __init__(self, window: QWidget, path: Path) -> None:
        super().__init__(window)
        self._path = path
        self._done = False
        window.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802, D102
        if not self._done and event.type() == QEvent.Type.Paint:
            self._done = True
            report = {
                "first_paint_unix": time.time(),
                "frozen": bool(getattr(sys, "frozen", False)),
                "loaded": sorted(m for m in HEAVY_MODULES if m in sys.modules),
            }
            self._path.write_text(json.dumps(report) + "\n", encoding="utf-8")
            QTimer.singleShot(0, QCoreApplication.quit)
        return False


def configure_pyqtgraph() -> None:
    """Set pyqtgraph's global options once: row-major images, as numpy/OpenCV store them."""
    global _configured
    if not _configured:
        pg.setConfigOptions(imageAxisOrder="row-major")
        _configured = True


def create_app(argv: Sequence[str] | None = None) -> QApplication:
    """Return the QApplication (creating it if needed) named for settings and data paths.

    Parameters
    ----------
    argv : sequence of str, optional
        Qt command-line arguments; ``sys.argv[:1]`` when omitted.

    Returns
    -------
    QApplication
        The application instance.
    """
    app = QApplication.instance()
    if app is None:
        app = QApplication(list(argv) if argv is not None else sys.argv[:1])
    QApplication.setApplicationName("HemaLens")
    QApplication.setOrganizationName("HemaLens")
    # the name of resources/hemalens.desktop: Wayland compositors match the window to it
    QApplication.setDesktopFileName("hemalens")
    QApplication.setWindowIcon(app_icon())
    configure_pyqtgraph()
    assert isinstance(app, QApplication)
    return app


def start(project: str | None = None, demo: bool = False) -> MainWindow:
    """Create and show the main window, opening ``project`` or the demo project.

    Parameters
    ----------
    project : str, optional
        Project file to open.
    demo : bool
        Open the demo project (building it first when missing or broken).

    Returns
    -------
    MainWindow
        The shown window.
    """
    window = MainWindow()
    report = os.environ.get(STARTUP_REPORT_ENV)
    if report:
        _FirstPaintReport(window, Path(report))
    window.show()
    if project:
        window.open_project(project)
    elif demo:
        window.open_demo_project()
    return window


def run(project: str | None = None, demo: bool = False, argv: Sequence[str] | None = None) -> int:
    """Start the GUI and run the event loop.

    Parameters
    ----------
    project : str, optional
        Project file to open.
    demo : bool
        Open the demo project (created in ``AppDataLocation/demo/demo.hemalens`` on first use).
    argv : sequence of str, optional
        Qt command-line arguments.

    Returns
    -------
    int
        The event loop's exit code.
    """
    from hemalens.gui.system_check import xcb_problem

    if QApplication.instance() is None and (problem := xcb_problem()):
        print(f"hemalens: {problem}", file=sys.stderr)
        return 3
    app = create_app(argv)
    collect_garbage_in_gui_thread()
    window = start(project, demo)
    code = app.exec()
    if window.isVisible():  # quit without closing the window: still cancel jobs, close file
        window.close()
    # A second quit request (last window closed + Quit action) may still be queued; it
    # would end the next event loop at once when run() is called in-process (tests).
    QCoreApplication.removePostedEvents(app, QEvent.Type.Quit)
    return int(code)
