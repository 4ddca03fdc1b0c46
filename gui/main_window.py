"""The main window: menus, the gallery | cell panel splitter and the status bar."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import QFileDialog, QLabel, QMainWindow, QMessageBox, QSplitter, QWidget

from hemalens.engine import __version__
from hemalens.engine.errors import HemaLensError
from hemalens.gui.cell_panel import CellPanel
from hemalens.gui.gallery import GalleryPanel
from hemalens.gui.workers import Job, cancel_all, one_line_message, show_error

log = logging.getLogger(__name__)

APP_TITLE = "HemaLens"
#: Bounded wait for running jobs when the window closes, ms.
CLOSE_WAIT_MS = 5000


class MainWindow(QMainWindow):
    """HemaLens main window.

    Parameters
    ----------
    parent : QWidget, optional
        Qt parent.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.project: Any = None
        self.demo_job: Job | None = None
        self.setWindowTitle(APP_TITLE)
        self.resize(1200, 800)

        self.gallery = GalleryPanel(self)
        self.cell_panel = CellPanel(self)
        self.splitter = QSplitter(Qt.Orientation.Horizontal, self)
        self.splitter.addWidget(self.gallery)
        self.splitter.addWidget(self.cell_panel)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        self.setCentralWidget(self.splitter)
        self.gallery.cellSelected.connect(self.cell_panel.show_cell)

        self.project_label = QLabel(self)
        self.statusBar().addPermanentWidget(self.project_label)
        self._build_menus()
        self._update_status()

    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        self.open_action = QAction("&Open project…", self)
        self.open_action.setShortcut(QKeySequence.StandardKey.Open)
        self.open_action.triggered.connect(self.choose_project)
        self.demo_action = QAction("Open &demo project", self)
        self.demo_action.triggered.connect(self.open_demo_project)
        self.quit_action = QAction("&Quit", self)
        self.quit_action.setShortcut(QKeySequence("Ctrl+Q"))
        self.quit_action.triggered.connect(self.close)
        file_menu.addAction(self.open_action)
        file_menu.addAction(self.demo_action)
        file_menu.addSeparator()
        file_menu.addAction(self.quit_action)

        help_menu = self.menuBar().addMenu("&Help")
        self.about_action = QAction("&About HemaLens", self)
        self.about_action.triggered.connect(self.show_about)
        help_menu.addAction(self.about_action)

    # -- projects ----------------------------------------------------------------------
    def choose_project(self) -> None:
        """Ask for a project file and open it."""
        start = str(Path(self.project.path).parent) if self.project is not None else ""
        path, _ = QFileDialog.getOpenFileName(
            self, "Open project", start,
            "HemaLens projects (hemalens-project.json cells.h5 *.h5);;All files (*)",
        )
        if path:
            self.open_project(path)

    def open_project(self, path: str | Path, *, show_errors: bool = True) -> bool:
        """Open the project at ``path`` and show it; the previous one stays open on failure.

        Parameters
        ----------
        path : str or Path
            Project file.
        show_errors : bool
            Show a message box with the one-line reason when it cannot be opened.

        Returns
        -------
        bool
            Whether the project was opened.
        """
        from hemalens.engine.project.store import Project  # h5py: kept off the start-up path

        try:
            project = Project.open(path)
        except HemaLensError as exc:
            message = str(exc)
        except Exception as exc:  # an unexpected failure must not take the window down
            log.exception("opening %s failed", path)
            message = f"{path}: {one_line_message(exc)}"
        else:
            self.set_project(project)
            return True
        log.warning("cannot open project: %s", message)
        self.statusBar().showMessage(message, 15000)
        if show_errors:
            show_error(self, "Cannot open project", message)
        return False

    def set_project(self, project: Any) -> None:
        """Show ``project`` (None shows nothing) and close the one shown before."""
        previous, self.project = self.project, project
        self.cell_panel.set_project(project)
        self.gallery.set_project(project)
        if previous is not None and previous is not project:
            previous.close()
        name = Path(project.path).stem if project is not None else ""
        self.setWindowTitle(f"{APP_TITLE} — {name}" if name else APP_TITLE)
        self._show_predictions(project)
        self._update_status()
        if project is not None and self.gallery.model.rowCount() > 0:
            # open on a cell rather than an empty inspector
            self.gallery.view.select_cell(self.gallery.model.cell_row(0))

    def _show_predictions(self, project: Any) -> None:
        """Show the active model's stored predictions, when the project has any."""
        found = None
        if project is not None and getattr(project, "path", None) is not None:
            try:
                from hemalens.engine.review.predictions import read_predictions

                found = read_predictions(project)
            except Exception as exc:  # predictions are optional: never block opening
                log.warning("cannot read predictions of %s: %s", project.path, exc)
                self.statusBar().showMessage(one_line_message(exc), 30000)
        if found is None:
            self.gallery.model.set_predictions(None)
            self.cell_panel.set_predictions(None)
            return
        columns, attrs = found
        names = list(attrs.get("class_names") or project.classes)
        self.gallery.view.fit_captions([f"≠ {n} 100%" for n in names])
        self.gallery.model.set_predictions(columns["predicted"], columns["confidence"], names)
        self.cell_panel.set_predictions(columns, names)

    def _update_status(self) -> None:
        project = self.project
        if project is None:
            self.project_label.setText("No project open")
            return
        passed = int(project.cells["qc_pass"].sum()) if project.n_cells else 0
        self.project_label.setText(
            f"{Path(project.path).name} · {project.n_cells:,} objects · {passed:,} cells passed QC"
        )

    def open_demo_project(self) -> Job | None:
        """Open the demo project, building it first if it is missing or broken.

        Returns
        -------
        Job or None
            The build job when one was started.
        """
        from hemalens.gui import demo

        if self.demo_job is not None and self.demo_job.is_running:
            return self.demo_job
        path = demo.demo_project_path()
        if path.exists() and self.open_project(path, show_errors=False):
            return None
        self.demo_job = demo.ensure_demo_project(self, self.open_project, path, force=True)
        if self.demo_job is not None:
            self.demo_action.setEnabled(False)
            self.demo_job.ended.connect(lambda _state: self.demo_action.setEnabled(True))
        return self.demo_job

    # -- misc --------------------------------------------------------------------------
    def show_about(self) -> None:
        """Show the version."""
        QMessageBox.about(
            self, f"About {APP_TITLE}",
            f"<b>{APP_TITLE}</b> {__version__}<br>Review blood-cell classifications with "
            "calibrated confidence and explanations.",
        )

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        """Cancel running jobs, wait for them (bounded), close the project."""
        if not cancel_all(CLOSE_WAIT_MS):
            log.warning("jobs still running after %d ms at close", CLOSE_WAIT_MS)
        self.set_project(None)  # detaches the views before the file is closed
        super().closeEvent(event)
