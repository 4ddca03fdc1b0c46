"""Crowded stained marrow fields with ground truth: touching and overlapping cells.

A "whole-slide crop" holds many cells, not one centred cell: :func:`simulate_fields`
draws ``size x size`` RGB fields in which nucleated cells (the marrow types of
:mod:`.marrow_cells`, drawn by :func:`~.marrow_cells.draw_cell`) are packed so that
neighbours touch or overlap (centre distance ``overlap`` times the sum of the radii),
with red cells between them and each field's slide staining drawn as in
:mod:`.marrow` (``stain_variation``). Files under ``out_dir``::

    fields/NNNN.png          the RGB fields
    fields/NNNN_labels.png   uint16 truth label image: cell k of the field -> k (0 = none;
                             where cells overlap, the one drawn on top, i.e. later)
    fields_truth.csv         one row per nucleated cell (FIELD_TRUTH_COLUMNS)
    manifest.csv             for ``hemalens segment manifest.csv --modality rgb``

:func:`score_fields` compares detected objects with that truth: recall, precision, split
and merge rates (see there). The simulator shares no code with the segmentation.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from hemalens.engine.synth.marrow import MarrowSimConfig, Region, Slide, render_stained
from hemalens.engine.synth.marrow_cells import (
    CELL_TYPES,
    STAINS,
    cell_params,
    draw_cell,
    draw_erythrocyte,
)

__all__ = ["FIELD_TRUTH_COLUMNS", "FieldConfig", "render_field", "score_fields",
           "simulate_fields"]

FIELD_TRUTH_COLUMNS = ("field", "cell", "class", "x", "y", "diameter_um", "touches_border")


@dataclass(frozen=True)
class FieldConfig:
    """Knobs of :func:`simulate_fields`."""

    fields: int = 12
    seed: int = 0
    size: int = 320  # field side, px
    pixel_size_um: float = 0.25
    cells: tuple[int, int] = (10, 18)  # nucleated cells per field
    overlap: tuple[float, float] = (0.7, 1.0)  # centre distance / (r1 + r2) of neighbours
    erythrocytes: int = 8  # red cells per field (mean)
    stain_variation: float = 1.0

    def validate(self) -> None:
        """Raise ValueError naming the first unusable parameter."""
        checks = [
            (self.fields >= 1, "fields must be >= 1"),
            (self.size >= 64, "size must be >= 64 px"),
            (self.pixel_size_um > 0, "pixel_size_um must be > 0"),
            (1 <= self.cells[0] <= self.cells[1], "cells must be a range (1 <= lo <= hi)"),
            (0.3 <= self.overlap[0] <= self.overlap[1], "overlap must be a range >= 0.3"),
            (self.erythrocytes >= 0, "erythrocytes must be >= 0"),
        ]
        for ok, reason in checks:
            if not ok:
                raise ValueError(reason)


def render_field(config: FieldConfig, index: int) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Render one crowded field.

    Parameters
    ----------
    config : FieldConfig
        Simulation parameters.
    index : int
        Field number (seeds its generator with ``config.seed``).

    Returns
    -------
    rgb : numpy.ndarray
        ``(S, S, 3)`` uint8.
    labels : numpy.ndarray
        ``(S, S)`` uint16 truth labels (cell ``k`` -> ``k``, 0 = no nucleated cell).
    truth : list of dict
        One row per cell (:data:`FIELD_TRUTH_COLUMNS`), ``x``/``y`` = cell centre in px;
        red cells have ``class = "erythrocyte"``, a negative ``cell`` and are not counted.
    """
    rng = np.random.default_rng([config.seed, 7, index])
    s, px = config.size, config.pixel_size_um
    shape = (s, s)
    sim = MarrowSimConfig(stain_variation=config.stain_variation)
    slide = Slide.draw(f"slide{index}", rng, config.stain_variation)
    region = Region.draw(f"field{index}", slide, rng, sim)
    names = list(CELL_TYPES)
    w = np.array([CELL_TYPES[c][3] for c in names])
    conc = {k: np.zeros(shape, np.float32) for k in STAINS}
    labels = np.zeros(shape, np.uint16)
    placed: list[tuple[float, float, float]] = []
    truth: list[dict] = []
    n_cells = int(rng.integers(config.cells[0], config.cells[1] + 1))
    for _ in range(n_cells):
        name = names[int(rng.choice(len(names), p=w / w.sum()))]
        _, lo, hi, _ = CELL_TYPES[name]
        params = cell_params(name, rng.uniform(lo, hi), rng, sim.maturation_jitter,
                             sim.asynchrony)
        r = params.diameter_um / 2 / px
        centre = None
        for _ in range(60):
            if not placed:
                cy, cx = rng.uniform(0.3 * s, 0.7 * s, size=2)
            else:
                py, px_, pr = placed[int(rng.integers(len(placed)))]
                d = rng.uniform(*config.overlap) * (r + pr)
                a = rng.uniform(0, 2 * np.pi)
                cy, cx = py + d * np.sin(a), px_ + d * np.cos(a)
            inside = r * 0.5 <= cy <= s - r * 0.5 and r * 0.5 <= cx <= s - r * 0.5
            clear = all(np.hypot(cy - qy, cx - qx) >= config.overlap[0] * (r + qr) - 1e-9
                        for qy, qx, qr in placed)
            if inside and clear:
                centre = (float(cy), float(cx))
                break
        if centre is None:
            continue
        drawn = draw_cell(params, shape, centre, px, rng)
        for k in STAINS:
            conc[k] += drawn.conc[k]
        k_id = len(truth) + 1
        labels[drawn.cell > 0.5] = k_id
        placed.append((centre[0], centre[1], r))
        touches = min(centre[0], centre[1], s - centre[0], s - centre[1]) < r
        truth.append({"field": index, "cell": k_id, "class": name,
                      "x": round(centre[1], 2), "y": round(centre[0], 2),
                      "diameter_um": round(float(params.diameter_um), 3),
                      "touches_border": bool(touches)})
    for _ in range(int(rng.poisson(config.erythrocytes))):
        cy, cx = rng.uniform(0, s, size=2)
        hb, _ = draw_erythrocyte(shape, (float(cy), float(cx)), px, rng)
        conc["hb"] += hb
        # red cells are not counted cells: truth rows without a label (cell < 0)
        truth.append({"field": index, "cell": -(len(truth) + 1), "class": "erythrocyte",
                      "x": round(float(cx), 2), "y": round(float(cy), 2),
                      "diameter_um": 7.5, "touches_border": True})
    return render_stained(conc, region, px, rng), labels, truth


