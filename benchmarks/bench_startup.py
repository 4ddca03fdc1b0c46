"""Standalone build vs development venv: size, time to first window, time to first prediction.

Runs the two forms alternately, each in a clean environment (offscreen Qt, a private
HOME/XDG_DATA_HOME holding a copy of the demo project):

- time to first window: launch -> the main window's first paint, read from the
  ``HEMALENS_STARTUP_REPORT`` file the application writes (it then quits), for ``gui``
  (empty window) and ``gui --demo`` (what ``make run`` opens: the demo project);
- time to first prediction: launch -> exit of ``predict DEMO --mc 100`` (3,980 cells of
  the demo project, its LeNet5), the torch import included;
- size: the build folder, and the site-packages the development interpreter imports from
  (the venv ``make run`` creates), the Python installation listed apart.

Prints one JSON object. The build is made by ``installer/build.sh`` first.

    python -m benchmarks.bench_startup [--build dist/cpu/hemalens/hemalens]
                                       [--dev .venv/bin/hemalens] [--runs 5] [--demo PATH]
                                       [--qt-platform offscreen|xcb] [--venv PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def folder_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (symlinks not followed)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                total += os.path.getsize(p)
    return total


def dev_sizes(dev_exe: Path) -> dict[str, int]:
    """Sizes of what the development interpreter runs from: its site-packages, its Python."""
    python = dev_exe.parent / "python"
    code = ("import json, site, sys; print(json.dumps({'paths': [p for p in sys.path if "
            "p.endswith('site-packages')], 'base': sys.base_prefix}))")
    info = json.loads(subprocess.run([str(python), "-c", code], capture_output=True,
                                     text=True, check=True).stdout)
    site = sum(folder_bytes(Path(p)) for p in dict.fromkeys(info["paths"]))
    return {"site_packages_bytes": site, "python_install_bytes": folder_bytes(Path(info["base"]))}


def top_parts(internal: Path, n: int = 8) -> dict[str, int]:
    """The largest top-level entries of the build's ``_internal`` folder."""
    sizes = {}
    for child in internal.iterdir():
        if child.is_symlink():
            continue
        sizes[child.name] = folder_bytes(child) if child.is_dir() else child.stat().st_size
    return dict(sorted(sizes.items(), key=lambda kv: -kv[1])[:n])


QT_PLATFORM = "offscreen"


def make_env(home: Path) -> dict[str, str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "QT_QPA_PLATFORM": QT_PLATFORM,
           "XDG_DATA_HOME": str(home / "data"), "XDG_CONFIG_HOME": str(home / "config"),
           "XDG_CACHE_HOME": str(home / "cache")}
    if QT_PLATFORM == "xcb":
        env["DISPLAY"] = os.environ["DISPLAY"]
    return env


def first_window(exe: Path, home: Path, args: list[str]) -> dict:
    report = home / "first-paint.json"
    report.unlink(missing_ok=True)
    env = {**make_env(home), "HEMALENS_STARTUP_REPORT": str(report)}
    started = time.time()
    out = subprocess.run([str(exe), "gui", *args], env=env, capture_output=True, text=True,
                         timeout=300)
    ended = time.time()
    if out.returncode != 0 or not report.is_file():
        raise RuntimeError(f"{exe} gui {' '.join(args)}: exit {out.returncode}: {out.stderr}")
    data = json.loads(report.read_text())
    return {"seconds": data["first_paint_unix"] - started, "exit_seconds": ended - started,
            "loaded": data["loaded"]}


def first_prediction(exe: Path, home: Path, project: Path) -> dict:
    started = time.time()
    out = subprocess.run([str(exe), "predict", str(project), "--mc", "100", "--json"],
                         env=make_env(home), capture_output=True, text=True, timeout=600)
    seconds = time.time() - started
    if out.returncode != 0:
        raise RuntimeError(f"{exe} predict: exit {out.returncode}: {out.stderr}")
    result = json.loads(out.stdout)
    return {"seconds": seconds, "predict_seconds": result["seconds"], "cells": result["cells"]}


