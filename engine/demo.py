"""The bundled demo project: simulated QPI runs segmented into a project file.

Built on first start of ``make run`` so the application opens on real-looking data
without downloading anything.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hemalens.engine.jobs import Progress

DEMO_FRAMES = 400
DEMO_DONORS = 2  # 8 runs of 50 frames: enough frames per run for the median background
DEMO_SEED = 2023


class _Stage:
    """Map a sub-job's progress onto a share of the overall bar."""

    def __init__(self, outer: Progress | None, start: float, share: float, label: str) -> None:
        self.outer, self.start, self.share, self.label = outer, start, share, label

    def set_status(self, text: str) -> None:
        if self.outer is not None:
            self.outer.set_status(f"{self.label}: {text}")

    def set_progress(self, done: int, total: int | None) -> None:
        if self.outer is not None and total:
            self.outer.set_progress(int(1000 * (self.start + self.share * done / total)), 1000)

    def is_cancelled(self) -> bool:
        return self.outer is not None and self.outer.is_cancelled()


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
            progress=_Stage(progress, 0.0, 0.5, "Simulating frames"),
        )
        specs = read_manifest(scratch / "manifest.csv")
        report = segment_inputs(
            specs, path, progress=_Stage(progress, 0.5, 0.5, "Segmenting cells")
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return Path(report["project"])
