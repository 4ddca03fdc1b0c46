"""The project: a folder with the imported cells, the annotation store and derived data."""

from __future__ import annotations

# Imported on first use: the GUI imports light parts of this package at start-up
# and must not pay for h5py, OpenCV or scikit-image before its window shows.
import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_WHERE = {
    "DECISIONS": "hemalens.engine.project.annotations",
    "AnnotationStore": "hemalens.engine.project.annotations",
    "default_user": "hemalens.engine.project.annotations",
    "AtomicFile": "hemalens.engine.project.atomic",
    "atomic_write": "hemalens.engine.project.atomic",
    "CSV_LEAD_COLUMNS": "hemalens.engine.project.export",
    "export_cells_csv": "hemalens.engine.project.export",
    "project_info": "hemalens.engine.project.export",
    "relabel": "hemalens.engine.project.labels",
    "CELL_COLUMNS": "hemalens.engine.project.schema",
    "FILE_FORMAT": "hemalens.engine.project.schema",
    "INPUT_COLUMNS": "hemalens.engine.project.schema",
    "QC_REASONS": "hemalens.engine.project.schema",
    "SCHEMA_VERSION": "hemalens.engine.project.schema",
    "PATCH_KINDS": "hemalens.engine.project.store",
    "Project": "hemalens.engine.project.store",
    "ProjectWriter": "hemalens.engine.project.store",
    "locate_project": "hemalens.engine.project.store",
    "open_cells_h5": "hemalens.engine.project.store",
}

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


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
