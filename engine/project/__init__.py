"""project package."""

from __future__ import annotations

from hemalens.engine.project.atomic import AtomicFile, atomic_update, atomic_write
from hemalens.engine.project.export import CSV_LEAD_COLUMNS, export_cells_csv, project_info
from hemalens.engine.project.labels import relabel
from hemalens.engine.project.schema import (
    CELL_COLUMNS,
    FILE_FORMAT,
    INPUT_COLUMNS,
    QC_REASONS,
    SCHEMA_VERSION,
)
from hemalens.engine.project.store import PATCH_KINDS, Project, ProjectWriter, open_project_h5

__all__ = [
    "CELL_COLUMNS",
    "CSV_LEAD_COLUMNS",
    "FILE_FORMAT",
    "INPUT_COLUMNS",
    "PATCH_KINDS",
    "QC_REASONS",
    "SCHEMA_VERSION",
    "AtomicFile",
    "Project",
    "ProjectWriter",
    "atomic_update",
    "atomic_write",
    "export_cells_csv",
    "open_project_h5",
    "project_info",
    "relabel",
]
