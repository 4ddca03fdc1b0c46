"""Take the README's screenshots of the review window on the demo project.

Run under a real X server (``make screenshots`` starts Xvfb): the window is shown, driven
through the same actions a reviewer's keys trigger, and photographed with ``QWidget.grab``.
The demo project is built (or copied from ``--demo``) into a temporary folder so the
user's own demo is never edited.

Usage: ``python docs/screenshots.py [--demo PATH] [--out docs]``
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from PySide6.QtCore import QEventLoop, QSettings, Qt, QTimer
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from hemalens.gui.app import create_app
from hemalens.gui.main_window import MainWindow


def settle(ms: int = 400) -> None:
    """Let the event loop paint (and background jobs report) for ``ms`` milliseconds."""
    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def wait_for(condition, timeout_ms: int = 60000) -> None:
    """Run the event loop until ``condition()`` holds."""
    waited = 0
    while not condition() and waited < timeout_ms:
        settle(100)
        waited += 100


def shot(widget, out: Path, name: str) -> None:
    """Save ``widget`` as ``out/name.png``."""
    settle()
    path = out / f"{name}.png"
    widget.grab().save(str(path))
    print(path)


def main(argv: list[str] | None = None) -> int:
    """Build or copy the demo, then take every screenshot."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", type=Path, help="an existing demo project to copy")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = ap.parse_args(argv)
    create_app()
    with tempfile.TemporaryDirectory() as tmp:
        # Fresh settings: the default layout, not the one this user last left.
        QSettings.setDefaultFormat(QSettings.Format.IniFormat)
        QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, tmp)
        project = Path(tmp) / "demo.hemalens"
        if args.demo:
            shutil.copytree(args.demo, project)
            frames = args.demo.with_name(args.demo.stem + "-frames")
            if frames.exists():
                shutil.copytree(frames, project.with_name("demo-frames"))
        else:
            from hemalens.engine.demo import build_demo_project

            build_demo_project(project)
        take(project, args.out)
    return 0


def take(project: Path, out: Path) -> None:
    """Drive the window on ``project`` and save the screenshots into ``out``."""
    win = MainWindow()
    win.resize(1500, 940)
    win.show()
    wait_for(win.isVisible)
    win.activateWindow()  # the review keys are window shortcuts: the window needs the focus
    win.raise_()
    wait_for(win.isActiveWindow, 5000)
    assert win.open_project(project), project
    win.session.user = "technician"
    win.settings.setValue("review/user", "technician")
    grid = win.gallery.grid
    grid.setFocus()
    settle(800)
    shot(win, out, "review-gallery")

    # A technician's keys: confirm three cells, relabel one, mark one unsure.
    for key in (Qt.Key.Key_Space, Qt.Key.Key_Space, Qt.Key.Key_Space, Qt.Key.Key_2,
                Qt.Key.Key_U):
        QTest.keyClick(grid, key)
        settle(150)
    win.docks["history"].raise_()
    win.inspector.tabs.setCurrentIndex(3)  # the cell's history
    shot(win, out, "review-keys-history")

    win.gallery.mode_combo.setCurrentIndex(
        next(i for i in range(win.gallery.mode_combo.count())
             if "queue" in win.gallery.mode_combo.itemText(i).lower()))
    win.docks["inspector"].raise_()
    win.inspector.tabs.setCurrentIndex(0)
    settle(1500)  # the explanation is computed in the background
    shot(win, out, "review-queue")

    for name in ("differential", "calibration"):
        win.docks[name].raise_()
        shot(win.docks[name], out, f"panel-{name}")

    win.toggle_help()
    shot(win, out, "help-overlay")
    win.toggle_help()

    # The embedding view: the classifier's feature map of this QPI project (computed in
    # the background on first use), a lasso selection and one PLI edit.
    view = win.embedding
    win.docks["embedding"].raise_()
    # A scientist gives the map room: the bottom docks take 60 % of the height.
    win.resizeDocks([win.docks["embedding"]], [int(win.height() * 0.6)], Qt.Orientation.Vertical)
    if not view.demo_state():
        wait_for(lambda: view.map_job is None or not view.map_job.is_running, 300000)
        view.demo_state()
    settle(1500)
    shot(win, out, "embedding-view")

    from hemalens.gui.import_dialog import ImportDialog

    frames = sorted(project.with_name("demo-frames").glob("*.tif"))
    if frames:
        dialog = ImportDialog(win)
        dialog.resize(1100, 760)
        dialog.show()
        dialog.set_inputs([str(f) for f in frames[:3]])
        wait_for(lambda: "cells pass" in dialog.preview_info.text(), 60000)
        shot(dialog, out, "import-preview")
        dialog.close()
    win.close()
    QApplication.processEvents()


if __name__ == "__main__":
    sys.exit(main())
