"""Issue 13: pass rates of both circularity definitions at paper 1's QC cut (0.85).

Simulated QPI (``synth qpi``, known object kinds) and the real recordings of
``../shared/data/real`` (an HL60 cell hologram, a QLSI bead: round single objects). For
every simulated object matched to its truth row, not touching the border and within the
diameter bounds (so that the circularity rule alone decides), the fraction with
``circularity >= 0.85`` (paper 1: ``4 pi A / cv2.arcLength^2``) and with
``circularity_smooth >= 0.85`` (digitisation-corrected perimeter). Prints JSON::

    nice -n 5 .venv/bin/python -m benchmarks.bench_circularity
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
from pathlib import Path

import numpy as np

from hemalens.engine.cli import main
from hemalens.engine.project import Project
from hemalens.engine.synth.scoring import match_truth, read_truth

CUT = 0.85
MEASURES = ("circularity", "circularity_smooth")
_ROOT = Path(__file__).resolve().parents[1]
#: ../shared beside the checkout (the lead's), or beside the worktrees' folder
REAL = next((p / "shared" / "data" / "real" for p in (_ROOT.parent, _ROOT.parent.parent)
             if (p / "shared" / "data" / "real").is_dir()), _ROOT / "missing")
#: the real recordings and the pixel size / wavelength their files lack (README there)
REAL_INPUTS = {"hologram_cell.npz": ("0.14", "633"), "qlsi_paa_bead.h5": (None, None)}


def _quiet(argv: list[str]) -> int:
    with contextlib.redirect_stdout(io.StringIO()):
        return main(argv)


def simulated(frames: int, seed: int, work: Path) -> dict:
    """Pass rates by true object kind on a simulated QPI recording."""
    sim, project = work / "sim", work / "P.hemalens"
    assert _quiet(["synth", "qpi", str(sim), "--frames", str(frames), "--seed", str(seed),
                   "--json"]) == 0
    assert _quiet(["segment", "--manifest", str(sim / "manifest.csv"), "-o", str(project),
                   "--json"]) == 0
    truth = read_truth(sim / "truth.csv")
    with Project.open(project) as p:
        rows = match_truth(truth, p)
        c = p.cells
        d = np.asarray(c["diameter_um"])
        inside = ~np.asarray(c["touches_border"], bool)
        sized = inside & (d >= 4.0) & (d <= 20.0)
        out: dict = {"within the diameter bounds": {}, "any diameter": {}}
        for t, r in zip(truth, rows, strict=True):
            if r is None or not inside[r]:
                continue
            kind = t["kind"]
            if kind in ("lymphocyte", "monocyte", "neutrophil", "eosinophil"):
                kind = "leukocyte (in focus)" if t["in_focus"].lower() == "true" else "defocused"
            for group, ok in (("within the diameter bounds", sized[r]), ("any diameter", True)):
                if not ok:
                    continue
                entry = out[group].setdefault(kind, {"n": 0, **{m: 0 for m in MEASURES}})
                entry["n"] += 1
                for m in MEASURES:
                    entry[m] += int(c[m][r] >= CUT)
    return {g: {k: {"n": v["n"], **{f"pass_{m}": round(v[m] / v["n"], 4) for m in MEASURES}}
                for k, v in sorted(rows_.items())} for g, rows_ in out.items()}


def real(work: Path) -> dict:
    """Circularity of every object the segmentation finds in the real recordings."""
    out: dict = {}
    for name, (px, lam) in REAL_INPUTS.items():
        path = REAL / name
        if not path.is_file():
            continue
        project = work / f"{path.stem}.hemalens"
        argv = ["segment", str(path), "-o", str(project), "--json"]
        if px:
            argv += ["--pixel-size", px, "--wavelength", lam]
        if _quiet(argv) != 0:
            out[name] = "segmentation failed"
            continue
        with Project.open(project) as p:
            c = p.cells
            out[name] = [{"diameter_um": round(float(c["diameter_um"][i]), 2),
                          **{m: round(float(c[m][i]), 4) for m in MEASURES}}
                         for i in range(p.n_cells) if c["diameter_um"][i] >= 4.0]
    return out


def cli() -> None:
    """Command line entry point (prints JSON)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=400)
    ap.add_argument("--seed", type=int, default=5)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_circ-"))
    print(json.dumps({"cut": CUT, "simulated": simulated(a.frames, a.seed, work),
                      "real": real(work)}, indent=1))


if __name__ == "__main__":
    cli()
