"""``hemalens`` command line: every GUI action is also available headless.

Each command takes ``--help``, exits non-zero with a one-line reason on bad input, and
with ``--json`` prints exactly one JSON object on stdout (progress goes to stderr).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hemalens.engine import __version__
from hemalens.engine.errors import HemaLensError
from hemalens.engine.jobs import Cancelled

EXIT_OK, EXIT_FAILED_INPUTS, EXIT_USAGE = 0, 1, 2


class _Interrupt:
    """Ctrl+C and SIGTERM cancel through the engine's Progress, as the GUI's Cancel does.

    The first signal only sets a flag: the running job sees ``is_cancelled()`` at its next
    checkpoint, raises ``Cancelled``, and its atomic writer removes the temporary files.
    No ``KeyboardInterrupt`` is thrown into arbitrary code (where a ``__del__`` or a weakref
    callback could swallow it and let the job finish). A second Ctrl+C stops at once.
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: int | None = None

    def handle(self, signum: int, frame: Any) -> None:
        if self.event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl+C: the user really wants out
        self.signum = signum
        self.event.set()
        name = "Ctrl+C" if signum == signal.SIGINT else signal.Signals(signum).name
        print(f"hemalens: {name}: cancelling (press Ctrl+C again to stop at once)",
              file=sys.stderr, flush=True)

    @property
    def exit_code(self) -> int:
        """130 for SIGINT, 143 for SIGTERM (128 + the signal number)."""
        return 128 + (self.signum or signal.SIGINT)

    def install(self) -> dict[int, Any]:
        self.event.clear()
        self.signum = None
        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, self.handle)
        return previous


_INTERRUPT = _Interrupt()


class TqdmProgress:
    """The engine progress protocol shown as a ``tqdm`` bar on stderr.

    ``is_cancelled()`` turns true on Ctrl+C or SIGTERM (see :class:`_Interrupt`).
    """

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
        return _INTERRUPT.event.is_set()

    def close(self) -> None:
        """Finish the bar."""
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> TqdmProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _resolved(name: str | Path) -> Path:
    """Return the absolute path of an input, even of a symlink loop.

    A loop stays as given: its read then fails with a one-line reason naming it, and the
    rest of the batch goes on.
    """
    try:
        return Path(name).resolve()
    except (OSError, RuntimeError):
        return Path(os.path.abspath(name))


def _output_folder(path: Path | None, flag: str) -> None:
    """Refuse, before any work, an output folder option that names an existing file."""
    if path is not None and path.exists() and not path.is_dir():
        raise HemaLensError(f"{path}: {flag} needs a folder, and this is a file")


def _cluster(args: argparse.Namespace) -> Any:
    """Return the executor chosen with ``--workers``/``--scheduler`` (default in-process)."""
    from hemalens.engine.scaleout import parse_cluster

    return parse_cluster(getattr(args, "workers", None), getattr(args, "scheduler", None),
                         connect_timeout=getattr(args, "connect_timeout", 10.0))


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
    with TqdmProgress(not args.json) as progress:
        summary = simulate_qpi(args.out_dir, config, progress=progress)
    _emit(summary, args.json, lambda s: (
        f"wrote {s['frames']} frames in {s['runs']} runs ({s['objects']} objects) "
        f"to {s['out_dir']} in {s['seconds']:.1f} s"
    ))
    return EXIT_OK


def _cmd_segment(args: argparse.Namespace) -> int:
    from hemalens.engine.ingest import refuse_input_as_output, segment_inputs
    from hemalens.engine.io import InputSpec, read_manifest
    from hemalens.engine.segment import SegmentSettings

    if not args.inputs and not args.manifest:
        raise HemaLensError("segment: give input files or --manifest")
    refuse_input_as_output([*args.inputs, *([args.manifest] if args.manifest else [])],
                           args.output)
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
                path=_resolved(name),
                file=name,
                modality=args.modality,
                pixel_size_um=args.pixel_size,
                wavelength_nm=args.wavelength,
                background=_resolved(args.reference) if args.reference else None,
                phase_scale=args.phase_scale,
            )
        )
    overrides: dict[str, Any] = {}
    if args.background is not None:
        overrides["background_n"] = args.background
    if args.threshold is not None:
        overrides["threshold_rad"] = args.threshold
    settings = SegmentSettings.from_dict(SegmentSettings().to_dict() | overrides)
    with TqdmProgress(not args.json) as progress:
        report = segment_inputs(
            specs, args.output, settings, default_label=args.label, progress=progress,
            overwrite=args.force, cluster=_cluster(args),
        )
    for warning in report.get("warnings", []):
        print(f"hemalens: warning: {warning}", file=sys.stderr)
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
            if isinstance(v, list):
                return ", ".join(map(str, v)) or "none"
            return "none" if v is None else str(v)

        return "\n".join(f"{k.replace('_', ' ')}: {fmt(v)}" for k, v in i.items())

    _emit(info, args.json, human)
    return EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    from hemalens.engine.project import export_cells_csv

    rows = export_cells_csv(args.project, args.csv, force=args.force)
    _emit({"rows": rows, "csv": str(args.csv)}, args.json,
          lambda r: f"wrote {r['rows']} rows to {r['csv']}")
    return EXIT_OK