def summary(runs: list[dict]) -> dict:
    s = [r["seconds"] for r in runs]
    return {"median_s": round(statistics.median(s), 3), "min_s": round(min(s), 3),
            "max_s": round(max(s), 3), "runs": [round(x, 3) for x in s]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", type=Path,
                        default=ROOT / "dist" / "cpu" / "hemalens" / "hemalens")
    parser.add_argument("--dev", type=Path, default=ROOT / ".venv" / "bin" / "hemalens")
    parser.add_argument("--venv", type=Path, default=None,
                        help="also time this venv's hemalens (e.g. build/venv-cpu/bin/hemalens:"
                             " the build's own libraries, not frozen)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--demo", type=Path, default=None,
                        help="an existing demo project (built with the dev venv if omitted)")
    parser.add_argument("--qt-platform", default="offscreen", choices=["offscreen", "xcb"],
                        help="xcb: a real X server (e.g. Xvfb) named by $DISPLAY")
    args = parser.parse_args()
    global QT_PLATFORM
    QT_PLATFORM = args.qt_platform
    forms = {"dev": args.dev.absolute(), "build": args.build.absolute()}
    if args.venv is not None:
        forms["venv"] = args.venv.absolute()
    for exe in forms.values():
        if not exe.is_file():
            raise SystemExit(f"{exe}: missing (build it with installer/build.sh)")

    with tempfile.TemporaryDirectory(prefix="hl-bench-startup-") as tmp:
        tmp_path = Path(tmp)
        demo = args.demo
        if demo is None:
            demo = tmp_path / "demo.hemalens"
            code = ("import sys; from hemalens.engine.demo import build_demo_project; "
                    "build_demo_project(sys.argv[1])")
            subprocess.run([str(forms["dev"].parent / "python"), "-c", code, str(demo)],
                           check=True, capture_output=True)
        homes = {}
        for name in forms:
            home = tmp_path / name
            target = home / "data" / "HemaLens" / "HemaLens" / "demo" / "demo.hemalens"
            shutil.copytree(demo, target)  # where `gui --demo` looks for it
            shutil.copytree(demo, home / "predict.hemalens")
            homes[name] = home
        results: dict[str, dict[str, list[dict]]] = {
            name: {"window_empty": [], "window_demo": [], "prediction": []} for name in forms}
        for name, exe in forms.items():  # warm-up: disk cache, Qt font cache, demo check
            first_window(exe, homes[name], ["--demo"])
        for _ in range(args.runs):
            for name, exe in forms.items():  # alternate, so load changes hit both
                results[name]["window_empty"].append(first_window(exe, homes[name], []))
                results[name]["window_demo"].append(first_window(exe, homes[name], ["--demo"]))
                results[name]["prediction"].append(
                    first_prediction(exe, homes[name], homes[name] / "predict.hemalens"))

    out: dict = {"benchmark": "startup", "runs": args.runs, "cpu_count": os.cpu_count(),
                 "qt_platform": QT_PLATFORM}
    for name in forms:
        r = results[name]
        out[name] = {
            "time_to_first_window": summary(r["window_empty"]),
            "time_to_first_window_demo": summary(r["window_demo"]),
            "time_to_first_prediction": summary(r["prediction"]),
            "predict_compute_median_s": round(statistics.median(
                x["predict_seconds"] for x in r["prediction"]), 3),
            "loaded_at_first_paint": sorted({m for x in r["window_demo"] + r["window_empty"]
                                             for m in x["loaded"]}),
        }
    build_dir = forms["build"].parent
    out["build"]["size_bytes"] = folder_bytes(build_dir)
    out["build"]["largest_parts_bytes"] = top_parts(build_dir / "_internal")
    out["dev"].update(dev_sizes(forms["dev"]))
    for key in ("time_to_first_window", "time_to_first_window_demo", "time_to_first_prediction"):
        out[f"ratio_build_over_dev_{key}"] = round(
            out["build"][key]["median_s"] / out["dev"][key]["median_s"], 3)
        if "venv" in forms:
            out[f"ratio_build_over_venv_{key}"] = round(
                out["build"][key]["median_s"] / out["venv"][key]["median_s"], 3)
    out["ratio_build_over_dev_size"] = round(
        out["build"]["size_bytes"] / out["dev"]["site_packages_bytes"], 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
