"""``hemalens`` command line: every GUI action is also available headless.

Each command takes ``--help``, exits non-zero with a one-line reason on bad input, and
with ``--json`` prints exactly one JSON object on stdout (progress goes to stderr).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hemalens.engine import __version__
from hemalens.engine.errors import HemaLensError
from hemalens.engine.jobs import Cancelled

EXIT_OK, EXIT_FAILED_INPUTS, EXIT_USAGE = 0, 1, 2


class TqdmProgress:
    """The engine progress protocol shown as a ``tqdm`` bar on stderr."""

    def __init__(self, enabled: bool = True) -> None:
        self._enabled = enabled and sys.stderr.isatty()
        self._bar: Any = None
        self._status = ""

    def set_status(self, text: str) -> None:  # noqa: D102
        self._status = text
        if self._bar is not None:
            self._bar.set_description(text)

    def set_progress(self, done: int, total: int | None) -> None:  # noqa: D102
        if not self._enabled:
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=self._status, file=sys.stderr, unit="frame")
        if total is not None and self._bar.total != total:
            self._bar.total = total
        self._bar.n = done
        self._bar.refresh()

    def is_cancelled(self) -> bool:  # noqa: D102
        return False

    def close(self) -> None:
        """Finish the bar."""
        if self._bar is not None:
            self._bar.close()


def _emit(result: dict[str, Any], as_json: bool, human: Callable[[dict[str, Any]], str]) -> None:
    if as_json:
        print(json.dumps(result, default=str))
    else:
        print(human(result))


# ---------------------------------------------------------------- commands


def _cmd_gui(args: argparse.Namespace) -> int:
    # The one hand-over from the engine to the GUI: resolved at run time so that importing
    # the engine (or running any other command) never loads Qt.
    gui_app = importlib.import_module("hemalens.gui.app")
    return int(gui_app.run(project=args.project, demo=args.demo))


def _cmd_synth_qpi(args: argparse.Namespace) -> int:
    from hemalens.engine.synth import QPISimConfig, simulate_qpi

    config = QPISimConfig(
        frames=args.frames,
        seed=args.seed,
        holograms=args.holograms,
        pixel_size_um=args.pixel_size,
        label_noise=args.label_noise,
        donors=args.donors,
    )
    progress = TqdmProgress(not args.json)
    try:
        summary = simulate_qpi(args.out_dir, config, progress=progress)
    finally:
        progress.close()
    _emit(summary, args.json, lambda s: (
        f"wrote {s['frames']} frames in {s['runs']} runs ({s['objects']} objects) "
        f"to {s['out_dir']} in {s['seconds']:.1f} s"
    ))
    return EXIT_OK


def _cmd_segment(args: argparse.Namespace) -> int:
    from hemalens.engine.ingest import segment_inputs
    from hemalens.engine.io import InputSpec, read_manifest
    from hemalens.engine.segment import SegmentSettings

    if not args.inputs and not args.manifest:
        raise HemaLensError("segment: give input files or --manifest")
    specs: list[InputSpec] = []
    if args.manifest:
        specs += read_manifest(
            args.manifest, pixel_size_um=args.pixel_size, wavelength_nm=args.wavelength
        )
        if args.modality != "auto":
            specs = [s for s in specs if s.modality == args.modality]
    for name in args.inputs:
        specs.append(
            InputSpec(
                path=Path(name).resolve(),
                file=name,
                modality=args.modality,
                pixel_size_um=args.pixel_size,
                wavelength_nm=args.wavelength,
                background=Path(args.reference).resolve() if args.reference else None,
                phase_scale=args.phase_scale,
            )
        )
    overrides: dict[str, Any] = {}
    if args.background is not None:
        overrides["background_n"] = args.background
    if args.threshold is not None:
        overrides["threshold_rad"] = args.threshold
    settings = SegmentSettings.from_dict(SegmentSettings().to_dict() | overrides)
    progress = TqdmProgress(not args.json)
    try:
        report = segment_inputs(
            specs, args.output, settings, default_label=args.label, progress=progress
        )
    finally:
        progress.close()
    for failure in report["failed_inputs"]:
        print(f"hemalens: failed: {failure['error']}", file=sys.stderr)

    def human(r: dict[str, Any]) -> str:
        rejected = ", ".join(f"{k} {v}" for k, v in r["rejected"].items()) or "none"
        return (
            f"{r['inputs']} inputs, {r['frames']} frames, {r['objects']} objects, "
            f"{r['cells']} cells passed QC (rejected: {rejected}), "
            f"{len(r['failed_inputs'])} failed, {r['seconds']:.1f} s -> {r['project']}"
        )

    _emit(report, args.json, human)
    return EXIT_FAILED_INPUTS if report["failed_inputs"] else EXIT_OK


def _cmd_info(args: argparse.Namespace) -> int:
    from hemalens.engine.project import project_info

    info = project_info(args.project)

    def human(i: dict[str, Any]) -> str:
        def fmt(v: Any) -> str:
            if isinstance(v, dict):
                return ", ".join(f"{k} {n}" for k, n in v.items()) or "none"
            return str(v)

        return "\n".join(f"{k.replace('_', ' ')}: {fmt(v)}" for k, v in i.items())

    _emit(info, args.json, human)
    return EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    from hemalens.engine.project import export_cells_csv

    rows = export_cells_csv(args.project, args.csv)
    _emit({"rows": rows, "csv": str(args.csv)}, args.json,
          lambda r: f"wrote {r['rows']} rows to {r['csv']}")
    return EXIT_OK


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``hemalens`` command."""
    parser = argparse.ArgumentParser(
        prog="hemalens",
        description="Review single-cell classifications of blood cells (QPI holograms, "
        "phase images, stained crops). Without a command the GUI opens.",
    )
    parser.add_argument("--version", action="version", version=f"hemalens {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    p = sub.add_parser("gui", help="open the desktop application")
    p.add_argument("project", nargs="?", help="project file (.h5) to open")
    p.add_argument("--demo", action="store_true",
                   help="open the demo project (created on first use)")
    p.set_defaults(func=_cmd_gui)

    p = sub.add_parser("synth", help="simulate data with ground truth")
    synth = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    q = synth.add_parser("qpi", help="QPI phase frames (+ off-axis holograms) with truth.csv")
    q.add_argument("out_dir", type=Path)
    q.add_argument("--frames", type=int, default=300)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--holograms", action="store_true", help="also write off-axis holograms")
    q.add_argument("--pixel-size", type=float, default=0.3, help="um per pixel (default 0.3)")
    q.add_argument("--label-noise", type=float, default=0.03, help="contaminant fraction")
    q.add_argument("--donors", type=int, default=4)
    q.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    q.set_defaults(func=_cmd_synth_qpi)

    p = sub.add_parser("segment", help="segment inputs into a new project file")
    p.add_argument("inputs", nargs="*", help="input files (phase stacks, holograms, RGB crops)")
    p.add_argument("-o", "--output", required=True, type=Path, help="project file to write")
    p.add_argument("--manifest", type=Path, help="manifest.csv listing inputs and their metadata")
    p.add_argument("--modality", default="auto",
                   choices=["auto", "phase", "hologram", "qlsi", "rgb"])
    p.add_argument("--pixel-size", type=float, help="um per pixel where the file does not say")
    p.add_argument("--wavelength", type=float, help="nm, where the file does not say")
    p.add_argument("--reference", help="empty-field hologram / QLSI reference for the inputs")
    p.add_argument("--phase-scale", type=float, help="rad per count for integer phase images")
    p.add_argument("--background", type=int, help="frames per median background (default 100)")
    p.add_argument("--threshold", type=float, help="segmentation threshold in rad")
    p.add_argument("--label", help="given label for inputs that have none")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=_cmd_segment)

    p = sub.add_parser("info", help="summarise a project file")
    p.add_argument("project", type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("export", help="export the cell table as CSV")
    p.add_argument("project", type=Path)
    p.add_argument("csv", type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``hemalens`` command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["gui", *(argv or [])])
    try:
        return int(args.func(args))
    except HemaLensError as err:
        print(f"hemalens: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except Cancelled:
        print("hemalens: cancelled", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("hemalens: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