def simulate_fields(out_dir: str | Path, config: FieldConfig | None = None) -> dict[str, Any]:
    """Write crowded fields, their truth label images, truth table and manifest.

    Parameters
    ----------
    out_dir : str or Path
        Output folder (created; existing field files are overwritten).
    config : FieldConfig, optional
        Simulation parameters (defaults: 12 fields of 320 px at 0.25 um/px).

    Returns
    -------
    dict
        ``{"fields", "cells", "out_dir", "manifest", "truth"}``.
    """
    config = config or FieldConfig()
    config.validate()
    out = Path(out_dir)
    (out / "fields").mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    manifest = []
    for i in range(config.fields):
        rgb, labels, truth = render_field(config, i)
        name = f"fields/{i:04d}.png"
        cv2.imwrite(str(out / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(out / f"fields/{i:04d}_labels.png"), labels)
        rows += truth
        manifest.append({"file": name, "modality": "rgb", "given_label": "", "donor": "",
                         "run": f"field{i:04d}", "pixel_size_um": config.pixel_size_um})
    for path, cols, data in ((out / "fields_truth.csv", FIELD_TRUTH_COLUMNS, rows),
                             (out / "manifest.csv", tuple(manifest[0]), manifest)):
        with open(path, "w", newline="") as fh:
            wr = csv.DictWriter(fh, fieldnames=list(cols))
            wr.writeheader()
            wr.writerows(data)
    return {"fields": config.fields, "cells": len(rows), "out_dir": str(out),
            "manifest": str(out / "manifest.csv"), "truth": str(out / "fields_truth.csv")}


def score_fields(
    labels: list[np.ndarray], detections: list[list[np.ndarray]], truth: list[list[dict]],
) -> dict[str, float]:
    """Score detected cell contours against the truth of crowded fields.

    Matching by cell centres: a detection *matches* a truth cell when its contour contains
    that cell's centre and no other. Truth cells touching the field border and red cells
    (negative ``cell``), and detections containing only such centres, are left out.

    - recall: matched truth cells / truth cells;
    - precision: matching detections / detections;
    - merge rate: detections containing two or more centres / detections;
    - split rate: truth cells that, beside their match (or instead), have a fragment
      (a detection containing no centre whose centroid lies on the cell in the label
      image) / truth cells;
    - false-positive rate: detections containing no centre and lying on no cell /
      detections.

    Parameters
    ----------
    labels : list of numpy.ndarray
        Per field, the ``(H, W)`` truth label image.
    detections : list of list of numpy.ndarray
        Per field, the detected external contours (``cv2`` format).
    truth : list of list of dict
        Per field, the truth rows (:data:`FIELD_TRUTH_COLUMNS`).

    Returns
    -------
    dict
        ``recall``, ``precision``, ``split_rate``, ``merge_rate``, ``false_positive_rate``,
        ``cells``, ``detections``.
    """
    n_cells = matched = n_det = good = merges = fps = 0
    split_cells = 0
    for lab, contours, rows in zip(labels, detections, truth, strict=True):
        lab = np.asarray(lab)
        h, w = lab.shape
        border = {int(r["cell"]) for r in rows
                  if str(r["touches_border"]) in ("True", "true", "1") or int(r["cell"]) < 0}
        centres = [(int(r["cell"]), float(r["x"]), float(r["y"])) for r in rows]
        fragments: set[int] = set()
        hit: set[int] = set()
        for c in contours:
            inside = [k for k, x, y in centres if cv2.pointPolygonTest(c, (x, y), False) >= 0]
            if inside and all(k in border for k in inside):
                continue
            # red cells are neither counted nor a merge partner of a counted cell
            inside = [k for k in inside if k > 0]
            m = cv2.moments(c)
            if m["m00"] <= 0:
                continue
            cx, cy = m["m10"] / m["m00"], m["m01"] / m["m00"]
            on = int(lab[min(int(round(cy)), h - 1), min(int(round(cx)), w - 1)])
            if not inside and (on in border or (on == 0 and min(cx, cy, w - cx, h - cy) < 3)):
                continue
            n_det += 1
            if len(inside) == 1:
                good += 1
                hit.add(inside[0])
            elif len(inside) >= 2:
                merges += 1
            elif on > 0:
                fragments.add(on)
            else:
                fps += 1
        for k, _, _ in centres:
            if k in border:
                continue
            n_cells += 1
            matched += int(k in hit)
            split_cells += int(k in fragments)
    nan = float("nan")
    return {
        "recall": matched / n_cells if n_cells else nan,
        "precision": good / n_det if n_det else nan,
        "split_rate": split_cells / n_cells if n_cells else nan,
        "merge_rate": merges / n_det if n_det else nan,
        "false_positive_rate": fps / n_det if n_det else nan,
        "cells": n_cells,
        "detections": n_det,
    }
