"""Review-window latency: key press to repaint at 10k and 100k cells, side by side.

Usage::

    QT_QPA_PLATFORM=offscreen .venv/bin/python -m benchmarks.bench_review_window \
        [--sizes 10000,100000] [--presses 200] [--patch 32] [--dir DIR]

For each project size (phase patches of ``--patch`` pixels, made-up predictions so the
gallery sorts by confidence) it opens the project in the real :class:`MainWindow` and
times:

- ``open_to_first_paint_ms``: ``open_project`` until the gallery has painted its tiles;
- ``key_to_repaint_ms`` p50/p95/max for a class key (``2``: a durable relabel through the
  review session, the undo stack, the thumbnail update and the move to the next cell),
  ``Space`` (confirm) and ``Page Down`` (no edit), from the key event until the gallery's
  next finished paint (its ``painted`` signal).

The figures include the differential and the status bar that follow each edit. Prints one
JSON object; the ratio 100k/10k shows whether a key's cost depends on the project size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
from PySide6.QtCore import QEventLoop, Qt, QTimer  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402

from hemalens.engine.project import ProjectWriter  # noqa: E402
from hemalens.engine.review import write_predictions  # noqa: E402
from hemalens.gui.app import create_app  # noqa: E402
from hemalens.gui.main_window import MainWindow  # noqa: E402

CLASSES = ["lymphocyte", "monocyte", "neutrophil", "eosinophil"]


def make_project(path: Path, n: int, patch: int) -> Path:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:patch, :patch]
    blob = np.exp(-((yy - patch / 2) ** 2 + (xx - patch / 2) ** 2) / (patch * 2.0))
    with ProjectWriter(path, patch_kind="phase", patch_shape=(patch, patch),
                       classes=CLASSES) as w:
        w.add_input({"file": "bench.tif", "run": "s1"})
        step = 20_000
        for start in range(0, n, step):
            m = min(step, n - start)
            patches = (blob[None] * rng.uniform(0.5, 1.5, (m, 1, 1))).astype(np.float32)
            w.append({"input_id": np.zeros(m, np.int32),
                      "original_label": rng.integers(0, 4, m)}, patches)
    probs = rng.dirichlet(np.ones(4), n).astype(np.float32)
    write_predictions(path, "m", {
        "predicted": probs.argmax(1).astype(np.int16), "confidence": probs.max(1),
        "probs": probs, "mc_mean": probs, "mc_std": np.full_like(probs, 0.05)},
        {"class_names": CLASSES, "measure": "mc_mean_ts"})
    return path


def wait_paint(win: MainWindow, timeout_s: float = 5.0) -> float:
    """Run the event loop until the gallery's next finished paint; return the time."""
    loop = QEventLoop()
    done: list[float] = []

    def painted() -> None:
        done.append(time.perf_counter())
        loop.quit()

    win.gallery.grid.painted.connect(painted)
    QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    if not done:
        loop.exec()
    win.gallery.grid.painted.disconnect(painted)
    return done[0] if done else float("nan")


def stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"p50": round(float(np.percentile(a, 50)), 2),
            "p95": round(float(np.percentile(a, 95)), 2), "max": round(float(a.max()), 2),
            "n": len(ms)}


def press(win: MainWindow, key: Qt.Key, n: int) -> list[float]:
    grid = win.gallery.grid
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        QTest.keyClick(grid, key)
        t1 = wait_paint(win)
        out.append((t1 - t0) * 1000)
    return out


def run_size(path: Path, presses: int) -> dict[str, object]:
    win = MainWindow()
    win.resize(1500, 940)
    win.show()
    QTest.qWaitForWindowExposed(win)
    t0 = time.perf_counter()
    assert win.open_project(path)
    first = wait_paint(win)
    win.gallery.grid.setFocus()
    win.activateWindow()
    res: dict[str, object] = {"open_to_first_paint_ms": round((first - t0) * 1000, 1)}
    res["key_2_relabel"] = stats(press(win, Qt.Key.Key_2, presses))
    res["space_confirm"] = stats(press(win, Qt.Key.Key_Space, presses))
    res["page_down"] = stats(press(win, Qt.Key.Key_PageDown, min(presses, 50)))
    res["undo_steps"] = win.undo_stack.count()
    win.close()
    return res


def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--presses", type=int, default=200)
    ap.add_argument("--patch", type=int, default=32)
    ap.add_argument("--dir", type=Path)
    args = ap.parse_args(argv)
    create_app()
    out: dict[str, object] = {"machine": {"cores": os.cpu_count(), "cpu": platform.processor()
                                          or platform.machine(),
                                          "qt_platform": os.environ["QT_QPA_PLATFORM"]}}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        # Warm-up: the first window pays one-off costs (imports, fonts, HDF5 start-up).
        run_size(make_project(Path(tmp) / "warm.hemalens", 1000, args.patch), 5)
        for n in (int(s) for s in args.sizes.split(",")):
            path = make_project(Path(tmp) / f"bench{n}.hemalens", n, args.patch)
            out[str(n)] = run_size(path, args.presses)
    sizes = [k for k in out if k.isdigit()]
    if len(sizes) == 2:
        a, b = (out[k] for k in sizes)
        out["ratio_p95_key_2"] = round(b["key_2_relabel"]["p95"] / a["key_2_relabel"]["p95"], 2)
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
