"""Application entry point: ``hemalens gui [PROJECT] [--demo]``.

Only Qt, pyqtgraph and numpy are imported at module level so the window opens fast;
the engine's heavier parts are imported when first used.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import pyqtgraph as pg
from PySide6.QtCore import QCoreApplication, QEvent
from PySide6.QtWidgets import QApplication

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
