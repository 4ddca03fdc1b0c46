"""The bundled demo project: simulated QPI runs, segmented, trained, predicted, explained.

Built on first start of ``make run`` so the application opens on real-looking data with
every panel filled, without downloading anything: donor A's runs are isolated classes
with their labels (a training set with a few contaminants, so the review queue has
disputed cells), donor B's runs are imported together without labels as one clinical
sample, ``sample-B``, for the technician to confirm and sign off. A LeNet5 is trained and
calibrated on donor A, predicts every cell, and the queued cells are explained with LIME.
The simulated frames stay beside the project (``<name>-frames/``, about 0.8 MB a frame) so
the inspector can show each cell in its frame.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from hemalens.engine.jobs import Progress, SubProgress

DEMO_FRAMES = 400
DEMO_DONORS = 2  # 8 runs of 50 frames: enough frames per run for the median background
DEMO_SEED = 2023
DEMO_EPOCHS = 16
#: Queued cells explained at build time (the rest on demand in the inspector).
DEMO_EXPLAINED = 24


def build_demo_project(
    path: str | Path, progress: Progress | None = None, frames: int = DEMO_FRAMES,
    trained: bool = True,
) -> Path:
    """Build the demo project at ``path`` (see the module docstring).

    Parameters
    ----------
    path : str or Path
        Where the project goes (put in place when the import is complete; the later
        steps add to it).
    progress : Progress, optional
        Progress over every stage; cancelling during the import leaves nothing behind.
    frames : int
        Number of simulated frames (about ten objects each).
    trained : bool
        Also train, predict and explain (False: the segmented cells only).

    Returns
    -------
    Path
        The written project.
    """
    from dataclasses import replace

    from hemalens.engine.ingest import segment_inputs
    from hemalens.engine.io import read_manifest
    from hemalens.engine.synth import QPISimConfig, simulate_qpi

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames_dir = frames_folder(path)
    shutil.rmtree(frames_dir, ignore_errors=True)  # frames of an earlier, broken build
    frames_dir.mkdir()
    scratch = frames_dir
    share = (0.15, 0.15, 0.5, 0.05, 0.15) if trained else (0.5, 0.5, 0, 0, 0)
    try:
        simulate_qpi(
            scratch, QPISimConfig(frames=frames, seed=DEMO_SEED, donors=DEMO_DONORS),
            progress=SubProgress(progress, 0.0, share[0], "Simulating frames"),
        )
        specs = read_manifest(scratch / "manifest.csv")
        donors = sorted({s.donor or "" for s in specs})
        clinical = donors[-1] if len(donors) > 1 else None
        # the last donor's runs become one unlabelled, mixed sample
        specs = [replace(s, given_label=None, run="sample-B") if s.donor == clinical else s
                 for s in specs]
        report = segment_inputs(
            specs, path, progress=SubProgress(progress, share[0], share[1], "Segmenting cells"),
            overwrite=True,  # the demo is ours to rebuild, even when it is broken
        )
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    if trained:
        _train_predict_explain(path, progress, share)
    return Path(report["project"])


def frames_folder(path: str | Path) -> Path:
    """Return where the demo's simulated frames are kept: ``<name>-frames`` beside it."""
    path = Path(path)
    return path.with_name(path.stem + "-frames")


def _train_predict_explain(path: Path, progress: Progress | None,
                           share: tuple[float, ...]) -> None:
    from hemalens.engine.train import TrainConfig
    from hemalens.engine.workflows.explain import explain_project
    from hemalens.engine.workflows.predict import predict_project
    from hemalens.engine.workflows.train import train_project

    start = share[0] + share[1]
    train_project(path, TrainConfig(arch="lenet5", epochs=DEMO_EPOCHS, patience=4,
                                    seed=DEMO_SEED), name="lenet5-demo", passes=50,
                  progress=SubProgress(progress, start, share[2], "Training LeNet5"))
    start += share[2]
    predict_project(path, passes=100,
                    progress=SubProgress(progress, start, share[3], "Predicting"))
    start += share[3]
    from hemalens.engine.review.session import ReviewSession

    with ReviewSession.open(path) as session:
        queued = session.queue[:DEMO_EXPLAINED].tolist()
    if queued:
        explain_project(path, "lime", cells=queued,
                        progress=SubProgress(progress, start, share[4], "Explaining"))