def _train_config(args: argparse.Namespace) -> Any:
    from hemalens.engine.train import TrainConfig

    return TrainConfig(
        arch=args.arch, dropout=args.dropout, input_size=args.input_size, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, patience=args.patience, seed=args.seed,
        test_donor=args.test_donor, device=args.device,
    )


def _cmd_train(args: argparse.Namespace) -> int:
    from hemalens.engine.workflows.train import train_project

    with TqdmProgress(not args.json) as progress:
        summary = train_project(args.project, _train_config(args), name=args.name,
                                passes=args.mc, progress=progress)

    def human(r: dict[str, Any]) -> str:
        test = r["test"].get("table1", {}).get("freq", {})
        f1 = f", test macro-F1 {test['f1']:.3f}" if test else ""
        return (f"trained {r['model']} on {r['cells']} cells in {r['seconds']:.0f} s "
                f"(best epoch {r['best_epoch']}, validation macro-F1 {r['val_macro_f1']:.3f}"
                f"{f1}); T = {r['calibration']['temperature']:.2f}")

    _emit(summary, args.json, human)
    return EXIT_OK


def _cmd_predict(args: argparse.Namespace) -> int:
    from hemalens.engine.workflows.predict import predict_project

    with TqdmProgress(not args.json) as progress:
        summary = predict_project(args.project, model_name=args.model, passes=args.mc,
                                  measure=args.measure, progress=progress,
                                  cluster=_cluster(args))
    _emit(summary, args.json, lambda r: (
        f"predicted {r['cells']} cells with {r['model']} ({r['passes']} MC passes, "
        f"{r['cells_per_s']:.0f} cells/s): "
        + ", ".join(f"{k} {v}" for k, v in r["predicted"].items())))
    return EXIT_OK


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from hemalens.engine.workflows.evaluate import evaluate_project

    _output_folder(args.out, "--out")
    with TqdmProgress(not args.json) as progress:
        result = evaluate_project(args.project, _train_config(args), runs=args.runs,
                                  passes=args.mc, out_dir=args.out, progress=progress,
                                  cluster=_cluster(args))

    def human(r: dict[str, Any]) -> str:
        lines = [f"{r['runs']} runs on {r['cells']} cells"]
        lines += [f"{row['inference']:>9} {row['metric']:<9} {row['mean']:.3f} ± {row['std']:.3f}"
                  for row in r["table1"]]
        lines += [f"{row['measure']:>9} {row['metric']}: {row['uncalibrated']['mean']:.4f} -> "
                  f"{row['calibrated']['mean']:.4f}" for row in r["table2"]]
        return "\n".join(lines)

    _emit(result, args.json, human)
    return EXIT_OK


def _cmd_review(args: argparse.Namespace) -> int:
    from hemalens.engine.workflows.review import review_project

    _output_folder(args.report, "--report")
    with TqdmProgress(not args.json) as progress:
        review = review_project(args.project, model_name=args.model, threshold=args.threshold,
                                with_ood=not args.no_ood, ood_n=args.ood_n, passes=args.mc,
                                report_dir=args.report, progress=progress)

    def human(r: dict[str, Any]) -> str:
        lines = [f"{len(r['queue'])} cells in the mislabel queue (confidence >= {r['threshold']})"]
        for sample, row in r["differential"].items():
            parts = [f"{c} {v['percent']:.1f}%" for c, v in row.items() if not c.startswith("_")]
            lines.append(f"{sample}: " + ", ".join(parts))
        if r.get("report"):
            lines.append(f"report: {r['report']}")
        return "\n".join(lines)

    _emit(review, args.json, human)
    return EXIT_OK


