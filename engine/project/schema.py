"""The project schema: the one list of cell-table and input-table columns.

Segmentation produces these columns; the project's ``cells.h5`` stores them as one HDF5
dataset per column under ``/cells`` and ``/inputs``; ``hemalens export`` writes them.
Columns not listed here may be added by later stages (predictions, embeddings) and are
stored the same way.

``given_label`` is not stored in ``cells.h5``: it is the imported ``original_label`` plus
the edits in ``annotations.sqlite`` (see :mod:`hemalens.engine.project.annotations`).

Schema versions: 1 was one HDF5 file holding everything (edits rewrote the whole file);
2 is the project folder of :mod:`hemalens.engine.project.bundle`. Version-1 files are
migrated when opened (:mod:`hemalens.engine.project.migrate`).
"""

from __future__ import annotations

SCHEMA_VERSION = 2
#: Columns computed when a project is opened, never stored in cells.h5.
DERIVED_CELL_COLUMNS = ("given_label",)
FILE_FORMAT = "hemalens-project"

#: Cell-table columns: name -> (dtype, description). ``cell_id`` is the row index.
CELL_COLUMNS: dict[str, tuple[str, str]] = {
    "cell_id": ("int64", "stable id of the object (row index)"),
    "input_id": ("int32", "row in the input table"),
    "frame": ("int32", "frame index in the input file (0-based)"),
    "object_id": ("int32", "object index within its frame"),
    "x": ("float32", "centroid column in frame pixels"),
    "y": ("float32", "centroid row in frame pixels"),
    "bbox_x": ("int32", "bounding box left, px"),
    "bbox_y": ("int32", "bounding box top, px"),
    "bbox_w": ("int32", "bounding box width, px"),
    "bbox_h": ("int32", "bounding box height, px"),
    "pixel_count": ("int32", "pixels inside the contour"),
    "area_um2": ("float32", "pixel_count * pixel area"),
    "diameter_um": ("float32", "equivalent diameter sqrt(4A/pi)"),
    "optical_volume_um3": ("float32", "sum(phi) * lambda/(2 pi) * pixel area (NaN for RGB)"),
    "perimeter_um": ("float32", "digitisation-corrected contour length * pixel size"),
    "circularity": ("float32", "4 pi A / L^2, L = cv2.arcLength (paper 1, Table 3)"),
    "circularity_smooth": ("float32", "4 pi A / L^2 with the digitisation-corrected "
                                      "perimeter (NaN in projects segmented before it)"),
    "phase_mean": ("float32", "mean phase inside the contour, rad (NaN for RGB)"),
    "phase_max": ("float32", "max phase inside the contour, rad (NaN for RGB)"),
    "phase_std": ("float32", "std of phase inside the contour, rad (NaN for RGB)"),
    "touches_border": ("bool", "the contour touches the frame border"),
    "patch_padded": ("bool", "the patch extends past the frame and was padded"),
    "qc_pass": ("bool", "passed the quality filter"),
    "qc_reason": ("S16", "why QC rejected it ('' when passed)"),
    "given_label": ("int16", "current label, index into /labels/classes, -1 = none"),
    "original_label": ("int16", "label at import, index into /labels/classes, -1 = none"),
}

#: Cell columns added after schema version 2 was fixed: projects written before lack them
#: and read them as NaN (not a damaged project).
LATER_CELL_COLUMNS = ("circularity_smooth",)

#: Input-table columns (one row per input file, failed ones included).
INPUT_COLUMNS: dict[str, tuple[str, str]] = {
    "file": ("str", "the path as the user or manifest gave it"),
    "path": ("str", "absolute path at import time"),
    "modality": ("str", "phase | hologram | qlsi | rgb"),
    "pixel_size_um": ("float64", "pixel size of the frames, um (NaN if unknown)"),
    "wavelength_nm": ("float64", "wavelength, nm (NaN for RGB)"),
    "given_label": ("str", "label of the run/file ('' if none)"),
    "donor": ("str", "donor id ('' if unknown)"),
    "run": ("str", "run id ('' if unknown)"),
    "background_file": ("str", "reference/empty-field file ('' if none)"),
    "n_frames": ("int32", "frames read"),
    "status": ("str", "ok | failed"),
    "error": ("str", "one-line reason when failed"),
}

#: Every QC rejection reason, in the priority segmentation applies them (the first that
#: applies is recorded). ``nan`` comes first: no other measurement of it can be trusted.
QC_REASONS = ("nan", "border", "too_small", "too_large", "not_round")
