"""The import dialog: files, a folder or a manifest into a new project, previewed first.

Each input is probed (its modality detected, its pixel size and wavelength read where it
states them) and listed; what a file does not say the user gives once for the batch
(pixel size, wavelength, class label, sample). One frame of the chosen input is shown
segmented with the engine's own preview (``engine.preview.segment_preview``: the import's
background subtraction and per-frame segmentation), contours green where the cell passes
QC and red where it is rejected, and it follows the threshold and QC limits as they are
changed. "Import" runs ``segment_inputs`` as a job with progress and cancel; the new
project opens when it is done.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from hemalens.gui.tables import read_only_table
from hemalens.gui.workers import Job, configured_cluster, one_line_message, start_job

SUFFIXES = (".tif", ".tiff", ".npy", ".npz", ".h5", ".hdf5", ".png", ".jpg", ".jpeg")


def probe_job(paths: list[str], progress: Any = None) -> list[dict[str, Any]]:
    """Probe every input (in the worker): modality, frames, stated pixel size, wavelength."""
    from hemalens.engine.io.sources import probe_input

    out = []
    for k, p in enumerate(paths):
        try:
            out.append({"path": p, **probe_input(Path(p))})
        except Exception as exc:  # noqa: BLE001 - listed with its reason
            out.append({"path": p, "error": one_line_message(exc)})
        if progress is not None:
            progress.set_progress(k + 1, len(paths))
    return out


def preview_job(spec: Any, index: int, settings: Any, progress: Any = None) -> Any:
    """Segment one frame as the import will (in the worker)."""
    from hemalens.engine.preview import segment_preview

    return segment_preview(spec, index, settings)


def import_job(specs: list[Any], out: str, settings: Any, label: str | None, force: bool,
               progress: Any = None, cluster: Any = None) -> dict[str, Any]:
    """Import (in the worker; on the configured Dask scheduler when there is one)."""
    from hemalens.engine.ingest import segment_inputs

    return segment_inputs(specs, out, settings, default_label=label, progress=progress,
                          overwrite=force, cluster=cluster)


def _number(info: dict[str, Any], key: str, fmt: str) -> str:
    v = info.get(key)
    return format(v, fmt) if isinstance(v, (int, float)) else "—"


class ImportDialog(QDialog):
    """Choose inputs, check them on a preview, import them into a new project.

    Signals
    -------
    imported(str)
        The new project's path, when the import is done.
    """

    imported = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Import images into a new project")
        self.resize(1150, 720)
        self.inputs: list[dict[str, Any]] = []
        self.manifest: Path | None = None
        self.probe: Job | None = None
        self.preview: Job | None = None
        self.job: Job | None = None
        self._again = False

        self.table = read_only_table(
            self, ["File", "Detected", "Frames", "Pixel µm", "Wavelength nm"],
            select_rows=True, single=True)
        add_files = QPushButton("Add files…", self)
        add_folder = QPushButton("Add folder…", self)
        add_manifest = QPushButton("Manifest…", self)
        clear = QPushButton("Clear", self)
        add_files.clicked.connect(self.choose_files)
        add_folder.clicked.connect(self.choose_folder)
        add_manifest.clicked.connect(self.choose_manifest)
        clear.clicked.connect(lambda: self.set_inputs([]))

        self.modality = QComboBox(self)
        for text, value in (("as detected", "auto"), ("phase", "phase"),
                            ("off-axis hologram", "hologram"), ("QLSI", "qlsi"),
                            ("stained RGB", "rgb")):
            self.modality.addItem(text, value)
        self.pixel = QDoubleSpinBox(self)
        self.pixel.setRange(0.0, 50.0)
        self.pixel.setDecimals(4)
        self.pixel.setSpecialValueText("from the file")
        self.pixel.setSuffix(" µm")
        self.wavelength = QDoubleSpinBox(self)
        self.wavelength.setRange(0.0, 2000.0)
        self.wavelength.setDecimals(1)
        self.wavelength.setSpecialValueText("from the file")
        self.wavelength.setSuffix(" nm")
        self.label = QLineEdit(self)
        self.label.setPlaceholderText("none (a clinical sample)")
        self.sample = QLineEdit(self)
        self.sample.setPlaceholderText("the file name")
        self.threshold = QDoubleSpinBox(self)
        self.threshold.setRange(0.01, 5.0)
        self.threshold.setDecimals(2)
        self.threshold.setValue(0.1)
        self.threshold.setSuffix(" rad")
        self.threshold.setToolTip("Lowest threshold; the import raises it to 3 σ of each "
                                  "block's background noise")
        self.min_d = QDoubleSpinBox(self)
        self.min_d.setRange(0.0, 100.0)
        self.min_d.setValue(4.0)
        self.min_d.setSuffix(" µm")
        self.max_d = QDoubleSpinBox(self)
        self.max_d.setRange(0.0, 200.0)
        self.max_d.setValue(20.0)
        self.max_d.setSuffix(" µm")
        self.circ = QDoubleSpinBox(self)
        self.circ.setRange(0.0, 1.0)
        self.circ.setDecimals(2)
        self.circ.setSingleStep(0.01)
        self.circ.setValue(0.85)
        self.border = QCheckBox("Reject cells touching the border", self)
        self.border.setChecked(True)
        self.frame = QSpinBox(self)
        self.frame.setRange(0, 0)
        self.out = QLineEdit(self)
        self.out.setPlaceholderText("…/NAME.hemalens")
        browse = QPushButton("…", self)
        browse.clicked.connect(self.choose_output)
        self.force = QCheckBox("Replace what is there", self)

        form = QFormLayout()
        form.addRow("Modality", self.modality)
        form.addRow("Pixel size", self.pixel)
        form.addRow("Wavelength", self.wavelength)
        form.addRow("Class label", self.label)
        form.addRow("Sample (run)", self.sample)
        form.addRow(QLabel("<b>Segmentation and QC</b>", self))
        form.addRow("Threshold", self.threshold)
        form.addRow("Smallest diameter", self.min_d)
        form.addRow("Largest diameter", self.max_d)
        form.addRow("Smallest circularity", self.circ)
        form.addRow(self.border)
        out_row = QHBoxLayout()
        out_row.addWidget(self.out, 1)
        out_row.addWidget(browse)
        form.addRow("New project", out_row)
        form.addRow(self.force)

        self.view = pg.GraphicsLayoutWidget(self)
        self.plot = self.view.addPlot()
        self.plot.setAspectLocked(True)
        self.plot.invertY(True)
        self.image = pg.ImageItem()
        self.plot.addItem(self.image)
        self.passed = pg.PlotDataItem(pen=pg.mkPen((0, 158, 115), width=2), connect="finite")
        self.rejected = pg.PlotDataItem(pen=pg.mkPen((213, 94, 0), width=2), connect="finite")
        self.plot.addItem(self.passed)
        self.plot.addItem(self.rejected)
        self.preview_info = QLabel("Add inputs to see a preview.", self)
        self.preview_info.setWordWrap(True)

        buttons = QHBoxLayout()
        for b in (add_files, add_folder, add_manifest, clear):
            buttons.addWidget(b)
        buttons.addStretch(1)
        left = QWidget(self)
        lv = QVBoxLayout(left)
        lv.setContentsMargins(0, 0, 0, 0)
        lv.addLayout(buttons)
        lv.addWidget(self.table, 1)
        lv.addLayout(form)
        right = QWidget(self)
        rv = QVBoxLayout(right)
        rv.setContentsMargins(0, 0, 0, 0)
        fr = QHBoxLayout()
        fr.addWidget(QLabel("Frame", self))
        fr.addWidget(self.frame)
        fr.addStretch(1)
        rv.addLayout(fr)
        rv.addWidget(self.view, 1)
        rv.addWidget(self.preview_info)
        split = QSplitter(Qt.Orientation.Horizontal, self)
        split.addWidget(left)
        split.addWidget(right)
        split.setSizes([520, 620])
        self.status = QLabel("", self)
        self.import_button = QPushButton("Import", self)
        self.import_button.setDefault(True)
        cancel = QPushButton("Close", self)
        cancel.clicked.connect(self.reject)
        self.import_button.clicked.connect(self.start_import)
        bottom = QHBoxLayout()
        bottom.addWidget(self.status, 1)
        bottom.addWidget(self.import_button)
        bottom.addWidget(cancel)
        layout = QVBoxLayout(self)
        layout.addWidget(split, 1)
        layout.addLayout(bottom)

        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(300)
        self._debounce.timeout.connect(self.update_preview)
        for w in (self.pixel, self.wavelength, self.threshold, self.min_d, self.max_d,
                  self.circ, self.frame):
            w.valueChanged.connect(lambda *_a: self._debounce.start())
        self.modality.currentIndexChanged.connect(lambda *_a: self._debounce.start())
        self.border.toggled.connect(lambda *_a: self._debounce.start())
        self.table.itemSelectionChanged.connect(self._input_chosen)
        self._enable()

    # -- inputs ----------------------------------------------------------------------------
    def choose_files(self) -> None:
        """Add input files."""
        files, _ = QFileDialog.getOpenFileNames(
            self, "Input files", "", "Images (*.tif *.tiff *.npy *.npz *.h5 *.hdf5 *.png "
            "*.jpg *.jpeg);;All files (*)")
        if files:
            self.set_inputs([i["path"] for i in self.inputs] + files)

    def choose_folder(self) -> None:
        """Add every image of a folder."""
        folder = QFileDialog.getExistingDirectory(self, "Folder of images")
        if folder:
            files = sorted(str(p) for p in Path(folder).iterdir()
                           if p.suffix.lower() in SUFFIXES)
            self.set_inputs([i["path"] for i in self.inputs] + files)

    def choose_manifest(self) -> None:
        """Use a manifest.csv (files with their metadata and labels)."""
        path, _ = QFileDialog.getOpenFileName(self, "Manifest", "", "CSV (*.csv)")
        if path:
            self.set_manifest(Path(path))

    def set_manifest(self, path: Path) -> None:
        """List the inputs of a manifest (its metadata is used as it stands)."""
        from hemalens.engine.io import read_manifest

        try:
            specs = read_manifest(path)
        except Exception as exc:  # noqa: BLE001 - one line in the dialog
            self.status.setText(one_line_message(exc))
            return
        self.manifest = path
        self.set_inputs([str(s.path) for s in specs])
        self._specs_from_manifest = specs
        if not self.out.text():
            self.out.setText(str(path.parent / f"{path.parent.name}.hemalens"))

    def set_inputs(self, paths: list[str]) -> Job | None:
        """List these inputs and probe them in the background."""
        if not paths:
            self.manifest = None
        self.inputs = [{"path": p} for p in dict.fromkeys(paths)]
        self._fill()
        if self.inputs and not self.out.text():
            first = Path(self.inputs[0]["path"])
            self.out.setText(str(first.parent / f"{first.parent.name or 'cells'}.hemalens"))
        if not self.inputs:
            return None
        self.probe = start_job(probe_job, [i["path"] for i in self.inputs],
                               title="Reading the inputs", parent=self, show_dialog=False,
                               on_result=self._probed)
        return self.probe

    def _probed(self, results: list[dict[str, Any]]) -> None:
        by_path = {r["path"]: r for r in results}
        self.inputs = [by_path.get(i["path"], i) for i in self.inputs]
        self._fill()
        if self.inputs and not self.table.selectedItems():
            self.table.selectRow(0)
        self._debounce.start()

    def _fill(self) -> None:
        self.table.setRowCount(len(self.inputs))
        for r, info in enumerate(self.inputs):
            err = info.get("error")

            values = [Path(info["path"]).name, err or info.get("modality", "…"),
                      _number(info, "n_frames", "d"), _number(info, "pixel_size_um", ".4g"),
                      _number(info, "wavelength_nm", ".1f")]
            for c, text in enumerate(values):
                item = QTableWidgetItem(text)
                item.setToolTip(err or info["path"])
                if err:
                    item.setForeground(Qt.GlobalColor.red)
                self.table.setItem(r, c, item)
        self._enable()

    def _input_chosen(self) -> None:
        info = self.current_input()
        n = int(info.get("n_frames", 1)) if info else 1
        self.frame.setRange(0, max(0, n - 1))
        self._debounce.start()

    def current_input(self) -> dict[str, Any] | None:
        """Return the input shown in the preview."""
        rows = self.table.selectionModel().selectedRows()
        return self.inputs[rows[0].row()] if rows and rows[0].row() < len(self.inputs) else None

    # -- what the controls say ---------------------------------------------------------------
    def settings(self) -> Any:
        """Return the segmentation settings of the controls."""
        from hemalens.engine.segment import SegmentSettings

        return replace(SegmentSettings(), threshold_rad=self.threshold.value(),
                       min_diameter_um=self.min_d.value(),
                       max_diameter_um=self.max_d.value() or None,
                       min_circularity=self.circ.value(), reject_border=self.border.isChecked())

    def specs(self) -> list[Any]:
        """Return the inputs as specs, the dialog's values filling what the files do not say."""
        from hemalens.engine.io import make_spec

        if self.manifest is not None:
            return list(self._specs_from_manifest)
        pixel = self.pixel.value() or None
        wavelength = self.wavelength.value() or None
        label = self.label.text().strip() or None
        sample = self.sample.text().strip() or None
        return [make_spec(i["path"], modality=str(self.modality.currentData()),
                          pixel_size_um=pixel, wavelength_nm=wavelength, given_label=label,
                          run=sample) for i in self.inputs if "error" not in i]

    def _enable(self, *_args: Any) -> None:
        ready = bool(self.specs_ready())
        self.import_button.setEnabled(ready and not (self.job and self.job.is_running))

    def specs_ready(self) -> list[Any]:
        """Return the inputs that can be imported (probed without error)."""
        return [i for i in self.inputs if "error" not in i and "modality" in i]

    # -- preview ------------------------------------------------------------------------------
    def update_preview(self) -> Job | None:
        """Segment the shown frame again with the current controls (latest wins)."""
        info = self.current_input()
        if info is None or "error" in info or "modality" not in info:
            return None
        if self.preview is not None and self.preview.is_running:
            self._again = True
            return None
        from hemalens.engine.io import make_spec

        if self.manifest is not None:
            spec = next(s for s in self._specs_from_manifest if str(s.path) == info["path"])
        else:
            spec = make_spec(info["path"], modality=str(self.modality.currentData()),
                             pixel_size_um=self.pixel.value() or None,
                             wavelength_nm=self.wavelength.value() or None)
        self.preview_info.setText("Segmenting the frame…")
        self.preview = start_job(preview_job, spec, self.frame.value(), self.settings(),
                                 title="Import preview", parent=self, show_dialog=False,
                                 show_errors=False, transient=True,
                                 on_result=self._show_preview,
                                 on_error=lambda e: self.preview_info.setText(
                                     one_line_message(e)))
        self.preview.ended.connect(self._preview_ended)
        return self.preview

    def _preview_ended(self, _state: str) -> None:
        if self._again:
            self._again = False
            self.update_preview()

    def _show_preview(self, p: Any) -> None:
        frame = np.asarray(p.frame)
        if frame.ndim == 3:
            self.image.setImage(frame, autoLevels=False, levels=(0, 255))
        else:
            finite = frame[np.isfinite(frame)]
            lo, hi = np.percentile(finite, [1, 99.5]) if finite.size else (0.0, 1.0)
            self.image.setImage(np.nan_to_num(frame), levels=(float(lo), float(max(hi, lo + 1e-6))))
        qc = np.asarray(p.cells.columns["qc_pass"], bool) if len(p.cells) else np.zeros(0, bool)
        for item, keep in ((self.passed, qc), (self.rejected, ~qc)):
            xs, ys = [], []
            for c, ok in zip(p.cells.contours, keep, strict=True):
                if ok:
                    pts = np.asarray(c).reshape(-1, 2)
                    pts = np.vstack([pts, pts[:1]])
                    xs += [*pts[:, 0].tolist(), np.nan]
                    ys += [*pts[:, 1].tolist(), np.nan]
            item.setData(np.asarray(xs, float), np.asarray(ys, float))
        reasons: dict[str, int] = {}
        for r in np.asarray(p.cells.columns.get("qc_reason", []))[~qc] if len(p.cells) else []:
            key = r.decode() if isinstance(r, bytes) else str(r)
            reasons[key] = reasons.get(key, 0) + 1
        rej = ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())) or "none"
        thr = f"; threshold {p.threshold_rad:.2f} rad" if p.threshold_rad else ""
        self.preview_info.setText(
            f"{p.modality}, frame {p.index + 1} of {p.n_frames}: {int(qc.sum())} cells pass "
            f"QC (green), {int((~qc).sum())} rejected (orange: {rej}){thr}")

    # -- import -------------------------------------------------------------------------------
    def choose_output(self) -> None:
        """Choose the new project's folder name."""
        path, _ = QFileDialog.getSaveFileName(self, "New project", self.out.text(),
                                              "HemaLens project (*.hemalens)")
        if path:
            self.out.setText(path if path.endswith(".hemalens") else path + ".hemalens")

    def start_import(self) -> Job | None:
        """Import the inputs in the background; ``imported`` follows when done."""
        out = self.out.text().strip()
        if not out:
            self.status.setText("Choose where the new project goes")
            return None
        specs = self.specs()
        if not specs:
            self.status.setText("No readable input")
            return None
        label = self.label.text().strip() or None
        self.job = start_job(import_job, specs, out, self.settings(), label,
                             self.force.isChecked(), title="Importing images", parent=self,
                             show_dialog=False, on_result=self._imported,
                             cluster=configured_cluster())
        self.job.progress.connect(self._progress)
        self.job.ended.connect(self._enable)
        self._enable()
        return self.job

    def _progress(self, done: int, total: int | None) -> None:
        self.status.setText(f"Segmenting: {done} of {total} frames" if total else "Segmenting…")

    def _imported(self, report: dict[str, Any]) -> None:
        failed = report.get("failed_inputs") or []
        text = (f"{report['cells']:,} cells passed QC of {report['objects']:,} objects in "
                f"{report['frames']:,} frames")
        if failed:
            text += f"; {len(failed)} input(s) failed: " + "; ".join(f["error"] for f in failed)
        for warning in report.get("warnings") or []:
            text += f"; warning: {warning}"
        self.status.setText(text)
        if report.get("project"):
            self.imported.emit(str(report["project"]))
            if not failed:
                self.accept()