def _id_list(text: str) -> list[int]:
    """Parse ``3,17,40-45`` into cell ids."""
    out: list[int] = []
    try:
        for part in (t.strip() for t in text.split(",")):
            if not part:
                continue
            if "-" in part[1:]:
                lo, hi = part.split("-", 1) if not part.startswith("-") else (part, part)
                out.extend(range(int(lo), int(hi) + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--cells takes comma-separated cell ids or ranges (3,17,40-45), got {text!r}"
        ) from None
    return out


def _cmd_label(args: argparse.Namespace) -> int:
    from hemalens.engine.review.session import ReviewSession

    actions = [a for a in ("set", "confirm", "exclude", "unsure", "undo", "redo")
               if getattr(args, a) not in (None, False)]
    if len(actions) != 1:
        raise HemaLensError("label: give exactly one of --set CLASS, --confirm, --exclude, "
                            "--unsure, --undo, --redo")
    action = actions[0]
    if action not in ("undo", "redo") and not args.cells:
        raise HemaLensError(f"label --{action}: give the cells with --cells")
    with ReviewSession.open(args.project, user=args.user) as session:
        if action == "set":
            label = None if args.set == "" else args.set
            result = session.relabel(args.cells, label, reason=args.reason)
        elif action == "confirm":
            result = session.confirm(args.cells, reason=args.reason)
        elif action == "exclude":
            result = session.exclude(args.cells, reason=args.reason)
        elif action == "unsure":
            result = session.mark_unsure(args.cells, reason=args.reason)
        elif action == "undo":
            result = session.undo()
        else:
            result = session.redo()
        user = session.user
    out = {"op": result.op, "action": result.action, "target": result.target,
           "changed": int(result.cell_ids.size), "cell_ids": result.cell_ids.tolist(),
           "skipped": result.skipped, "user": user}

    def human(r: dict[str, Any]) -> str:
        if r["action"] is None:
            return f"{r['op']}: nothing to do" + (
                f" ({r['skipped']} cells changed since by another edit)" if r["skipped"] else "")
        skipped = f"; {r['skipped']} left as later edits set them" if r["skipped"] else ""
        return f"{r['op']}: {r['changed']} cells changed (action {r['action']}){skipped}"

    _emit(out, args.json, human)
    return EXIT_OK


def _cmd_history(args: argparse.Namespace) -> int:
    from hemalens.engine.project import DECISIONS, Project

    with Project.open(args.project) as project:
        h = project.annotations.history(args.cell) if project.annotations else {}
        names = [*project.classes]

    def value(field: str, code: int) -> str:
        if field == "label":
            return names[code] if 0 <= code < len(names) else ""
        return DECISIONS[code] if 0 <= code < len(DECISIONS) else str(code)

    rows = [
        {"action": int(h["action"][i]), "op": str(h["op"][i]), "cell_id": int(h["cell_id"][i]),
         "field": str(h["field"][i]),
         "old": value(str(h["field"][i]), int(h["old"][i])),
         "new": value(str(h["field"][i]), int(h["new"][i])),
         "time": str(h["time"][i]), "user": str(h["user"][i]), "reason": str(h["reason"][i])}
        for i in range(len(h.get("cell_id", [])))
    ]

    def human(r: dict[str, Any]) -> str:
        if not r["rows"]:
            return "no edits"
        return "\n".join(
            f"{x['time']}  {x['user']:<12} {x['op']:<8} cell {x['cell_id']:>7} {x['field']:<8} "
            f"{x['old'] or '-'} -> {x['new'] or '-'}" + (f"  ({x['reason']})" if x["reason"]
                                                       else "")
            for x in r["rows"])

    _emit({"rows": rows}, args.json, human)
    return EXIT_OK


def _cmd_signoff(args: argparse.Namespace) -> int:
    from hemalens.engine.review.session import ReviewSession

    with ReviewSession.open(args.project, user=args.user) as session:
        if args.reopen:
            session.reopen(args.sample, reason=args.reason)
            out: dict[str, Any] = {"sample": args.sample, "signed_off": False,
                                   "user": session.user, "reopened": True}
        else:
            counts = session.sign_off(args.sample, reason=args.reason)
            out = {"sample": args.sample, "signed_off": True, "user": session.user,
                   "counts": counts}

    def human(r: dict[str, Any]) -> str:
        if r.get("reopened"):
            return f"sample {r['sample']} reopened by {r['user']}"
        c = r["counts"]
        pct = ", ".join(f"{k} {v:.1f}%" for k, v in c["percent"].items() if v == v)
        return (f"sample {r['sample']} signed off by {r['user']}: {c['counted']} cells "
                f"counted ({pct}); {c['relabelled']} relabelled")

    _emit(out, args.json, human)
    return EXIT_OK


def _cmd_synth_marrow(args: argparse.Namespace) -> int:
    from hemalens.engine.synth.marrow import import_marrow_patches, simulate_marrow

    if args.crowded:
        from hemalens.engine.synth.marrow_fields import FieldConfig, simulate_fields

        fields = simulate_fields(args.out_dir, FieldConfig(fields=args.crowded, seed=args.seed))
        _emit(fields, args.json, lambda s: (
            f"wrote {s['fields']} crowded fields with {s['cells']} cells to {s['out_dir']}"))
        return EXIT_OK
    with TqdmProgress(not args.json) as progress:
        summary = simulate_marrow(args.out_dir, cells=args.cells, seed=args.seed,
                                  size=args.size, fmt=args.format, progress=progress)
        if args.project is not None:
            summary["project"] = import_marrow_patches(args.out_dir, args.project,
                                                       progress=progress)
    _emit(summary, args.json, lambda s: (
        f"wrote {s['cells']} crops of {len(s['classes'])} classes to {s['out_dir']} "
        f"in {s['seconds']:.1f} s" + (f"; project {args.project}" if args.project else "")))
    return EXIT_OK


def _cell_selection(text: str) -> str | list[int]:
    if text in ("all", "queue"):
        return text
    try:
        return _id_list(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"--cells takes all, queue or cell ids and ranges (3,17,40-45), got {text!r}"
        ) from None


def _cmd_explain(args: argparse.Namespace) -> int:
    from hemalens.engine.workflows.explain import explain_meta, explain_project

    _output_folder(args.png, "--png")
    _output_folder(args.out, "--out")
    with TqdmProgress(not args.json) as progress:
        if args.meta:
            if args.out is None:
                raise argparse.ArgumentTypeError("--meta needs --out DIR")
            result = explain_meta(args.project, args.out, method=args.method,
                                  model_name=args.model, seed=args.seed, progress=progress,
                                  cluster=_cluster(args))
        else:
            result = explain_project(args.project, args.method, cells=args.cells,
                                     model_name=args.model, seed=args.seed, force=args.force,
                                     mc_passes=args.mc, target=args.target,
                                     png_dir=args.png, progress=progress,
                                     cluster=_cluster(args))

    def human(r: dict[str, Any]) -> str:
        if "clusters" in r:
            comp = "; ".join(
                f"cluster {c['id']} ({c['size']}): " + ", ".join(
                    f"{k} {v:.0%}" for k, v in c["composition"].items() if v > 0)
                for c in r["clusters"])
            return (f"{r['method']} meta-explanations of {r['cells']} cells -> "
                    f"{r['files'][0]}\n{comp}")
        return (f"{r['method']}: {r['cells']} cells ({r['computed']} computed, {r['cached']} "
                f"cached) in {r['seconds']:.1f} s, {r['per_cell_ms']:.1f} ms per cell")

    _emit(result, args.json, human)
    return EXIT_OK


def _types(text: str) -> tuple[str, ...]:
    types = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [t for t in types if t not in ("c", "s", "os", "r")]
    if bad or not types:
        raise argparse.ArgumentTypeError(
            f"intervention types are a comma list of c, s, os, r; got {text!r}")
    return types


def _cmd_embed_train(args: argparse.Namespace) -> int:
    from hemalens.engine.workflows.embed import embed_train_project

    with TqdmProgress(not args.json) as progress:
        result = embed_train_project(
            args.project, loss=args.loss, types=args.types, class_weights=args.class_weights,
            alpha=args.alpha, pli_targets=args.pli_targets, folds=args.folds,
            epochs=args.epochs, backbone=args.backbone, input_size=args.input_size,
            seed=args.seed, name=args.name, device=args.device, patience=args.patience,
            progress=progress)

    def human(r: dict[str, Any]) -> str:
        lines = [f"fold {f['fold']}: test macro-F1 {f['test_f1']:.3f}" for f in r["folds"]]
        lines.append(f"{r['loss']}: macro-F1 {r['mean_f1']:.3f} ± {r['std_f1']:.3f} "
                     f"over {len(r['folds'])} folds; stored as {r['model']}")
        return "\n".join(lines)

    _emit(result, args.json, human)
    return EXIT_OK


def _cmd_dry_run(args: argparse.Namespace) -> int:
    from hemalens.engine.workflows.dryrun import dry_run_file

    _output_folder(args.out, "--out")
    with TqdmProgress(not args.json) as progress:
        result = dry_run_file(args.embeddings, types=args.types, iterations=args.iterations,
                              grid=args.grid, folds=args.folds, out_dir=args.out,
                              seed=args.seed, progress=progress, cluster=_cluster(args))

    def human(r: dict[str, Any]) -> str:
        return "\n".join(
            f"{'+'.join(b['types']):>10}: max macro-F1 {b['max_f1']:.3f} after "
            f"{b['iterations_to_max']} iterations with {b['params']}" for b in r["best"])

    _emit(result, args.json, human)
    return EXIT_OK


# ---------------------------------------------------------------- parser


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"--workers takes 0 or more, got {text!r}")
    return value


