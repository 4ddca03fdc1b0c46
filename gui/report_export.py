"""Export the review report: CSV and HTML from the engine, PDF printed by Qt.

The report's content is gathered from the session in the window's thread (a snapshot:
the differential, the history, the calibration); the figures and files are written in a
background job; then Qt prints the HTML with its figures to ``report.pdf`` (A4,
portrait) on the window's thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QMarginsF, QUrl
from PySide6.QtGui import QPageLayout, QPageSize, QPdfWriter, QTextDocument
from PySide6.QtWidgets import QFileDialog, QWidget

from hemalens.gui.workers import Job, start_job


def html_to_pdf(html_path: Path, pdf_path: Path) -> Path:
    """Print an HTML file (with its images beside it) to an A4 PDF.

    Parameters
    ----------
    html_path : Path
        The HTML report.
    pdf_path : Path
        The PDF to write.

    Returns
    -------
    Path
        ``pdf_path``.
    """
    doc = QTextDocument()
    doc.setBaseUrl(QUrl.fromLocalFile(str(html_path.parent) + "/"))
    html = html_path.read_text(encoding="utf-8")
    # Qt's rich text sizes images by their pixels: fit the figures to the page width
    html = html.replace("<img ", '<img width="640" ')
    doc.setHtml(html)
    writer = QPdfWriter(str(pdf_path))
    writer.setPageSize(QPageSize(QPageSize.PageSizeId.A4))
    writer.setPageLayout(QPageLayout(QPageSize(QPageSize.PageSizeId.A4),
                                     QPageLayout.Orientation.Portrait,
                                     QMarginsF(15, 15, 15, 15), QPageLayout.Unit.Millimeter))
    writer.setResolution(110)
    writer.setTitle(html_path.stem)
    writer.setCreator("HemaLens")
    doc.setPageSize(writer.pageLayout().paintRectPixels(writer.resolution()).size().toSizeF())
    doc.print_(writer)
    return pdf_path


def write_report_job(out_dir: str, content: dict[str, Any], title: str,
                     progress: Any = None) -> dict[str, Path]:
    """Write the HTML, CSV files and figures (in the worker)."""
    from hemalens.engine.review.review_report import write_review_report

    if progress is not None:
        progress.set_status("Writing the report and its figures")
    return write_review_report(out_dir, content, title=title)


def export_report(parent: QWidget | None, session: Any, out_dir: str | Path, *,
                  ood: dict[str, Any] | None = None, on_done: Any = None) -> Job:
    """Export the report of ``session`` to ``out_dir`` (HTML, CSV, then PDF).

    Parameters
    ----------
    parent : QWidget, optional
        Parent of the job's messages.
    session : ReviewSession
        The session.
    out_dir : str or Path
        Folder for the files (created).
    ood : dict, optional
        The last out-of-distribution check to include.
    on_done : callable, optional
        Called with the paths (``html``, ``pdf``, ``differential_csv``, ``changes_csv``).

    Returns
    -------
    Job
        The job writing the files.
    """
    from hemalens.engine.review.review_report import report_content

    content = report_content(session, ood=ood)
    title = f"HemaLens review — {Path(session.project.path).stem}"

    def finished(paths: dict[str, Path]) -> None:
        paths = dict(paths)
        paths["pdf"] = html_to_pdf(paths["html"], Path(out_dir) / "report.pdf")
        if on_done is not None:
            on_done(paths)

    return start_job(write_report_job, str(out_dir), content, title,
                     title="Exporting the report", parent=parent, show_dialog=False,
                     on_result=finished)


def export_report_dialog(window: Any, session: Any) -> Job | None:
    """Ask for a folder and export the report there."""
    start = str(Path(session.project.path).parent)
    folder = QFileDialog.getExistingDirectory(window, "Export the report to a folder", start)
    if not folder:
        return None
    ood = window.ood.result if hasattr(window, "ood") else None
    return export_report(window, session, folder, ood=ood, on_done=lambda p: window.show_message(
        f"Report written: {p['pdf']} (and report.html, differential.csv, changes.csv)"))
