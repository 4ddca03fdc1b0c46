"""The bundled demo project: simulated QPI runs segmented into a project file.

Built on first start of ``make run`` so the application opens on real-looking data
without downloading anything.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hemalens.engine.jobs import Progress, SubProgress

DEMO_FRAMES = 400
DEMO_DONORS = 2  # 8 runs of 50 frames: enough frames per run for the median background
DEMO_SEED = 2023


def build_demo_project(
    path: str | Path, progress: Progress | None = None, frames: int = DEMO_FRAMES
) -> Path:
    """Simulate QPI runs and segment them into a project at ``path``.

    Parameters
    ----------
    path : str or Path
        Where the project file goes (replaced atomically when complete).
    progress : Progress, optional
        Progress over both stages; cancellation leaves nothing behind.
    frames : int
        Number of simulated frames (about ten objects each).

    Returns
    -------
    Path
        The written project.
    """
    from hemalens.engine.ingest import segment_inputs
    from hemalens.engine.io import read_manifest
    from hemalens.engine.synth import QPISimConfig, simulate_qpi

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="hemalens-demo-"))
    try:
        simulate_qpi(
            scratch, QPISimConfig(frames=frames, seed=DEMO_SEED, donors=DEMO_DONORS),
            progress=SubProgress(progress, 0.0, 0.5, "Simulating frames"),
        )
        specs = read_manifest(scratch / "manifest.csv")
        report = segment_inputs(
            specs, path, progress=SubProgress(progress, 0.5, 0.5, "Segmenting cells"),
            overwrite=True,  # the demo is ours to rebuild, even when it is broken
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return Path(report["project"])
