"""The out-of-distribution panel: how confident the model is on what it was not made for.

"Check" runs ``workflows.review.ood_review`` in the background: the model's test cells
(in distribution) against simulated erythrocytes, defocused cells, digits and noise
rendered like the project's patches (paper 1, §5.1). For the chosen measure the panel
draws each set's confidence as a box (quartiles, whiskers at min and max) and lists the
AUROC of "leukocyte vs set", the Bonferroni-corrected Mann-Whitney p against the
leukocytes, and the Kruskal-Wallis test over all sets.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from hemalens.gui.tables import read_only_table
from hemalens.gui.workers import Job, start_job


def ood_job(project: str, n: int, passes: int, progress: Any = None) -> dict[str, Any]:
    """Run the OOD check in the worker."""
    from hemalens.engine.workflows.review import ood_review

    return ood_review(project, n=n, passes=passes, progress=progress)


class OodPanel(QWidget):
    """Confidence on OOD sets per measure, with the test results."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session: Any = None
        self.result: dict[str, Any] | None = None
        self.job: Job | None = None
        self.measure = QComboBox(self)
        self.n = QSpinBox(self)
        self.n.setRange(20, 2000)
        self.n.setValue(200)
        self.n.setToolTip("Cells per set")
        self.run_button = QPushButton("Check", self)
        self.run_button.setToolTip("Render the OOD sets and score them with the model "
                                   "(in the background)")
        self.info = QLabel("Run a check to compare the model's confidence on leukocytes with "
                           "erythrocytes, defocused cells, digits and noise.", self)
        self.info.setWordWrap(True)
        self.plot = pg.PlotWidget(self)
        self.plot.setBackground(None)
        self.plot.setLabel("left", "confidence")
        self.table = read_only_table(self, ["Set", "AUROC (leukocyte vs set)",
                                            "p (Mann-Whitney, Bonferroni)"])
        top = QHBoxLayout()
        top.addWidget(QLabel("Measure:", self))
        top.addWidget(self.measure)
        top.addWidget(QLabel("Cells per set:", self))
        top.addWidget(self.n)
        top.addWidget(self.run_button)
        top.addStretch(1)
        body = QHBoxLayout()
        body.addWidget(self.plot, 2)
        body.addWidget(self.table, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.info)
        layout.addLayout(body, 1)
        self.run_button.clicked.connect(self.run)
        self.measure.currentIndexChanged.connect(lambda _i: self._draw())
        self.set_session(None)

    def set_session(self, session: Any) -> None:
        """Bind to a session (the last result is forgotten)."""
        self.session = session
        self.result = None
        self.measure.clear()
        self.run_button.setEnabled(session is not None)
        self._draw()

    def run(self, passes: int = 50) -> Job | None:
        """Run the check in the background."""
        if self.session is None or (self.job is not None and self.job.is_running):
            return None
        self.info.setText("Checking…")
        self.job = start_job(ood_job, str(self.session.project.path), self.n.value(), passes,
                             title="Checking out-of-distribution confidence", parent=self,
                             show_dialog=False, on_result=self.show_result)
        return self.job

    def show_result(self, result: dict[str, Any]) -> None:
        """Show an ``ood_review`` result."""
        self.result = result
        measures = [k for k, v in result.items() if isinstance(v, dict) and "auroc" in v]
        self.measure.blockSignals(True)
        self.measure.clear()
        self.measure.addItems(measures)
        best = result.get("best_measure")
        if best in measures:
            self.measure.setCurrentIndex(measures.index(best))
        self.measure.blockSignals(False)
        self._draw()

    def _draw(self) -> None:
        self.plot.clear()
        self.table.setRowCount(0)
        res = self.result
        name = self.measure.currentText()
        if not res or name not in res:
            return
        stats = res[name]
        summary = stats["summary"]
        sets = list(summary)
        x = np.arange(len(sets))
        q1 = np.array([summary[k]["q1"] for k in sets])
        q3 = np.array([summary[k]["q3"] for k in sets])
        med = np.array([summary[k]["median"] for k in sets])
        lo = np.array([summary[k]["min"] for k in sets])
        hi = np.array([summary[k]["max"] for k in sets])
        self.plot.addItem(pg.BarGraphItem(x=x, y0=q1, height=q3 - q1, width=0.5,
                                          brush=pg.mkBrush(86, 180, 233, 170)))
        self.plot.addItem(pg.ErrorBarItem(x=x, y=med, top=hi - med, bottom=med - lo,
                                          beam=0.2, pen=pg.mkPen("k")))
        self.plot.addItem(pg.ScatterPlotItem(x=x, y=med, symbol="_", size=26,
                                             pen=pg.mkPen("k", width=2)))
        self.plot.getPlotItem().getAxis("bottom").setTicks([list(enumerate(sets))])
        posthoc = {p["b"]: p for p in stats.get("posthoc", []) if p["a"] == stats["reference"]}
        rows = [(k, f"{v:.3f}", f"{posthoc[k]['p_bonferroni']:.2g}" if k in posthoc else "—")
                for k, v in stats["auroc"].items()]
        self.table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, text in enumerate(row):
                self.table.setItem(r, c, QTableWidgetItem(text))
        kw = stats["kruskal"]
        best = res.get("best_measure")
        self.info.setText(f"{name}: Kruskal-Wallis H = {kw['H']:.1f}, p = {kw['p']:.2g} "
                          f"over {len(sets)} sets."
                          + (f" Best measure (chosen on a held-out half of every set): "
                             f"{best}." if best else ""))
