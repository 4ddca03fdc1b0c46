"""The models panel: the project's classifiers, training with live curves, predict, evaluate.

The list is read without torch (``model_index.model_summaries``). Training, prediction and
evaluation run as jobs (``gui.workers.start_job``) with progress and cancel; a training
reports every epoch (``engine.jobs.report``) and the curves - training and validation
loss, validation macro-F1 - grow while it runs. When a job writes to the project the
panel emits ``changed`` so the window reloads the predictions.
"""

from __future__ import annotations

import math
from typing import Any

import pyqtgraph as pg
from PySide6.QtCore import Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from hemalens.gui.tables import read_only_table
from hemalens.gui.workers import Job, configured_cluster, one_line_message, start_job

COLUMNS = ("", "Model", "Arch", "Val F1", "Test F1", "T", "ECE → calibrated", "Created")


def _num(v: Any, fmt: str = ".3f") -> str:
    return format(v, fmt) if isinstance(v, (int, float)) and math.isfinite(v) else "—"


class TrainDialog(QDialog):
    """The main training parameters (the rest keep the engine's defaults)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Train a classifier")
        self.arch = QComboBox(self)
        self.arch.addItem("LeNet5 (32 px, fast)", "lenet5")
        self.arch.addItem("AlexNet (64 px on a CPU)", "alexnet")
        self.epochs = QSpinBox(self)
        self.epochs.setRange(1, 500)
        self.epochs.setValue(30)
        self.patience = QSpinBox(self)
        self.patience.setRange(1, 100)
        self.patience.setValue(5)
        self.seed = QSpinBox(self)
        self.seed.setRange(0, 10**6)
        self.passes = QSpinBox(self)
        self.passes.setRange(2, 500)
        self.passes.setValue(100)
        self.name = QLineEdit(self)
        self.name.setPlaceholderText("arch and time")
        form = QFormLayout(self)
        form.addRow("Architecture", self.arch)
        form.addRow("Most epochs", self.epochs)
        form.addRow("Early-stopping patience", self.patience)
        form.addRow("Seed", self.seed)
        form.addRow("MC-dropout passes (calibration)", self.passes)
        form.addRow("Name", self.name)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                   | QDialogButtonBox.StandardButton.Cancel, parent=self)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def options(self) -> dict[str, Any]:
        """Return the chosen values."""
        return {"arch": self.arch.currentData(), "epochs": self.epochs.value(),
                "patience": self.patience.value(), "seed": self.seed.value(),
                "passes": self.passes.value(), "name": self.name.text().strip() or None}


def train_job(project: str, options: dict[str, Any], progress: Any = None) -> dict[str, Any]:
    """Train in the worker (torch is imported here, never on the GUI thread)."""
    from hemalens.engine.train import TrainConfig
    from hemalens.engine.workflows.train import train_project

    config = TrainConfig(arch=options["arch"], epochs=options["epochs"],
                         patience=options["patience"], seed=options["seed"])
    return train_project(project, config, name=options.get("name"), passes=options["passes"],
                         progress=progress)


def predict_job(project: str, model: str | None, passes: int, progress: Any = None,
                cluster: Any = None) -> dict[str, Any]:
    """Predict every cell with a model (in the worker; on the configured scheduler)."""
    from hemalens.engine.workflows.predict import predict_project

    return predict_project(project, model_name=model, passes=passes, progress=progress,
                           cluster=cluster)


def activate_job(project: str, model: str, progress: Any = None) -> None:
    """Make a model active (in the worker: the model store imports torch)."""
    from hemalens.engine.models.store import set_active_model

    set_active_model(project, model)


def delete_job(project: str, model: str, progress: Any = None) -> None:
    """Delete a model with its predictions and explanations (in the worker)."""
    from hemalens.engine.models.store import delete_model

    delete_model(project, model)


class ModelsPanel(QWidget):
    """The project's models and the jobs that make and use them.

    Signals
    -------
    changed()
        A job of this panel wrote models or predictions.
    """

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session: Any = None
        self.rows: list[dict[str, Any]] = []
        self.train_job_: Job | None = None
        self.table = read_only_table(self, COLUMNS, select_rows=True, single=True)
        self.train_button = QPushButton("Train…", self)
        self.active_button = QPushButton("Make active", self)
        self.predict_button = QPushButton("Predict", self)
        self.delete_button = QPushButton("Delete", self)
        self.train_button.setToolTip("Train a classifier on the labelled cells")
        self.active_button.setToolTip("Show this model's predictions and use it for "
                                      "explanations")
        self.predict_button.setToolTip("Predict every cell with the selected model (100 MC "
                                       "passes, calibrated)")
        self.delete_button.setToolTip("Delete the model with its predictions and explanations")
        buttons = QHBoxLayout()
        for b in (self.train_button, self.active_button, self.predict_button,
                  self.delete_button):
            buttons.addWidget(b)
        self.curve_label = QLabel("", self)
        self.curves = pg.PlotWidget(self)
        self.curves.setBackground(None)
        self.curves.setLabel("bottom", "epoch")
        self.curves.addLegend(offset=(5, 5))
        self.curves.setMinimumHeight(150)
        self.curves.hide()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.table, 1)
        layout.addLayout(buttons)
        layout.addWidget(self.curve_label)
        layout.addWidget(self.curves, 1)
        self.train_button.clicked.connect(self.train)
        self.active_button.clicked.connect(self.make_active)
        self.predict_button.clicked.connect(self.predict)
        self.delete_button.clicked.connect(self.delete)
        self.table.itemSelectionChanged.connect(self._enable)
        self.epochs: list[dict[str, Any]] = []
        self._actions: list[QAction] = []
        self.set_session(None)

    # -- state --------------------------------------------------------------------------
    def menu_actions(self) -> list[QAction]:
        """Return the Model menu's actions."""
        if not self._actions:
            for text, slot, tip in (
                ("&Train classifier…", self.train, "Train on the labelled cells"),
                ("&Predict with the active model", lambda: self.predict(active=True),
                 "Predict every cell (100 MC passes, calibrated)"),
            ):
                a = QAction(text, self)
                a.setStatusTip(tip)
                a.triggered.connect(slot)
                self._actions.append(a)
        return self._actions

    def set_session(self, session: Any) -> None:
        """List this session's models (None: nothing)."""
        self.session = session
        self.refresh()

    def refresh(self) -> None:
        """Read the model list again."""
        from hemalens.engine.project.model_index import model_summaries

        self.rows = []
        if self.session is not None:
            try:
                self.rows = model_summaries(self.session.project)
            except Exception as exc:  # listing must never take the window down
                self.curve_label.setText(f"Cannot list the models: {one_line_message(exc)}")
        self.table.setRowCount(len(self.rows))
        for r, row in enumerate(self.rows):
            texts = ["●" if row.get("active") else "", row["name"], str(row.get("arch", "?")),
                     _num(row.get("val_macro_f1")), _num(row.get("test_f1")),
                     _num(row.get("temperature"), ".2f"),
                     f"{_num(row.get('ece'))} → {_num(row.get('ece_ts'))}",
                     str(row.get("created", ""))[:16].replace("T", " ")]
            for c, text in enumerate(texts):
                item = QTableWidgetItem(text)
                if "damaged" in row:
                    item.setToolTip(row["damaged"])
                self.table.setItem(r, c, item)
        self._enable()

    def _enable(self) -> None:
        has = self.session is not None
        editable = has and not self.session.store.read_only
        chosen = self.selected() is not None
        self.train_button.setEnabled(editable and not self.training)
        self.active_button.setEnabled(editable and chosen)
        self.predict_button.setEnabled(editable and (chosen or bool(self.rows)))
        self.delete_button.setEnabled(editable and chosen)
        for a in self._actions:
            a.setEnabled(editable)

    @property
    def training(self) -> bool:
        """Whether a training of this panel is running."""
        return self.train_job_ is not None and self.train_job_.is_running

    def selected(self) -> str | None:
        """Return the selected model's name."""
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        return self.rows[rows[0].row()]["name"] if rows else None

    # -- jobs ------------------------------------------------------------------------------
    def _path(self) -> str:
        return str(self.session.project.path)

    def _done(self, text: str) -> None:
        self.refresh()
        self.changed.emit()
        self.window().statusBar().showMessage(text, 12000)

    def train(self, options: dict[str, Any] | None = None) -> Job | None:
        """Ask for the parameters (unless given) and train in the background."""
        if self.session is None or self.training:
            return None
        if not isinstance(options, dict):
            dialog = TrainDialog(self)
            if dialog.exec() != QDialog.DialogCode.Accepted:
                return None
            options = dialog.options()
        self.epochs = []
        self.curves.clear()
        self.curves.show()
        self.curve_label.setText(f"Training {options['arch']}…")
        job = start_job(train_job, self._path(), options, title="Training a classifier",
                        parent=self, show_dialog=False,
                        on_result=lambda r: self._done(
                            f"Trained {r['model']}: validation macro-F1 "
                            f"{r['val_macro_f1']:.3f}, T = {r['calibration']['temperature']:.2f}"))
        job.reported.connect(self._epoch)
        job.ended.connect(self._train_ended)
        self.train_job_ = job
        self._enable()
        return job

    def _epoch(self, record: dict[str, Any]) -> None:
        if record.get("kind") != "epoch":
            return
        self.epochs.append(record)
        e = [r["epoch"] for r in self.epochs]
        self.curves.clear()
        for key, colour, name in (("train_loss", (230, 159, 0), "training loss"),
                                  ("val_loss", (86, 180, 233), "validation loss"),
                                  ("val_macro_f1", (0, 114, 178), "validation macro-F1")):
            self.curves.plot(e, [r[key] for r in self.epochs], pen=pg.mkPen(colour, width=2),
                             symbol="o", symbolSize=5, symbolBrush=colour, name=name)
        last = self.epochs[-1]
        self.curve_label.setText(f"Epoch {last['epoch']}: validation macro-F1 "
                                 f"{last['val_macro_f1']:.3f}")

    def _train_ended(self, state: str) -> None:
        if state != "done":
            self.curve_label.setText(f"Training {state}"
                                     + (": nothing was saved" if state == "cancelled" else ""))
        self._enable()

    def predict(self, active: bool = False) -> Job | None:
        """Predict every cell with the selected (or the active) model."""
        if self.session is None:
            return None
        model = None if active else self.selected()
        return start_job(predict_job, self._path(), model, 100, title="Predicting every cell",
                         parent=self, show_dialog=False, cluster=configured_cluster(),
                         on_result=lambda r: self._done(
                             f"Predicted {r['cells']:,} cells with {r['model']}"))

    def make_active(self) -> Job | None:
        """Make the selected model the active one."""
        model = self.selected()
        if self.session is None or model is None:
            return None
        return start_job(activate_job, self._path(), model, title="Switching the model",
                         parent=self, show_dialog=False,
                         on_result=lambda _r: self._done(f"{model} is the active model"))

    def delete(self) -> Job | None:
        """Delete the selected model (after asking)."""
        from hemalens.gui.main_window import ask

        model = self.selected()
        if self.session is None or model is None:
            return None
        if not ask(self, "Delete model", f"Delete {model} with its predictions and "
                                         "explanations? This cannot be undone."):
            return None
        return start_job(delete_job, self._path(), model, title="Deleting a model",
                         parent=self, show_dialog=False,
                         on_result=lambda _r: self._done(f"Deleted {model}"))
