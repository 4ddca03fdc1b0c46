"""The project: a folder with the imported cells, the annotation store and derived data."""

from __future__ import annotations

from hemalens.engine.project.annotations import DECISIONS, AnnotationStore, default_user
from hemalens.engine.project.atomic import AtomicFile, atomic_write
from hemalens.engine.project.export import CSV_LEAD_COLUMNS, export_cells_csv, project_info
from hemalens.engine.project.labels import relabel
from hemalens.engine.project.schema import (
    CELL_COLUMNS,
    FILE_FORMAT,
    INPUT_COLUMNS,
    QC_REASONS,
    SCHEMA_VERSION,
)
from hemalens.engine.project.store import (
    PATCH_KINDS,
    Project,
    ProjectWriter,
    locate_project,
    open_cells_h5,
)

__all__ = [
    "CELL_COLUMNS",
    "CSV_LEAD_COLUMNS",
    "DECISIONS",
    "FILE_FORMAT",
    "INPUT_COLUMNS",
    "PATCH_KINDS",
    "QC_REASONS",
    "SCHEMA_VERSION",
    "AnnotationStore",
    "AtomicFile",
    "Project",
    "ProjectWriter",
    "atomic_write",
    "default_user",
    "export_cells_csv",
    "locate_project",
    "open_cells_h5",
    "project_info",
    "relabel",
]
