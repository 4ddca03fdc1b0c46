"""First-start demo: build the simulated demo project through the worker, then open it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QStandardPaths
from PySide6.QtWidgets import QWidget

from hemalens.gui.workers import Job, one_line_message, show_error, start_job

log = logging.getLogger(__name__)

TITLE = "Building the demo project"


def demo_project_path() -> Path:
    """Where the demo project lives: ``<AppDataLocation>/demo/demo.hemalens``.

    Returns
    -------
    Path
        The path (the file may not exist yet).
    """
    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
    return Path(base) / "demo" / "demo.hemalens"


def load_builder() -> Callable[..., Any]:
    """Import the engine's demo builder lazily (it pulls in the simulator and segmentation).

    Returns
    -------
    callable
        ``build_demo_project(path, progress=None) -> Path``.
    """
    from hemalens.engine.demo import build_demo_project

    return build_demo_project


def project_opens(path: Path) -> bool:
    """Return True when ``path`` is a project that opens without error.

    Parameters
    ----------
    path : Path
        Candidate project file.

    Returns
    -------
    bool
        Whether :meth:`Project.open` succeeded.
    """
    from hemalens.engine.errors import HemaLensError
    from hemalens.engine.project.store import Project

    try:
        Project.open(path).close()
    except (HemaLensError, OSError) as exc:
        log.warning("demo project unusable, rebuilding: %s", exc)
        return False
    return True


def ensure_demo_project(
    parent: QWidget | None,
    on_ready: Callable[[Path], Any],
    path: str | Path | None = None,
    *,
    force: bool = False,
) -> Job | None:
    """Call ``on_ready(path)`` with a usable demo project, building it first when needed.

    An existing file that opens is used as it is (unless ``force``); a missing or broken
    one is (re)built by ``build_demo_project`` in the worker with a progress dialog.

    Parameters
    ----------
    parent : QWidget or None
        Parent of the progress and error dialogs.
    on_ready : callable
        Receives the project path once it exists (in the GUI thread).
    path : str or Path, optional
        Demo project location; defaults to :func:`demo_project_path`.
    force : bool
        Rebuild even if the existing file opens.

    Returns
    -------
    Job or None
        The build job, or None when no build was started (ready at once, or the builder
        is unavailable, which is reported in a message box).
    """
    target = Path(path) if path is not None else demo_project_path()
    if not force and target.exists() and project_opens(target):
        on_ready(target)
        return None
    try:
        builder = load_builder()
    except ImportError as exc:
        log.error("demo builder unavailable: %s", exc)
        show_error(parent, TITLE, f"The demo builder is not available: {one_line_message(exc)}")
        return None
    target.parent.mkdir(parents=True, exist_ok=True)

    def _ready(result: Any) -> None:
        on_ready(Path(result) if result else target)

    return start_job(builder, target, title=TITLE, parent=parent, on_result=_ready)
