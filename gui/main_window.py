"""The main window: the gallery in the middle, panels in docks, menus, the status bar.

The window holds one :class:`~hemalens.engine.review.session.ReviewSession` (opened on
the project with edits allowed) and hands it to every view; a
:class:`~hemalens.gui.session_bridge.SessionBridge` turns the session's events into
signals and follows changes made by other programs. Long work (import, training,
prediction, explanations, OOD checks) runs through ``gui.workers.start_job`` and shows
in the jobs panel; the window never blocks.

Docks can be moved, floated and closed; their layout, the window geometry, the recent
projects and the reviewer's name are kept in ``QSettings``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QByteArray, QEvent, QSettings, Qt, QTimer
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence, QUndoStack
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QInputDialog,
    QLabel,
    QMainWindow,
    QMenu,
    QMessageBox,
    QUndoView,
    QWidget,
)

from hemalens.engine import __version__
from hemalens.engine.errors import HemaLensError
from hemalens.gui.calibration_panel import CalibrationPanel
from hemalens.gui.differential_panel import DifferentialPanel
from hemalens.gui.embedding_view import EmbeddingView
from hemalens.gui.gallery_panel import GalleryPanel
from hemalens.gui.help_overlay import HelpOverlay
from hemalens.gui.inspector import Inspector
from hemalens.gui.jobs_panel import JobsPanel
from hemalens.gui.models_panel import ModelsPanel
from hemalens.gui.ood_panel import OodPanel
from hemalens.gui.review_actions import ReviewActions
from hemalens.gui.session_bridge import SessionBridge
from hemalens.gui.workers import Job, active_jobs, cancel_all, one_line_message, show_error

log = logging.getLogger(__name__)

APP_TITLE = "HemaLens"
#: Bounded wait for running jobs when the window closes, ms.
CLOSE_WAIT_MS = 8000
MAX_RECENT = 8


def ask(parent: QWidget | None, title: str, text: str) -> bool:
    """Ask a yes/no question (tests monkeypatch this)."""
    answer = QMessageBox.question(parent, title, text,
                                  QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                  QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes


class MainWindow(QMainWindow):
    """HemaLens main window.

    Parameters
    ----------
    parent : QWidget, optional
        Qt parent.
    settings : QSettings, optional
        Where layout, recent projects and the reviewer's name are kept (tests pass a
        temporary one).
    """

    def __init__(self, parent: QWidget | None = None, settings: QSettings | None = None) -> None:
        super().__init__(parent)
        self.settings = settings or QSettings()
        self.session: Any = None
        self.bridge: SessionBridge | None = None
        self.demo_job: Job | None = None
        self.setWindowTitle(APP_TITLE)
        self.setObjectName("MainWindow")
        self.resize(1400, 900)
        self.setDockNestingEnabled(True)

        self.undo_stack = QUndoStack(self)
        self.gallery = GalleryPanel(self)
        self.setCentralWidget(self.gallery)
        self.inspector = Inspector(self)
        self.undo_view = QUndoView(self.undo_stack, self)
        self.undo_view.setEmptyLabel("(project opened)")
        self.jobs = JobsPanel(self, self.statusBar())
        self.models = ModelsPanel(self)
        self.differential = DifferentialPanel(self)
        self.calibration = CalibrationPanel(self)
        self.ood = OodPanel(self)
        self.embedding = EmbeddingView(self, self.undo_stack)

        self.docks: dict[str, QDockWidget] = {}
        right = Qt.DockWidgetArea.RightDockWidgetArea
        bottom = Qt.DockWidgetArea.BottomDockWidgetArea
        left = Qt.DockWidgetArea.LeftDockWidgetArea
        self._dock("inspector", "Inspector", self.inspector, right)
        self._dock("history", "Undo history", self.undo_view, right)
        self._dock("models", "Models", self.models, left)
        self._dock("differential", "Differential", self.differential, bottom)
        self._dock("calibration", "Calibration", self.calibration, bottom)
        self._dock("ood", "Out of distribution", self.ood, bottom)
        self._dock("jobs", "Jobs", self.jobs, bottom)
        self._dock("embedding", "Embedding", self.embedding, bottom)
        self.tabifyDockWidget(self.docks["inspector"], self.docks["history"])
        for name in ("calibration", "ood", "jobs", "embedding"):
            self.tabifyDockWidget(self.docks["differential"], self.docks[name])
        self.docks["inspector"].raise_()
        self.docks["differential"].raise_()
        self._default_state = QByteArray()
        self._first_show = True
        #: True once the window has painted; see :meth:`after_first_paint`.
        self.painted = False
        self._after_paint: list[Callable[[], None]] = []

        self.review = ReviewActions(self, self.undo_stack, self._targets, self.show_message)
        self.help = HelpOverlay(self)
        self.project_label = QLabel(self)
        self.statusBar().addPermanentWidget(self.project_label)
        self._build_menus()

        self.gallery.cellSelected.connect(self._cell_selected)
        self.gallery.grid.contextMenuAt.connect(self._context_menu)
        self.gallery.signoff_button.clicked.connect(self.sign_off)
        self.inspector.problem.connect(self.show_message)
        self.models.changed.connect(self._derived_written)
        self.embedding.message.connect(self.show_message)
        self.embedding.written.connect(
            lambda: self.bridge.note_derived_written() if self.bridge is not None else None)
        self._restore_settings()
        self._update_status()

    # -- layout -------------------------------------------------------------------------
    def _dock(self, key: str, title: str, widget: QWidget, area: Qt.DockWidgetArea) -> None:
        dock = QDockWidget(title, self)
        dock.setObjectName(f"dock-{key}")
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        self.docks[key] = dock

    def after_first_paint(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` from the event loop once the window has painted (now if it has).

        Work that imports torch (seconds) waits for it, so the window opens first.

        Parameters
        ----------
        callback : callable
            Called with no arguments.
        """
        if self.painted:
            callback()
        else:
            self._after_paint.append(callback)

    def event(self, event: QEvent) -> bool:  # noqa: D102
        # (events arrive during QMainWindow.__init__, before ``painted`` exists)
        if not getattr(self, "painted", True) and event.type() == QEvent.Type.Paint:
            self.painted = True
            callbacks, self._after_paint = self._after_paint, []
            for callback in callbacks:
                QTimer.singleShot(0, callback)
        return super().event(event)

    def showEvent(self, event: Any) -> None:  # noqa: N802, D102
        super().showEvent(event)
        if self._first_show:  # dock sizes only apply once the window is laid out
            self._first_show = False
            QTimer.singleShot(0, self._first_layout)

    def _first_layout(self) -> None:
        if self.settings.value("window/state") is None:
            self._default_sizes()
        self._default_state = self.saveState()

    def _default_sizes(self) -> None:
        w, h = max(self.width(), 1000), max(self.height(), 700)
        self.resizeDocks([self.docks["inspector"]], [int(w * 0.34)], Qt.Orientation.Horizontal)
        self.resizeDocks([self.docks["models"]], [int(w * 0.16)], Qt.Orientation.Horizontal)
        self.resizeDocks([self.docks["differential"]], [int(h * 0.27)], Qt.Orientation.Vertical)

    def _restore_settings(self) -> None:
        geometry = self.settings.value("window/geometry")
        state = self.settings.value("window/state")
        if isinstance(geometry, QByteArray):
            self.restoreGeometry(geometry)
        if isinstance(state, QByteArray):
            self.restoreState(state)
        self.gallery.display_combo.setCurrentIndex(
            max(0, self.gallery.display_combo.findData(
                self.settings.value("gallery/display", "fixed"))))

    def _save_settings(self) -> None:
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState())
        self.settings.setValue("gallery/display", self.gallery.display_combo.currentData())
        self.settings.sync()

    def reset_layout(self) -> None:
        """Put every dock back where it was on first start."""
        if not self._default_state.isEmpty():
            self.restoreState(self._default_state)
        for dock in self.docks.values():
            dock.show()
        self._default_sizes()

    # -- menus -------------------------------------------------------------------------------
    def _action(self, text: str, slot: Any, keys: str | QKeySequence.StandardKey | None = None,
                tip: str = "") -> QAction:
        a = QAction(text, self)
        if keys is not None:
            a.setShortcut(QKeySequence(keys))
        if tip:
            a.setStatusTip(tip)
            a.setToolTip(tip)
        a.triggered.connect(slot)
        return a

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        self.open_action = self._action("&Open project…", self.choose_project,
                                        QKeySequence.StandardKey.Open,
                                        "Open a project folder (NAME.hemalens)")
        self.recent_menu = QMenu("Open &recent", self)
        self.import_action = self._action("&Import images…", self.import_images, "Ctrl+I",
                                          "Segment holograms, phase images or stained crops "
                                          "into a new project")
        self.demo_action = self._action("Open &demo project", self.open_demo_project,
                                        tip="The simulated demo project (built on first use)")
        self.report_action = self._action("Export &report…", self.export_report, "Ctrl+E",
                                          "The differential, the reviewer's changes, the model "
                                          "and its calibration as CSV, HTML and PDF")
        self.csv_action = self._action("Export cells as &CSV…", self.export_csv,
                                       tip="Every cell with its current label and prediction")
        self.cluster_action = self._action(
            "Compute &cluster…", self.choose_scheduler,
            tip="Run imports, predictions and explanations on a Dask scheduler's workers")
        self.close_action = self._action("&Close project", self.close_project, "Ctrl+W")
        self.quit_action = self._action("&Quit", self.close, "Ctrl+Q")
        for a in (self.open_action,):
            file_menu.addAction(a)
        file_menu.addMenu(self.recent_menu)
        for a in (self.import_action, self.demo_action):
            file_menu.addAction(a)
        file_menu.addSeparator()
        file_menu.addAction(self.report_action)
        file_menu.addAction(self.csv_action)
        file_menu.addSeparator()
        file_menu.addAction(self.cluster_action)
        file_menu.addSeparator()
        file_menu.addAction(self.close_action)
        file_menu.addAction(self.quit_action)
        self._fill_recent()

        self.review_menu = bar.addMenu("&Review")
        self.signoff_action = self._action("&Sign off sample…", self.sign_off,
                                           tip="Sign the sample off when every cell is decided")
        self.reopen_action = self._action("Re&open sample…", self.reopen_sample,
                                          tip="Reopen a signed-off sample for edits")
        self.refresh_action = self._action("Apply the &filter again", self.gallery.refresh, "F5")
        self.user_action = self._action("Reviewer &name…", self.choose_user,
                                        tip="The name recorded with every edit")
        self.help_action = self._action("&Keys…", self.toggle_help, "?",
                                        "Every key of the review (press ? again to close)")
        self.help_action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        self.addAction(self.help_action)
        self.addAction(self.refresh_action)
        self._fill_review_menu()

        model_menu = bar.addMenu("&Model")
        for a in self.models.menu_actions():
            model_menu.addAction(a)

        view_menu = bar.addMenu("&View")
        for dock in self.docks.values():
            view_menu.addAction(dock.toggleViewAction())
        view_menu.addSeparator()
        view_menu.addAction(self._action("&Reset layout", self.reset_layout))

        help_menu = bar.addMenu("&Help")
        help_menu.addAction(self.help_action)
        self.about_action = self._action("&About HemaLens", self.show_about)
        help_menu.addAction(self.about_action)

    def choose_scheduler(self) -> str | None:
        """Ask for the Dask scheduler heavy jobs run on (empty: this computer).

        Returns
        -------
        str or None
            The stored address ("" for this computer), None when the dialog was cancelled.
        """
        from PySide6.QtWidgets import QInputDialog

        from hemalens.gui.workers import SCHEDULER_KEY

        current = str(self.settings.value(SCHEDULER_KEY, "") or "")
        text, ok = QInputDialog.getText(
            self, "Compute cluster",
            "Dask scheduler for imports, predictions and explanations\n"
            "(tcp://HOST:8786; empty: this computer):", text=current)
        if not ok:
            return None
        self.settings.setValue(SCHEDULER_KEY, text.strip())
        where = text.strip() or "this computer"
        self.statusBar().showMessage(f"Heavy jobs run on {where}", 5000)
        return text.strip()

    def _fill_review_menu(self) -> None:
        menu = self.review_menu
        # QMenu.clear() would delete the undo stack's own actions: remove one by one
        for a in list(menu.actions()):
            menu.removeAction(a)
            if a.menu() is not None:
                a.menu().deleteLater()
        self.review.fill_menu(menu)
        menu.addSeparator()
        for a in (self.signoff_action, self.reopen_action, self.refresh_action,
                  self.user_action):
            menu.addAction(a)

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        recent = [str(p) for p in (self.settings.value("recent", []) or [])]
        for path in recent[:MAX_RECENT]:
            self.recent_menu.addAction(path, lambda p=path: self.open_project(p))
        self.recent_menu.setEnabled(bool(recent))

    def _remember(self, path: Path) -> None:
        recent = [str(p) for p in (self.settings.value("recent", []) or [])]
        text = str(path)
        recent = [text] + [p for p in recent if p != text]
        self.settings.setValue("recent", recent[:MAX_RECENT])
        self._fill_recent()

    # -- projects ------------------------------------------------------------------------
    @property
    def project(self) -> Any:
        """The open project (None without one)."""
        return None if self.session is None else self.session.project

    @property
    def user(self) -> str:
        """The reviewer's name (the operating-system user unless chosen)."""
        from hemalens.engine.project.annotations import default_user

        return str(self.settings.value("review/user", "") or default_user())

    def choose_project(self) -> None:
        """Ask for a project folder (or a file in it, or a version-1 file) and open it."""
        start = str(Path(self.project.path).parent) if self.project is not None else ""
        path, _ = QFileDialog.getOpenFileName(
            self, "Open project — pick hemalens-project.json in the project folder", start,
            "HemaLens projects (hemalens-project.json cells.h5 *.h5);;All files (*)",
        )
        if path:
            self.open_project(path)

    def open_project(self, path: str | Path, *, show_errors: bool = True) -> bool:
        """Open the project at ``path``; the previous one stays open on failure.

        Parameters
        ----------
        path : str or Path
            Project folder, a file inside it, or a version-1 file (upgraded first).
        show_errors : bool
            Show a message box with the one-line reason when it cannot be opened.

        Returns
        -------
        bool
            Whether the project was opened.
        """
        from hemalens.engine.review.session import ReviewSession  # kept off start-up

        try:
            session = ReviewSession.open(path, user=self.user)
        except HemaLensError as exc:
            message = str(exc)
        except Exception as exc:  # an unexpected failure must not take the window down
            log.exception("opening %s failed", path)
            message = f"{path}: {one_line_message(exc)}"
        else:
            self.set_session(session)
            self._remember(Path(session.project.path))
            return True
        log.warning("cannot open project: %s", message)
        self.statusBar().showMessage(message, 15000)
        if show_errors:
            show_error(self, "Cannot open project", message)
        return False

    def set_session(self, session: Any) -> None:
        """Show ``session`` (None shows nothing) and close the one shown before."""
        previous, self.session = self.session, session
        if self.bridge is not None:
            self.bridge.close()
            self.bridge.deleteLater()
            self.bridge = None
        # The inspector first: the gallery's refresh selects a cell it must show.
        self.inspector.set_session(session)
        self.review.set_session(session)
        self.gallery.set_session(session)
        self.models.set_session(session)
        self.differential.set_session(session)
        self.calibration.set_session(session)
        self.ood.set_session(session)
        self.embedding.set_session(session)
        if previous is not None and previous is not session:
            previous.close()
        if session is not None:
            b = self.bridge = SessionBridge(session, self)
            b.cellsChanged.connect(self._cells_changed)
            b.classesChanged.connect(self._classes_changed)
            b.predictionsChanged.connect(self._predictions_changed)
            b.derivedChanged.connect(self._derived_changed)
            b.selectionChanged.connect(self._selection_changed)
            b.signoffChanged.connect(self._update_status)
            b.viewChanged.connect(self._view_changed)
        self._fill_review_menu()
        name = Path(session.project.path).stem if session is not None else ""
        read_only = session is not None and session.store.read_only
        self.setWindowTitle(f"{APP_TITLE} — {name}" + (" (read-only)" if read_only else "")
                            if name else APP_TITLE)
        if read_only:
            self.show_message(f"{session.project.path}: the project is read-only; you can "
                              "review it but edits cannot be saved")
        self._show_prediction_error()
        self._update_status()

    def _show_prediction_error(self) -> None:
        if self.session is not None and self.session.prediction_error:
            self.show_message(f"Predictions not shown — {self.session.prediction_error}")

    def close_project(self) -> None:
        """Close the shown project."""
        self.set_session(None)

    # -- session events ------------------------------------------------------------------------
    def _cells_changed(self, ids: np.ndarray) -> None:
        self.gallery.cells_changed(ids)
        if self.inspector.cell in set(np.asarray(ids).tolist()):
            self.inspector.refresh()
        self.differential.cells_changed(ids)
        self.embedding.cells_changed(ids)
        self._update_status()

    def _classes_changed(self) -> None:
        self.gallery.classes_changed()
        self.review.rebuild_class_actions()
        self._fill_review_menu()

    def _predictions_changed(self) -> None:
        self.gallery.set_session(self.session)
        self.inspector.refresh()
        self.differential.refresh()
        self.calibration.refresh()
        self.embedding.predictions_changed()

    def _derived_changed(self) -> None:
        """Another program wrote models or predictions: show them."""
        self.models.refresh()
        self.inspector.explanation.reload_model()
        self.embedding.refresh_sources()
        self.show_message("The project changed on disk (models or predictions): updated")

    def _derived_written(self) -> None:
        """Reload after this window wrote models or predictions (a job ended)."""
        if self.session is None:
            return
        self.session.load_predictions()
        self._show_prediction_error()
        if self.bridge is not None:
            self.bridge.note_derived_written()
        self.inspector.explanation.reload_model()

    def _selection_changed(self, ids: Any, source: Any) -> None:
        self.gallery.selection_changed(ids, source)
        self.embedding.selection_changed(ids, source)

    def _view_changed(self, source: Any) -> None:
        if source is not self.gallery and source is not None:
            self.gallery.refresh()

    def _cell_selected(self, cell: int) -> None:
        self.inspector.show_cell(cell)

    def _targets(self) -> tuple[np.ndarray, Any]:
        # a selection made in the embedding view: the keys act on all of it, nothing moves on
        if self.embedding.owns_selection and self.session is not None \
                and self.session.selection.size:
            return self.session.selection, lambda _cells: None
        return self.gallery.targets(), self.gallery.advance

    def _context_menu(self, cell: int, where: Any) -> None:
        menu = QMenu(self)
        self.review.fill_menu(menu)
        menu.exec(where)

    # -- review ---------------------------------------------------------------------------------
    def toggle_help(self) -> None:
        """Show or hide the keys overlay."""
        self.help.toggle(self.review.help_rows())

    def show_message(self, text: str) -> None:
        """Show a one-line message in the status bar."""
        self.statusBar().showMessage(text, 12000)

    def _choose_sample(self, title: str, samples: list[str]) -> str | None:
        if not samples:
            self.show_message("No sample to choose")
            return None
        current = self.gallery.sample_combo.currentData()
        start = samples.index(current) if current in samples else 0
        sample, ok = QInputDialog.getItem(self, title, "Sample:", samples, start, False)
        return sample if ok else None

    def sign_off(self) -> None:
        """Sign a sample off, or say in a dialog why it cannot be."""
        s = self.session
        if s is None:
            return
        sample = self._choose_sample("Sign off sample", s.sample_list)
        if sample is None:
            return
        blockers = s.signoff_blockers(sample)
        if blockers:
            QMessageBox.warning(self, "Cannot sign off",
                                f"Sample {sample} cannot be signed off yet:\n\n• "
                                + "\n• ".join(blockers))
            self.show_message(f"{sample}: " + "; ".join(blockers))
            return
        if not ask(self, "Sign off", f"Sign sample {sample} off as {s.user}? Its cells are "
                                     "then locked against edits."):
            return
        try:
            counts = s.sign_off(sample)
        except HemaLensError as exc:
            show_error(self, "Cannot sign off", str(exc))
            return
        self.show_message(f"Sample {sample} signed off by {s.user}: {counts['counted']} cells "
                          f"counted, {counts['relabelled']} relabelled")

    def reopen_sample(self) -> None:
        """Reopen a signed-off sample (asks for the reason, which is recorded)."""
        s = self.session
        if s is None:
            return
        sample = self._choose_sample("Reopen sample", sorted(s.signed))
        if sample is None:
            return
        reason, ok = QInputDialog.getText(self, "Reopen sample", "Why is it reopened?")
        if not ok:
            return
        try:
            s.reopen(sample, reason=reason)
        except HemaLensError as exc:
            show_error(self, "Cannot reopen", str(exc))

    def choose_user(self) -> None:
        """Set the reviewer's name recorded with every edit."""
        name, ok = QInputDialog.getText(self, "Reviewer", "Name recorded with your edits:",
                                        text=self.user)
        if ok and name.strip():
            self.settings.setValue("review/user", name.strip())
            if self.session is not None:
                self.session.user = name.strip()
            self._update_status()

    def _update_status(self, *_args: Any) -> None:
        s = self.session
        if s is None:
            self.project_label.setText("No project open")
            return
        passed = int(s.qc.sum())
        signed = len(s.signed)
        ro = " · read-only" if s.store.read_only else ""
        self.project_label.setText(
            f"{Path(s.project.path).name} · {s.n_cells:,} objects · {passed:,} cells passed QC"
            f" · {signed} of {len(s.sample_list)} samples signed off · {s.user}{ro}")

    # -- import, export ------------------------------------------------------------------------
    def import_images(self) -> None:
        """Open the import dialog; the new project opens when the import is done."""
        from hemalens.gui.import_dialog import ImportDialog

        dialog = ImportDialog(self)
        dialog.imported.connect(lambda path: self.open_project(path))
        dialog.show()

    def export_report(self) -> None:
        """Export the review report (CSV, HTML, PDF) to a folder."""
        if self.session is None:
            return
        from hemalens.gui.report_export import export_report_dialog

        export_report_dialog(self, self.session)

    def export_csv(self) -> None:
        """Export every cell as CSV (in the background)."""
        if self.session is None:
            return
        out, _ = QFileDialog.getSaveFileName(self, "Export cells", "cells.csv", "CSV (*.csv)")
        if not out:
            return
        from hemalens.engine.project.export import export_cells_csv
        from hemalens.gui.workers import start_job

        def run(project: str, dest: str, progress: Any = None) -> int:
            return export_cells_csv(project, dest, force=True)

        start_job(run, str(self.session.project.path), out, title="Exporting cells",
                  parent=self, show_dialog=False,
                  on_result=lambda n: self.show_message(f"Exported {n:,} cells to {out}"))

    def open_demo_project(self) -> Job | None:
        """Open the demo project, building it first if it is missing or broken."""
        from hemalens.gui import demo

        if self.demo_job is not None and self.demo_job.is_running:
            return self.demo_job
        path = demo.demo_project_path()
        if path.exists() and self.open_project(path, show_errors=False):
            return None
        self.demo_job = demo.ensure_demo_project(self, self.open_project, path, force=True)
        if self.demo_job is not None:
            self.demo_action.setEnabled(False)
            self.demo_job.ended.connect(self._demo_ended)
        return self.demo_job

    def _demo_ended(self, _state: str) -> None:
        self.demo_action.setEnabled(True)

    # -- misc --------------------------------------------------------------------------------
    def show_about(self) -> None:
        """Show the version."""
        QMessageBox.about(
            self, f"About {APP_TITLE}",
            f"<b>{APP_TITLE}</b> {__version__}<br>Review blood-cell classifications with "
            "calibrated confidence and explanations.",
        )

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        """Ask before cancelling running jobs; then wait for them, save the layout, close."""
        running = active_jobs(transient=False)
        if running and not ask(self, "Jobs are running",
                               f"{len(running)} job(s) are running ("
                               + ", ".join(j.title for j in running[:3])
                               + "). Cancel them and quit? Nothing they were writing is kept."):
            event.ignore()
            return
        if not cancel_all(CLOSE_WAIT_MS):
            log.warning("jobs still running after %d ms at close", CLOSE_WAIT_MS)
        self._save_settings()
        self.set_session(None)
        super().closeEvent(event)
