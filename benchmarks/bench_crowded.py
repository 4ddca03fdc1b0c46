"""Issue 13: cells in crowded stained fields, nuclei-seeded RGB path vs the earlier rule.

Simulated crowded marrow fields (:mod:`hemalens.engine.synth.marrow_fields`, touching and
overlapping cells, varying stain, truth label images) are segmented by
:func:`~hemalens.engine.segment.rgb.rgb_objects` twice in one run: nuclei-seeded
(``use_nuclei=True``, the default) and the earlier rule (distance-transform peaks of the
foreground, ``use_nuclei=False``); recall, precision, split and merge rates from
:func:`~hemalens.engine.synth.marrow_fields.score_fields`. With ``--overlays DIR`` it
also draws the detected outlines on the real stained image bundled with scikit-image
(``immunohistochemistry``). Prints JSON::

    nice -n 5 .venv/bin/python -m benchmarks.bench_crowded --seed 1 --fields 12
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from hemalens.engine.segment.rgb import nuclei_labels, rgb_objects
from hemalens.engine.synth.marrow_fields import FieldConfig, render_field, score_fields

#: Real stained images bundled with scikit-image (no download) and an assumed pixel size
#: (um): the immunohistochemistry image (haematoxylin + DAB) is a 40x field, ~0.5 um/px.
#: (``skimage.data.skin`` needs pooch and a download, so it is not used.)
REAL_IMAGES = {"immunohistochemistry": 0.5}


def simulated(seed: int, fields: int) -> dict:
    """Score both rules on ``fields`` crowded fields."""
    cfg = FieldConfig(fields=fields, seed=seed)
    labels, truth, found = [], [], {"nuclei": [], "earlier": []}
    seconds = dict.fromkeys(found, 0.0)
    for i in range(fields):
        rgb, lab, rows = render_field(cfg, i)
        labels.append(lab)
        truth.append(rows)
        for name, flag in (("nuclei", True), ("earlier", False)):
            t0 = time.perf_counter()
            contours, _, _ = rgb_objects(rgb, cfg.pixel_size_um, 4.0, 20, use_nuclei=flag)
            seconds[name] += time.perf_counter() - t0
            found[name].append(contours)
    out = {name: {k: round(v, 4) if isinstance(v, float) else v
                  for k, v in score_fields(labels, found[name], truth).items()}
           for name in found}
    for name in out:
        out[name]["seconds_per_field"] = round(seconds[name] / fields, 3)
    return out


def overlays(out_dir: Path) -> dict:
    """Draw detected cells (green) and nuclei (yellow) on scikit-image's stained images."""
    import skimage.data

    out_dir.mkdir(parents=True, exist_ok=True)
    found = {}
    for name, px in REAL_IMAGES.items():
        rgb = getattr(skimage.data, name)()[..., :3].astype(np.uint8)
        contours, foreground, _ = rgb_objects(rgb, px, 4.0, 20)
        old, _, _ = rgb_objects(rgb, px, 4.0, 20, use_nuclei=False)
        nuclei = nuclei_labels(rgb, foreground, 4.0 / 2 / px)
        panels = []
        for cs, with_nuclei in ((old, False), (contours, True)):
            ov = rgb.copy()
            if with_nuclei:
                edge = nuclei > 0
                edge &= ~cv2.erode(edge.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
                ov[edge] = (255, 215, 0)
            cv2.drawContours(ov, cs, -1, (0, 160, 0), 1)
            panels.append(ov)
        gap = np.full((rgb.shape[0], 8, 3), 255, np.uint8)
        both = np.concatenate([panels[0], gap, panels[1]], axis=1)
        path = out_dir / f"crowded_{name}.png"
        cv2.imwrite(str(path), cv2.cvtColor(both, cv2.COLOR_RGB2BGR))
        found[name] = {"file": str(path), "objects_earlier": len(old),
                       "objects_nuclei": len(contours), "nuclei": int(len(np.unique(nuclei)) - 1)}
    return found


def cli() -> None:
    """Command line entry point (prints JSON)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--fields", type=int, default=12)
    ap.add_argument("--overlays", type=Path, default=None)
    a = ap.parse_args()
    out = {"seed": a.seed, "fields": a.fields, "simulated": simulated(a.seed, a.fields)}
    if a.overlays is not None:
        out["real"] = overlays(a.overlays)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    cli()
