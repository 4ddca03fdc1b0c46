"""Import inputs into a new project: read frames, subtract background, segment, write.

This is the one path from raw files to a project file, shared by ``hemalens segment``,
the demo builder and the GUI's import. Each input is processed on its own: a bad input
is reported in ``failed_inputs`` with a one-line reason and the rest of the batch goes
on. The project is written atomically by :class:`~hemalens.engine.project.ProjectWriter`:
a cancelled or crashed import leaves any existing file at the destination untouched.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from hemalens.engine.errors import HemaLensError, InputError, ProjectError
from hemalens.engine.io import FrameSource, InputSpec, open_source, remove_tilt
from hemalens.engine.io.sources import detect_modality
from hemalens.engine.jobs import Progress, checkpoint
from hemalens.engine.project import ProjectWriter
from hemalens.engine.project.store import check_replaceable
from hemalens.engine.scaleout import Cluster, open_executor
from hemalens.engine.segment import (
    FrameCells,
    SegmentSettings,
    adaptive_threshold,
    background_blocks,
    median_background,
    segment_phase_frame,
    segment_rgb_frame,
)

#: Blocks shorter than this get no median background (with cells flowing past, the median
#: of five frames is already cell-free; of two it is not). Their frames instead get a
#: robustly fitted plane removed, which takes out tilt and offset but not fringes.
MIN_BACKGROUND_FRAMES = 5


def _input_record(spec: InputSpec) -> dict[str, Any]:
    return {
        "file": spec.file,
        "path": str(spec.path),
        "modality": spec.modality,
        "pixel_size_um": spec.pixel_size_um if spec.pixel_size_um is not None else np.nan,
        "wavelength_nm": spec.wavelength_nm if spec.wavelength_nm is not None else np.nan,
        "given_label": spec.given_label or "",
        "donor": spec.donor or "",
        "run": spec.run or "",
        "background_file": str(spec.background) if spec.background else "",
        "n_frames": 0,
        "status": "pending",
        "error": "",
    }


def block_of(n_frames: int, index: int, settings: SegmentSettings) -> list[int]:
    """Return the background block (frames sharing one median background) holding ``index``."""
    for block in background_blocks(n_frames, settings.background_n):
        if index in block:
            return list(block)
    raise ValueError(f"frame {index} is outside 0..{n_frames - 1}")


def phase_block(
    source: FrameSource, block: list[int], settings: SegmentSettings
) -> Iterator[tuple[int, np.ndarray, SegmentSettings]]:
    """Yield ``(index, background-subtracted phase, settings)`` for one block of frames.

    Memory stays bounded by one block; the noise-adaptive threshold is set once per
    block (the noise of a run is stationary) from the median over a few of its frames.
    The import and its preview (:mod:`hemalens.engine.preview`) both go through here.
    """
    stack = np.stack([source.read(i) for i in block])
    if len(block) >= MIN_BACKGROUND_FRAMES:
        stack -= median_background(stack)[None]
    else:
        stack = np.stack([remove_tilt(frame) for frame in stack])
    threshold = float(np.median([adaptive_threshold(f, settings) for f in stack[:5]]))
    block_settings = replace(settings, threshold_rad=threshold, noise_k=0.0)
    for offset, i in enumerate(block):
        yield i, stack[offset], block_settings


#: Chunks segmented at once in-process, in threads: reading, retrieval, filtering and
#: segmentation spend most of their time in numpy, scipy.fft and OpenCV, which release
#: the GIL, while this thread writes. On the idle 2-core machine 2 threads gave 1.7x on
#: the hologram path (93 vs 55 frames/s) and 1.3x on the phase path (328 vs 255); the
#: cap of 4 on larger machines bounds GIL contention and memory (one background block
#: per thread) and was not measured beyond 2 cores.
IMPORT_THREADS = max(1, min(4, os.cpu_count() or 1))
#: Frames per task of a stained (RGB) input; phase inputs go by background block.
RGB_FRAMES_PER_TASK = 64


def _frame_blocks(n_frames: int, modality: str, settings: SegmentSettings) -> list[list[int]]:
    """Cut an input into chunks: background blocks (phase) or runs of frames (RGB)."""
    if modality == "rgb":
        return [list(range(a, min(n_frames, a + RGB_FRAMES_PER_TASK)))
                for a in range(0, n_frames, RGB_FRAMES_PER_TASK)]
    return [list(b) for b in background_blocks(n_frames, settings.background_n)]


def segment_block(
    spec: InputSpec, block: list[int], settings: SegmentSettings,
    progress: Progress | None = None,
) -> tuple[list[tuple[int, FrameCells]], str | None]:
    """Segment one chunk of an input's frames: the unit of work of :func:`segment_inputs`.

    Runs in-process or on a Dask worker (which opens the input itself at ``spec.path``);
    the driver writes the results. A phase chunk is one background block, so its median
    background and threshold are the ones an in-process import computes.

    Parameters
    ----------
    spec : InputSpec
        The input.
    block : list of int
        Frame indices (one background block for phase inputs).
    settings : SegmentSettings
        Segmentation settings.
    progress : Progress, optional
        Cancellation only (checked between frames).

    Returns
    -------
    (cells, error)
        ``(frame index, FrameCells)`` for the frames done (contours dropped), and None, or
        the one-line reason the input failed at the next frame.
    """
    out: list[tuple[int, FrameCells]] = []
    try:
        with open_source(spec) as source:
            if source.modality == "rgb":
                frames: Iterator[tuple[int, FrameCells]] = (
                    (i, segment_rgb_frame(source.read(i), source.pixel_size_um, settings))
                    for i in block)
            else:
                wavelength = float(source.wavelength_nm) if source.wavelength_nm else np.nan
                frames = (
                    (i, segment_phase_frame(phase, source.pixel_size_um, wavelength, bs))
                    for i, phase, bs in phase_block(source, block, settings))
            for i, cells in frames:
                checkpoint(progress)
                out.append((i, replace(cells, contours=[])))
    except InputError as err:
        return out, str(err)
    except (ValueError, OSError) as err:  # a library error no reader foresaw
        return out, f"{spec.file}: {' '.join(str(err).split())}"
    except MemoryError:  # one oversized input must not cost the batch its good files
        return out, (f"{spec.file}: not enough memory to process this input (frames too "
                     "large for this computer); the other inputs are imported")
    return out, None


#: Modalities that one content can be read as without a contradiction.
_MODALITY_FAMILY = {"phase": "phase", "hologram": "interferogram", "qlsi": "interferogram",
                    "rgb": "rgb"}


def forced_modality_doubt(spec: InputSpec) -> str | None:
    """Return a one-line warning when a forced modality contradicts the file's content.

    A phase TIFF read as RGB or as a hologram imports few or no cells without failing;
    this says so (the import goes on: the user may know better).

    Parameters
    ----------
    spec : InputSpec
        The input, with its forced ``modality`` (``auto`` never warns).

    Returns
    -------
    str or None
        The warning, naming the file.
    """
    forced = spec.modality
    if forced == "auto":
        return None
    try:
        detected = detect_modality(spec.path)
    except HemaLensError:
        return None  # the reader says what is wrong with the file itself
    if _MODALITY_FAMILY.get(detected) == _MODALITY_FAMILY.get(forced):
        return None
    return (f"{spec.file}: --modality {forced} was forced, but the content looks like "
            f"{detected}; few or no cells may be found — check the modality")


def _patch_geometry(kind: str, settings: SegmentSettings) -> tuple[int, ...]:
    if kind == "rgb":
        return (settings.rgb_patch_size_px, settings.rgb_patch_size_px, 3)
    return (settings.patch_size_px, settings.patch_size_px)


def _skip(results: Iterator[Any], n: int) -> None:
    """Consume (and drop) the results of ``n`` chunks of an input that failed."""
    for _ in range(n):
        next(results)


def refuse_input_as_output(inputs: Sequence[str | Path], output: str | Path) -> None:
    """Refuse an output that is one of the inputs (the same file after resolving links).

    Raises
    ------
    ProjectError
        Naming the output.
    """
    out = Path(output)
    try:
        out_real = out.resolve(strict=False)
    except (OSError, RuntimeError):  # a symlink loop: not one of our inputs anyway
        return
    for item in inputs:
        p = Path(item)
        try:
            same = p.resolve(strict=False) == out_real or (
                out.exists() and p.exists() and os.path.samefile(p, out))
        except (OSError, RuntimeError):
            continue
        if same:
            raise ProjectError(output, "is one of the inputs; choose another output name")


def segment_inputs(
    specs: Sequence[InputSpec],
    project_path: str | Path,
    settings: SegmentSettings | None = None,
    *,
    default_label: str | None = None,
    progress: Progress | None = None,
    overwrite: bool = False,
    cluster: Cluster | None = None,
) -> dict[str, Any]:
    """Segment every input into single-cell patches and write a new project.

    Parameters
    ----------
    specs : sequence of InputSpec
        The inputs, e.g. from :func:`~hemalens.engine.io.read_manifest`.
    project_path : str or Path
        Destination project folder; put in place only when the import completes. An
        existing project there is replaced only when it holds no reviewer edits; anything
        else only with ``overwrite``; an input is never overwritten.
    settings : SegmentSettings, optional
        Segmentation, QC and patch settings (stored in the project).
    default_label : str, optional
        Given label for inputs whose spec has none (``--label``).
    progress : Progress, optional
        Receives status and per-frame progress; cancellation raises
        :class:`~hemalens.engine.jobs.Cancelled` and writes nothing.
    overwrite : bool
        Replace whatever is at ``project_path`` (the user's ``--force``).
    cluster : Cluster, optional
        Where the chunks (background blocks) are segmented
        (:mod:`hemalens.engine.scaleout`); default in-process. This process alone writes
        the project, so atomicity and the lock are as in-process, and so are the cells.

    Returns
    -------
    dict
        ``{"inputs", "frames", "objects", "cells", "rejected": {reason: n},
        "failed_inputs": [{"path", "error"}], "warnings": [str], "seconds", "project"}``;
        ``project`` is None when no input could be read (no file is written then).
    """
    settings = settings or SegmentSettings()
    t0 = time.perf_counter()
    refuse_input_as_output([s.path for s in specs], project_path)
    check_replaceable(project_path, overwrite)
    failed: list[dict[str, str]] = []
    rejected: Counter[str] = Counter()
    n_frames = n_objects = n_cells = 0
    writer: ProjectWriter | None = None

    # Count frames first (opening is cheap; frames are decoded lazily): the total drives
    # progress, and inputs that cannot even be opened are reported up front.
    frame_counts: dict[int, int] = {}
    modalities: dict[int, str] = {}
    open_errors: dict[int, str] = {}
    warnings: list[str] = []
    for k, spec in enumerate(specs):
        try:
            with open_source(spec) as src:
                frame_counts[k] = src.n_frames
                modalities[k] = src.modality
        except HemaLensError as err:
            open_errors[k] = str(err)
            continue
        if (doubt := forced_modality_doubt(spec)) is not None:
            warnings.append(doubt)
    total = sum(frame_counts.values())
    if progress is not None:
        progress.set_status(f"Segmenting {len(specs)} input(s)")
        progress.set_progress(0, total)

    pending_failed: list[dict[str, Any]] = []  # records of inputs failed before the writer exists

    def fail(record: dict[str, Any], error: str, input_id: int | None = None) -> None:
        failed.append({"path": record["file"], "error": error})
        if writer is None:
            pending_failed.append(record | {"status": "failed", "error": error})
        elif input_id is None:
            writer.add_input(record | {"status": "failed", "error": error})
        else:
            writer.update_input(input_id, status="failed", error=error)

    # Every chunk of every input goes to the executor at once (a window of them in
    # flight); the results come back in order and are written here.
    chunks = [(k, block) for k, spec in enumerate(specs) if k in frame_counts
              for block in _frame_blocks(frame_counts[k], modalities[k], settings)]
    by_input: dict[int, list[list[int]]] = {}
    for k, block in chunks:
        by_input.setdefault(k, []).append(block)

    try:
        with open_executor(cluster) as executor:
            results = executor.map(segment_block,
                                   ((specs[k], block, settings) for k, block in chunks),
                                   progress=progress, pass_cancel=True,
                                   threads=IMPORT_THREADS)
            for k, spec in enumerate(specs):
                checkpoint(progress)
                record = _input_record(spec)
                blocks = by_input.get(k, [])
                if k in open_errors:
                    fail(record, open_errors[k])
                    continue
                try:
                    source = open_source(spec)
                except HemaLensError as err:
                    _skip(results, len(blocks))
                    fail(record, str(err))
                    continue
                with source:
                    kind = "rgb" if source.modality == "rgb" else "phase"
                    if writer is None:
                        writer = ProjectWriter(
                            project_path,
                            patch_kind=kind,
                            patch_shape=_patch_geometry(kind, settings),
                            settings=settings.to_dict(),
                            overwrite=overwrite,
                        )
                        for earlier in pending_failed:
                            writer.add_input(earlier)
                    record |= {
                        "modality": source.modality,
                        "pixel_size_um": source.pixel_size_um,
                        "wavelength_nm": source.wavelength_nm or np.nan,
                    }
                if writer.patch_kind != kind:
                    _skip(results, len(blocks))
                    fail(record, f"{spec.file}: is {source.modality} but this project holds "
                         f"{writer.patch_kind} patches; import it into a separate project")
                    continue
                input_id = writer.add_input(record)
                label = spec.given_label or default_label
                code = writer.class_code(label) if label else -1
                done_frames = 0
                error: str | None = None
                for b in range(len(blocks)):
                    frame_cells, error = next(results)
                    for frame_index, cells in frame_cells:
                        n = len(cells)
                        if n:
                            columns = dict(cells.columns)
                            columns["input_id"] = np.full(n, input_id, np.int32)
                            columns["frame"] = np.full(n, frame_index, np.int32)
                            columns["given_label"] = np.full(n, code, np.int16)
                            columns["original_label"] = np.full(n, code, np.int16)
                            writer.append(columns, cells.images, cells.raw)
                            qc_pass = np.asarray(cells.columns["qc_pass"], bool)
                            n_cells += int(qc_pass.sum())
                            rejected.update(
                                r.decode() if isinstance(r, bytes) else str(r)
                                for r in np.asarray(cells.columns["qc_reason"])[~qc_pass]
                            )
                        n_objects += n
                        done_frames += 1
                        n_frames += 1
                    if progress is not None:
                        progress.set_progress(n_frames, total)
                    if error is not None:
                        _skip(results, len(blocks) - b - 1)
                        break
                if error is not None:
                    kept = f" ({done_frames} earlier frames kept)" if done_frames else ""
                    fail(record, f"{error}{kept}", input_id)
                else:
                    writer.update_input(input_id, status="ok")
                writer.update_input(input_id, n_frames=done_frames)
            checkpoint(progress)  # a cancel that came after the last frame still cancels
        final = writer.close() if writer is not None else None
    except BaseException:
        if writer is not None:
            writer.discard()
        raise

    return {
        "inputs": len(specs),
        "frames": n_frames,
        "objects": n_objects,
        "cells": n_cells,
        "rejected": dict(sorted(rejected.items())),
        "failed_inputs": failed,
        "warnings": warnings,
        "seconds": round(time.perf_counter() - t0, 3),
        "project": str(final) if final is not None else None,
    }
