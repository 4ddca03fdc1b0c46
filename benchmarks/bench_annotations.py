"""Edit latency of the annotation store at 10k, 100k and 1M cells; opening 1M cells + edits.

Usage::

    .venv/bin/python -m benchmarks.bench_annotations [--sizes 10000,100000,1000000]
        [--edits 300] [--open-edits 100000] [--dir DIR]

For each project size it times, as p50/p99 in milliseconds: a single-cell relabel, a
1,000-cell bulk relabel, undo and redo (each a durable SQLite transaction), with
``synchronous=FULL`` (what HemaLens uses) and ``NORMAL`` side by side, and a single-cell
relabel through the review session (what a key press in the gallery costs, view update
bookkeeping included), beside the latency of a bare 4 kB write + fsync on the same disk
(the floor of any durable edit). Then it builds a 1M-cell project with ``--open-edits`` edits and
times opening it (cell table + current labels ready). The patches are 4x4 (the edit cost
does not depend on them; ``bench_before_after`` measures a project with real patches).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from hemalens.engine.project import Project, ProjectWriter
from hemalens.engine.review.session import ReviewSession

CLASSES = ["lymphocyte", "monocyte", "neutrophil", "eosinophil"]


def make_project(path: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    with ProjectWriter(path, patch_kind="phase", patch_shape=(4, 4), classes=CLASSES) as w:
        w.add_input({"file": "bench.tif", "run": "r1"})
        step = 100_000
        for start in range(0, n, step):
            k = min(step, n - start)
            w.append({"input_id": np.zeros(k, np.int32),
                      "original_label": rng.integers(0, len(CLASSES), k)},
                     np.zeros((k, 4, 4), np.float32))
    return path


def pct(values: list[float]) -> dict[str, float]:
    ms = np.asarray(values) * 1e3
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "max_ms": round(float(ms.max()), 3), "n": len(values)}


def time_calls(fn, count: int) -> list[float]:
    out = []
    for k in range(count):
        t0 = time.perf_counter()
        fn(k)
        out.append(time.perf_counter() - t0)
    return out


def edits(path: Path, n: int, count: int, sync: str) -> dict:
    rng = np.random.default_rng(1)
    with Project.open(path, "r+") as p:
        store = p.annotations
        store._conn.execute(f"PRAGMA synchronous={sync}")  # benchmark-only knob
        ids = rng.integers(0, n, count)
        codes = rng.integers(0, len(CLASSES), count)
        single = time_calls(lambda k: store.apply(
            "relabel", [int(ids[k])], user="bench", labels=int(codes[k]),
            decision="relabelled"), count)
        undo = time_calls(lambda k: store.undo("bench"), count)
        redo = time_calls(lambda k: store.redo("bench"), count)
        bulk_n = max(10, count // 10)
        bulk = time_calls(lambda k: store.apply(
            "relabel", rng.choice(n, 1000, replace=False), user="bench",
            labels=int(codes[k % count]), decision="relabelled"), bulk_n)
    return {"single": pct(single), "bulk_1000": pct(bulk), "undo": pct(undo),
            "redo": pct(redo)}


def session_keypress(path: Path, n: int, count: int) -> dict:
    rng = np.random.default_rng(2)
    with ReviewSession.open(path, user="bench") as s:
        s.subscribe(lambda event: None)
        ids = rng.integers(0, n, count)
        lat = time_calls(lambda k: s.relabel([int(ids[k])], int(k % len(CLASSES))), count)
    return pct(lat)


def open_with_edits(path: Path, n: int, n_edits: int) -> dict:
    rng = np.random.default_rng(3)
    t0 = time.perf_counter()
    with Project.open(path, "r+") as p:
        store = p.annotations
        store._conn.execute("PRAGMA synchronous=NORMAL")  # building the fixture only
        done = 0
        while done < n_edits:
            k = min(1000, n_edits - done)
            store.apply("relabel", rng.choice(n, k, replace=False), user="bench",
                        labels=int(rng.integers(0, len(CLASSES))), decision="relabelled")
            done += k
        rows = store.last_change()
    build_s = time.perf_counter() - t0
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        with Project.open(path) as p:
            assert p.cells["given_label"].shape == (n,)
        times.append(time.perf_counter() - t0)
    return {"cells": n, "edits": n_edits, "history_rows": rows,
            "open_s_median": round(statistics.median(times), 3),
            "open_s_all": [round(t, 3) for t in times], "build_edits_s": round(build_s, 1)}


def fsync_floor(folder: Path, count: int = 200) -> dict:
    """Latency of a bare 4 kB write + fsync on the same disk: the floor of a durable edit."""
    f = folder / "fsync.bin"
    fd = os.open(f, os.O_WRONLY | os.O_CREAT)
    try:
        lat = []
        for _ in range(count):
            os.write(fd, b"x" * 4096)
            t0 = time.perf_counter()
            os.fsync(fd)
            lat.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
    return pct(lat)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--edits", type=int, default=300, help="timed single edits per size")
    ap.add_argument("--open-edits", type=int, default=100_000)
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    result: dict = {"benchmark": "annotations", "cpu_count": os.cpu_count(),
                    "machine": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "sizes": {}}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        result["fsync_4k"] = fsync_floor(Path(tmp))
        for n in sizes:
            path = make_project(Path(tmp) / f"p{n}.hemalens", n)
            result["sizes"][str(n)] = {
                "full": edits(path, n, args.edits, "FULL"),
                "normal": edits(path, n, args.edits, "NORMAL"),
                "session_keypress_full": session_keypress(path, n, min(args.edits, 200)),
            }
        big = max(sizes)
        path = Path(tmp) / f"p{big}.hemalens"
        result["open"] = open_with_edits(path, big, args.open_edits)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
