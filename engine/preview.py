"""One frame segmented as the import does it: the import dialog's preview, a cell's context.

:func:`segment_preview` reads one frame of an input, subtracts the background of the
frame's block exactly as :func:`hemalens.engine.ingest.segment_inputs` does, and runs
the same per-frame segmentation: what the preview shows is what the import will find.
:func:`cell_context` finds a stored cell again in its source frame.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from hemalens.engine.errors import InputError, ProjectError
from hemalens.engine.io import InputSpec, open_source
from hemalens.engine.segment import FrameCells, SegmentSettings

__all__ = ["Preview", "cell_context", "segment_preview"]


@dataclass
class Preview:
    """A segmented frame.

    Attributes
    ----------
    frame : numpy.ndarray
        The background-subtracted phase (rad) or the RGB frame.
    cells : FrameCells
        Columns (with ``qc_pass``/``qc_reason``) and contours of the objects found.
    modality : str
        What the input was read as.
    pixel_size_um, wavelength_nm : float or None
        As the file or the spec gave them.
    n_frames : int
        Frames in the input.
    index : int
        The frame shown.
    threshold_rad : float or None
        The threshold used (phase: the block's noise-adaptive value).
    """

    frame: np.ndarray
    cells: FrameCells
    modality: str
    pixel_size_um: float | None
    wavelength_nm: float | None
    n_frames: int
    index: int
    threshold_rad: float | None = None


def segment_preview(spec: InputSpec, index: int = 0,
                    settings: SegmentSettings | None = None) -> Preview:
    """Segment frame ``index`` of an input with the import's own steps.

    Parameters
    ----------
    spec : InputSpec
        The input (pixel size, wavelength, modality as the user gives them).
    index : int
        Frame (clamped to the input's frames).
    settings : SegmentSettings, optional
        Threshold and QC limits (the dialog's controls).

    Returns
    -------
    Preview

    Raises
    ------
    InputError
        The input cannot be read, or its pixel size or wavelength is unknown.
    """
    from hemalens.engine.ingest import block_of, phase_block

    settings = settings or SegmentSettings()
    from hemalens.engine.segment import segment_phase_frame, segment_rgb_frame

    with open_source(spec) as source:
        n = source.n_frames
        i = int(min(max(index, 0), n - 1))
        if source.modality == "rgb":
            frame = source.read(i)
            cells = segment_rgb_frame(frame, source.pixel_size_um, settings)
            return Preview(frame, cells, "rgb", source.pixel_size_um, None, n, i)
        block = block_of(n, i, settings)
        for k, phase, block_settings in phase_block(source, block, settings):
            if k == i:
                wavelength = float(source.wavelength_nm) if source.wavelength_nm else np.nan
                cells = segment_phase_frame(phase, source.pixel_size_um, wavelength,
                                            block_settings)
                return Preview(phase, cells, source.modality, source.pixel_size_um,
                               source.wavelength_nm, n, i, block_settings.threshold_rad)
    raise InputError(spec.file, f"frame {i} was not read")  # unreachable: i is in its block


def cell_context(project_path: str | PathLike[str], cell: int) -> dict[str, Any]:
    """Find a stored cell in its source frame again.

    Parameters
    ----------
    project_path : str or PathLike
        The project.
    cell : int
        The cell.

    Returns
    -------
    dict
        ``frame`` (the frame), ``contour`` (``(K, 2)`` x, y of the object found at the
        cell's centroid, or None), ``bbox`` (x, y, w, h as stored), ``file``, ``index``.

    Raises
    ------
    InputError
        The source file is gone or unreadable (the message names it).
    ProjectError
        The project cannot be read, or the cell has no input.
    """
    from hemalens.engine.project.store import Project

    with Project.open(project_path) as p:
        c = p.cells
        k = int(c["input_id"][cell])
        if k < 0 or k >= len(p.inputs.get("file", [])):
            raise ProjectError(p.path, f"cell {cell} has no input file recorded")
        inp = {key: p.inputs[key][k] for key in p.inputs}
        settings = SegmentSettings.from_dict(p.settings) if p.settings else SegmentSettings()
        frame_index = int(c["frame"][cell])
        x, y = float(c["x"][cell]), float(c["y"][cell])
        bbox = tuple(int(c[key][cell]) for key in ("bbox_x", "bbox_y", "bbox_w", "bbox_h"))
    path = Path(str(inp.get("path") or inp.get("file")))
    if not Path(str(path).split(":/")[0]).exists():
        raise InputError(str(inp.get("file")), "the source file is not there any more "
                                               f"({path})")

    def number(key: str) -> float | None:
        v = float(inp.get(key, np.nan))
        return v if np.isfinite(v) else None

    spec = InputSpec(path=path, file=str(inp.get("file")), modality=str(inp.get("modality")),
                     pixel_size_um=number("pixel_size_um"),
                     wavelength_nm=number("wavelength_nm"),
                     background=Path(str(inp["background_file"]))
                     if inp.get("background_file") else None)
    preview = segment_preview(spec, frame_index, replace(settings))
    contour = None
    cols = preview.cells.columns
    if len(preview.cells):
        d = (np.asarray(cols["x"]) - x) ** 2 + (np.asarray(cols["y"]) - y) ** 2
        best = int(np.argmin(d))
        if d[best] < 4.0:  # the same object: centroids within 2 px
            contour = np.asarray(preview.cells.contours[best]).reshape(-1, 2)
    return {"frame": preview.frame, "contour": contour, "bbox": bbox, "file": spec.file,
            "index": frame_index, "modality": preview.modality}
