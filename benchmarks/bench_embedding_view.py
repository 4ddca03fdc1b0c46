"""The embedding view's map at 100k and 1M points, offscreen: set-up, lasso, pan/zoom redraw.

Usage::

    QT_QPA_PLATFORM=offscreen .venv/bin/python -m benchmarks.bench_embedding_view
        [--sizes 100000,1000000] [--repeats 5] [--naive-max 1000000]

For each size (points in 12 Gaussian clusters, 12 colour categories, an 800×600 plot):

- ``setup``: ``MapPlot.set_points`` (colours, drawing order, fit) plus the first paint
  (``QWidget.grab``), what opening a map costs the view;
- ``lasso``: a 40-vertex lasso around one cluster: ``points_in_polygon`` on all points plus
  drawing the new selection (``set_selected`` and a paint);
- ``redraw_zoomed_out`` / ``redraw_zoomed_in``: one pan step (``ViewBox.setRange``) and
  the paint, with the whole map in view (density image at these sizes) and zoomed on one
  cluster (dots).

Side by side, the same steps with the naive pyqtgraph set-up ("before"): one
``ScatterPlotItem`` holding every point with a per-point brush list, and a lasso through
``matplotlib.path.Path.contains_points`` on every point without the box pre-filter. The
naive set-up is skipped above ``--naive-max`` points. Times are medians in milliseconds;
``ratio`` is naive / ours. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402

AIMS_MS = {"setup": 1000.0, "lasso": 100.0, "redraw": 50.0}


def make_points(n: int, k: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-50, 50, (k, 2))
    cat = rng.integers(0, k, n)
    return centres[cat] + rng.normal(0, 3.0, (n, 2)), cat


def lasso_polygon(centre: np.ndarray, r: float = 4.0, v: int = 40) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, v, endpoint=False)
    wobble = 1 + 0.15 * np.sin(5 * t)  # a hand-drawn, slightly concave outline
    return centre + np.c_[r * wobble * np.cos(t), r * wobble * np.sin(t)]


def median_ms(fn, repeats: int) -> float:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return round(statistics.median(out) * 1e3, 2)


def bench_ours(app, xy, cat, colours, repeats: int) -> dict:
    from hemalens.engine.embed.view import points_in_polygon
    from hemalens.gui.embedding_scatter import MapPlot

    plot = MapPlot()
    plot.resize(800, 600)
    plot.show()
    app.processEvents()

    def setup() -> None:
        plot.set_points(xy, cat, colours)
        plot.grab()

    setup_ms = median_ms(setup, max(1, repeats // 2))
    poly = lasso_polygon(np.median(xy[cat == 0], axis=0))

    def lasso() -> None:
        rows = points_in_polygon(plot.xy, poly)
        mask = np.zeros(len(xy), bool)
        mask[rows] = True
        plot.set_selected(mask)
        plot.grab()

    lasso_ms = median_ms(lasso, repeats)
    n_sel = int(plot.selected.sum())
    plot.fit()
    (x0, x1), (y0, y1) = plot.vb.viewRange()
    step = [0.0]

    def pan_out() -> None:
        step[0] += 0.01 * (x1 - x0)
        plot.vb.setRange(xRange=(x0 + step[0], x1 + step[0]), yRange=(y0, y1), padding=0)
        plot.grab()

    out_ms = median_ms(pan_out, repeats)
    mode_out = plot.mode
    c = np.median(xy[cat == 1], axis=0)

    def pan_in() -> None:
        step[0] += 0.05
        plot.vb.setRange(xRange=(c[0] - 2 + step[0], c[0] + 2 + step[0]),
                         yRange=(c[1] - 1.5, c[1] + 1.5), padding=0)
        plot.grab()

    in_ms = median_ms(pan_in, repeats)
    mode_in = plot.mode
    plot.close()
    return {"setup_ms": setup_ms, "lasso_ms": lasso_ms, "selected": n_sel,
            "redraw_zoomed_out_ms": out_ms, "mode_zoomed_out": mode_out,
            "redraw_zoomed_in_ms": in_ms, "mode_zoomed_in": mode_in}


def bench_naive(app, xy, cat, colours, repeats: int) -> dict:
    import pyqtgraph as pg
    from matplotlib.path import Path as MplPath

    w = pg.PlotWidget()
    w.resize(800, 600)
    w.show()
    app.processEvents()
    brushes = [pg.mkBrush(*c) for c in colours.tolist()]
    item = pg.ScatterPlotItem(pxMode=True, size=5, pen=None)
    w.addItem(item)

    def setup() -> None:
        item.setData(xy[:, 0], xy[:, 1], brush=[brushes[c] for c in cat])
        w.plotItem.vb.autoRange()
        w.grab()

    setup_ms = median_ms(setup, 1)
    poly = lasso_polygon(np.median(xy[cat == 0], axis=0))
    sel = pg.ScatterPlotItem(pxMode=True, size=8, brush=None, pen=pg.mkPen("k"))
    w.addItem(sel)

    def lasso() -> None:
        hit = MplPath(np.vstack([poly, poly[:1]]), closed=True).contains_points(xy)
        sel.setData(xy[hit, 0], xy[hit, 1])
        w.grab()

    lasso_ms = median_ms(lasso, repeats)
    vb = w.plotItem.vb
    (x0, x1), (y0, y1) = vb.viewRange()
    step = [0.0]

    def pan_out() -> None:
        step[0] += 0.01 * (x1 - x0)
        vb.setRange(xRange=(x0 + step[0], x1 + step[0]), yRange=(y0, y1), padding=0)
        w.grab()

    out_ms = median_ms(pan_out, max(1, repeats // 2))
    c = np.median(xy[cat == 1], axis=0)

    def pan_in() -> None:
        step[0] += 0.05
        vb.setRange(xRange=(c[0] - 2 + step[0], c[0] + 2 + step[0]),
                    yRange=(c[1] - 1.5, c[1] + 1.5), padding=0)
        w.grab()

    in_ms = median_ms(pan_in, max(1, repeats // 2))
    w.close()
    return {"setup_ms": setup_ms, "lasso_ms": lasso_ms, "redraw_zoomed_out_ms": out_ms,
            "redraw_zoomed_in_ms": in_ms}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--naive-max", type=int, default=1_000_000)
    args = ap.parse_args(argv)
    from hemalens.gui.app import create_app

    app = create_app()
    colours = np.array([[(37 * k) % 256, (91 * k) % 256, (173 * k) % 256, 200]
                        for k in range(12)], np.ubyte)
    out: dict = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                             "python": platform.python_version()},
                 "aims_ms": AIMS_MS, "sizes": {}}
    for n in (int(s) for s in args.sizes.split(",")):
        xy, cat = make_points(n)
        ours = bench_ours(app, xy, cat, colours, args.repeats)
        row: dict = {"ours": ours}
        if n <= args.naive_max:
            naive = bench_naive(app, xy, cat, colours, args.repeats)
            row["naive"] = naive
            row["ratio"] = {k: round(naive[k] / max(ours[k], 1e-3), 1)
                            for k in ("setup_ms", "lasso_ms", "redraw_zoomed_out_ms",
                                      "redraw_zoomed_in_ms")}
        row["meets_aims"] = {
            "setup": ours["setup_ms"] <= AIMS_MS["setup"],
            "lasso": ours["lasso_ms"] <= AIMS_MS["lasso"],
            "redraw": max(ours["redraw_zoomed_out_ms"], ours["redraw_zoomed_in_ms"])
            <= AIMS_MS["redraw"]}
        out["sizes"][str(n)] = row
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