def _cluster_options(q: argparse.ArgumentParser) -> None:
    """Add ``--workers``, ``--scheduler`` and ``--connect-timeout`` to a command."""
    g = q.add_argument_group("scale-out (Dask)")
    g.add_argument("--workers", type=_non_negative, default=0, metavar="N",
                   help="run the work on N local worker processes (default 0: in-process)")
    g.add_argument("--scheduler", metavar="tcp://HOST:8786",
                   help="run the work on this Dask scheduler's workers (same HemaLens "
                        "version, same paths to the inputs and the project)")
    g.add_argument("--connect-timeout", type=float, default=10.0, metavar="S",
                   help="seconds to wait for the scheduler (default 10)")


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
    p.add_argument("project", nargs="?", help="project folder (NAME.hemalens) to open")
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

    q = synth.add_parser("marrow", help="stained bone-marrow cell crops with truth.csv")
    q.add_argument("out_dir", type=Path)
    q.add_argument("--cells", type=int, default=2000)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--size", type=int, default=96, help="crop side in px (default 96)")
    q.add_argument("--format", default="png", choices=["png", "h5"],
                   help="one PNG per crop, or one HDF5 file")
    q.add_argument("--project", type=Path,
                   help="also write a project with the crops as cells (no segmentation)")
    q.add_argument("--crowded", type=int, default=0, metavar="N",
                   help="instead write N crowded fields (touching, overlapping cells) with "
                        "truth label images, fields_truth.csv and manifest.csv")
    q.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    q.set_defaults(func=_cmd_synth_marrow)

    p = sub.add_parser("segment", help="segment inputs into a new project")
    p.add_argument("inputs", nargs="*", help="input files (phase stacks, holograms, RGB crops)")
    p.add_argument("-o", "--output", required=True, type=Path,
                   help="project folder to write (NAME.hemalens)")
    p.add_argument("--force", action="store_true",
                   help="replace what is at --output even if it is not a project or holds edits")
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
    _cluster_options(p)
    p.set_defaults(func=_cmd_segment)

    p = sub.add_parser("label", help="relabel, confirm, exclude or mark cells; undo/redo")
    p.add_argument("project", type=Path)
    p.add_argument("--cells", type=_id_list, help="cell ids: 3,17,40-45")
    p.add_argument("--set", metavar="CLASS", help="give the cells this class ('' removes it)")
    p.add_argument("--confirm", action="store_true",
                   help="confirm the label (unlabelled cells take their predicted class)")
    p.add_argument("--exclude", action="store_true",
                   help="not classed: leave the cells out of the differential")
    p.add_argument("--unsure", action="store_true", help="mark the cells unsure")
    p.add_argument("--undo", action="store_true", help="undo your newest edit")
    p.add_argument("--redo", action="store_true", help="redo your newest undone edit")
    p.add_argument("--reason", default="", help="why (recorded in the history)")
    p.add_argument("--user", help="who (default: the operating-system user)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=_cmd_label)

    p = sub.add_parser("history", help="the label and decision history")
    p.add_argument("project", type=Path)
    p.add_argument("--cell", type=int, help="only this cell")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=_cmd_history)

    p = sub.add_parser("signoff", help="sign a sample off (refused while cells are undecided)")
    p.add_argument("project", type=Path)
    p.add_argument("--sample", required=True, help="the sample (run, or file when no run)")
    p.add_argument("--user", help="who (default: the operating-system user)")
    p.add_argument("--reopen", action="store_true",
                   help="reopen a signed-off sample for edits (needs --reason)")
    p.add_argument("--reason", default="", help="why (recorded)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=_cmd_signoff)

    p = sub.add_parser("info", help="summarise a project")
    p.add_argument("project", type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("export", help="export the cell table as CSV")
    p.add_argument("project", type=Path)
    p.add_argument("csv", type=Path)
    p.add_argument("--force", action="store_true",
                   help="replace an existing file that is not an earlier export")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_export)

    def training_options(q: argparse.ArgumentParser) -> None:
        q.add_argument("--arch", default="lenet5", choices=["lenet5", "alexnet"])
        q.add_argument("--dropout", type=float,
                       help="dropout rate (default 0.25 LeNet5, 0.5 AlexNet)")
        q.add_argument("--input-size", type=int,
                       help="model input px (LeNet5 32; AlexNet 64 on CPU by default, paper 224)")
        q.add_argument("--epochs", type=int, default=30)
        q.add_argument("--batch-size", type=int, default=128)
        q.add_argument("--lr", type=float, default=1e-3)
        q.add_argument("--patience", type=int, default=5, help="early-stopping patience (epochs)")
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--test-donor", help="hold this donor out as the test split")
        q.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
        q.add_argument("--mc", type=int, default=100, help="MC-dropout passes (default 100)")
        q.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    p = sub.add_parser("train", help="train a classifier on the labelled cells, calibrate it")
    p.add_argument("project", type=Path)
    p.add_argument("--name", help="model name (default: arch and time)")
    training_options(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("predict", help="predict every cell (frequentist + MC dropout, calibrated)")
    p.add_argument("project", type=Path)
    p.add_argument("--model", help="model name (default: the active model)")
    p.add_argument("--mc", type=int, default=100, help="MC-dropout passes (default 100)")
    p.add_argument("--measure", default="mc_mean_ts",
                   choices=["freq", "freq_ts", "mc_mean", "mc_mean_ts", "mc_median", "mc_std"],
                   help="confidence measure behind the shown class and confidence")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    _cluster_options(p)
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("evaluate", help="repeated runs: F1, ECE/MCE, reliability plots")
    p.add_argument("project", type=Path)
    p.add_argument("--runs", type=int, default=3, help="independent runs (paper: 15)")
    p.add_argument("--out", type=Path, help="folder for reliability plots (PNG)")
    training_options(p)
    _cluster_options(p)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("review", help="mislabel queue, differential counts, OOD tests, report")
    p.add_argument("project", type=Path)
    p.add_argument("--model", help="model name (default: the active model)")
    p.add_argument("--threshold", type=float, default=0.95,
                   help="calibrated confidence for the mislabel queue (default 0.95)")
    p.add_argument("--no-ood", action="store_true", help="skip the OOD statistics")
    p.add_argument("--ood-n", type=int, default=300, help="cells per OOD set")
    p.add_argument("--mc", type=int, default=100, help="MC-dropout passes (default 100)")
    p.add_argument("--report", type=Path, help="write an HTML report with figures here")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=_cmd_review)

    p = sub.add_parser("explain", help="explanation maps per cell, or meta-explanations")
    p.add_argument("project", type=Path)
    p.add_argument("--method", required=True,
                   choices=["lime", "gradcam", "guided-backprop", "guided-gradcam",
                            "occlusion", "saliency"])
    p.add_argument("--cells", type=_cell_selection, default="all",
                   help="all (QC-passed), queue (mislabel queue) or ids: 3,17,42")
    p.add_argument("--model", help="model name (default: the active model)")
    p.add_argument("--seed", type=int, default=0, help="seed of LIME's perturbations")
    p.add_argument("--mc", type=int, default=0,
                   help="LIME only: explain the mean of N MC-dropout passes (default 0: softmax)")
    p.add_argument("--target", metavar="CLASS",
                   help="explain this class for every cell (default: the shown prediction)")
    p.add_argument("--png", type=Path, metavar="DIR",
                   help="also write one overlay PNG per cell (blue for, red against)")
    p.add_argument("--force", action="store_true", help="recompute cached maps")
    p.add_argument("--meta", action="store_true",
                   help="aggregate by label x confidence and cluster the maps (needs --out)")
    p.add_argument("--out", type=Path, help="folder for the meta-explanation PNGs and JSON")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    _cluster_options(p)
    p.set_defaults(func=_cmd_explain)

    p = sub.add_parser("embed", help="embedding networks with triplet loss and interventions")
    embed = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = embed.add_parser("train", help="k-fold training, SVM test macro-F1, store the model")
    q.add_argument("project", type=Path)
    q.add_argument("--loss", default="tml", choices=["tml", "ali", "pali"])
    q.add_argument("--types", type=_types, default=("c", "s"),
                   help="intervention types for ali/pali: c,s,os,r (default c,s)")
    q.add_argument("--class-weights", action="store_true", help="inverse class-frequency weights")
    q.add_argument("--alpha", type=float, help="intervention weight (default 0.8 ali, 0.9 pali)")
    q.add_argument("--pli-targets", type=Path, help="manual PLI edits (JSON from the GUI)")
    q.add_argument("--folds", type=int, default=6, help="cross-validation folds (paper: 6)")
    q.add_argument("--epochs", type=int, default=30)
    q.add_argument("--backbone", default="small", choices=["small", "resnet18", "densenet121"],
                   help="small CNN for CPU work; densenet121 as in the paper")
    q.add_argument("--input-size", type=int, default=64, help="network input px (default 64)")
    q.add_argument("--patience", type=int, default=10,
                   help="early stopping: epochs without a better validation macro-F1")
    q.add_argument("--name", help="name of the stored embedding model (default: loss and time)")
    q.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    q.set_defaults(func=_cmd_embed_train)

    p = sub.add_parser("interventions", help="latent-intervention analyses")
    inter = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = inter.add_parser("dry-run", help="apply interventions to a fixed embedding, score SVMs")
    q.add_argument("embeddings", type=Path,
                   help="project with a trained embedding model, or .npz with X, y, groups")
    q.add_argument("--types", type=_types, default=("c", "s", "os", "r"),
                   help="intervention types whose combinations are analysed (default c,s,os,r)")
    q.add_argument("--iterations", type=int, default=50)
    q.add_argument("--grid", default="small", choices=["paper", "small"])
    q.add_argument("--folds", type=int, default=6)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--out", type=Path, help="folder for the curves (PNG) and Table I")
    q.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    _cluster_options(q)
    q.set_defaults(func=_cmd_dry_run)
    return parser


def _subject(args: argparse.Namespace) -> str:
    """``"<path>: "`` of what a command works on (its project or first input), else ``""``."""
    for key in ("project", "embeddings", "output"):
        value = getattr(args, key, None)
        if value:
            return f"{value}: "
    inputs = getattr(args, "inputs", None)
    return f"{inputs[0]}: " if inputs else ""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``hemalens`` command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["gui", *(argv or [])])
    previous = _INTERRUPT.install() if args.command != "gui" else {}
    try:
        code = int(args.func(args))
        if _INTERRUPT.event.is_set():  # finished despite the request: report it as asked
            print("hemalens: cancelled after the work was done", file=sys.stderr)
        return code
    except (HemaLensError, argparse.ArgumentTypeError) as err:
        print(f"hemalens: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as err:
        # Engine functions reject bad parameters with one-line ValueErrors; a user sees the
        # line, a developer sets HEMALENS_DEBUG=1 for the traceback.
        if os.environ.get("HEMALENS_DEBUG"):
            raise
        text = str(err).splitlines()[0] if str(err) else repr(err)
        print(f"hemalens: error: {text}", file=sys.stderr)
        return EXIT_USAGE
    except Cancelled:
        print("hemalens: cancelled; nothing was changed", file=sys.stderr)
        return _INTERRUPT.exit_code
    except (OSError, RuntimeError, KeyError, IndexError, TypeError, AttributeError,
            MemoryError, RecursionError) as err:
        # The last net under the validation layer: still one line, naming what the
        # command worked on; HEMALENS_DEBUG=1 shows the traceback.
        if os.environ.get("HEMALENS_DEBUG"):
            raise
        where = _subject(args)
        text = " ".join(str(err).split()) or type(err).__name__
        print(f"hemalens: error: {where}{type(err).__name__}: {text}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("hemalens: interrupted", file=sys.stderr)
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
