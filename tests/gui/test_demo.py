from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
from conftest import shown

from hemalens.engine.jobs import checkpoint
from hemalens.gui import demo
from hemalens.gui.main_window import MainWindow

pytestmark = [pytest.mark.gui, pytest.mark.timeout(60)]


class FakeBuilder:
    """Stands in for build_demo_project: reports progress, writes a tiny project."""

    def __init__(self, writer, fail: Exception | None = None, cancel_at: int | None = None):
        self.writer = writer
        self.calls: list[Path] = []
        self.fail = fail
        self.cancel_at = cancel_at

    def __call__(self, path, progress=None):
        self.calls.append(Path(path))
        progress.set_status("Simulating frames")
        for k in range(3):
            if self.cancel_at == k:
                progress.cancel_event.set()  # as if the user pressed Cancel now
            checkpoint(progress)
            progress.set_progress(k + 1, 3)
        if self.fail is not None:
            raise self.fail
        return self.writer(Path(path), n=30, seed=3)


@pytest.fixture
def demo_path(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "appdata" / "demo" / "demo.hemalens"
    monkeypatch.setattr(demo, "demo_project_path", lambda: path)
    return path


@pytest.fixture
def builder(monkeypatch, project_factory) -> FakeBuilder:
    fake = FakeBuilder(project_factory)
    monkeypatch.setattr(demo, "load_builder", lambda: fake)
    return fake


@pytest.fixture
def window(qtbot):
    win = MainWindow()
    qtbot.addWidget(win)
    win.show()
    yield win
    win.close()


def wait_job(qtbot, job):
    if job.is_running:
        with qtbot.waitSignal(job.ended, timeout=10000):
            pass


def test_missing_demo_is_built_with_progress_then_opened(qtbot, window, demo_path, builder,
                                                         message_boxes):
    assert not demo_path.exists()
    job = window.open_demo_project()
    assert job is not None and job.dialog is not None
    assert not window.demo_action.isEnabled()
    seen = []
    job.progress.connect(lambda d, t: seen.append((d, t)))
    with qtbot.waitSignals([job.status, job.progress, job.succeeded], order="simple",
                           timeout=10000):
        pass
    wait_job(qtbot, job)
    assert builder.calls == [demo_path]
    assert seen[-1] == (3, 3)
    assert window.project is not None and window.project.path == demo_path
    assert window.session.n_cells == 30 and shown(window).size == window.session.qc.sum()
    assert window.windowTitle() == "HemaLens — demo"
    assert window.demo_action.isEnabled()
    assert message_boxes == []


def test_existing_demo_opens_without_rebuilding(window, demo_path, builder, message_boxes,
                                                project_factory):
    demo_path.parent.mkdir(parents=True)
    project_factory(demo_path, n=12)
    assert window.open_demo_project() is None
    assert builder.calls == []
    assert window.session.n_cells == 12 and shown(window).size == window.session.qc.sum()
    assert message_boxes == []


def test_broken_demo_is_rebuilt_silently(qtbot, window, demo_path, builder, message_boxes):
    demo_path.parent.mkdir(parents=True)
    demo_path.write_bytes(b"\x89HDF junk")
    job = window.open_demo_project()
    assert job is not None
    wait_job(qtbot, job)
    assert job.state == "done" and builder.calls == [demo_path]
    assert window.session.n_cells == 30 and shown(window).size == window.session.qc.sum()
    assert message_boxes == []


def test_failed_build_is_reported_and_leaves_the_window_usable(
    qtbot, window, demo_path, monkeypatch, message_boxes, project_factory
):
    fake = FakeBuilder(project_factory, fail=RuntimeError("simulator exploded"))
    monkeypatch.setattr(demo, "load_builder", lambda: fake)
    job = window.open_demo_project()
    wait_job(qtbot, job)
    assert job.state == "error"
    assert message_boxes == [("critical", demo.TITLE, "RuntimeError: simulator exploded")]
    assert window.project is None and window.demo_action.isEnabled()


def test_cancelled_build_opens_nothing_and_says_nothing(
    qtbot, window, demo_path, monkeypatch, message_boxes, project_factory
):
    fake = FakeBuilder(project_factory, cancel_at=1)
    monkeypatch.setattr(demo, "load_builder", lambda: fake)
    job = window.open_demo_project()
    wait_job(qtbot, job)
    assert job.state == "cancelled"
    assert window.project is None and not demo_path.exists()
    assert message_boxes == []


def test_ensure_demo_project_calls_on_ready_with_the_path(qtbot, tmp_path, builder):
    ready = []
    target = tmp_path / "elsewhere" / "d.hemalens"
    job = demo.ensure_demo_project(None, ready.append, target)
    wait_job(qtbot, job)
    assert ready == [target] and target.is_dir()
    # a second call finds the file usable and answers at once
    assert demo.ensure_demo_project(None, ready.append, target) is None
    assert ready == [target, target] and len(builder.calls) == 1


def test_missing_builder_is_reported(window, demo_path, monkeypatch, message_boxes):
    def no_builder():
        raise ImportError("No module named 'hemalens.engine.demo'")

    monkeypatch.setattr(demo, "load_builder", no_builder)
    assert window.open_demo_project() is None
    assert len(message_boxes) == 1 and "demo builder is not available" in message_boxes[0][2]


def test_default_location_is_app_data():
    path = demo.demo_project_path()
    assert path.name == "demo.hemalens" and path.parent.name == "demo"


def test_engine_builder_has_the_expected_signature():
    fn = demo.load_builder()
    params = inspect.signature(fn).parameters
    assert list(params)[:2] == ["path", "progress"]


@pytest.mark.slow
def test_real_demo_build_through_the_gui(qtbot, window, demo_path, message_boxes):
    job = window.open_demo_project()
    with qtbot.waitSignal(job.ended, timeout=300_000):
        pass
    assert job.state == "done", message_boxes
    assert window.project is not None and shown(window).size > 100


def test_demo_keeps_its_frames_so_a_cell_is_shown_in_its_frame(tmp_path):
    from hemalens.engine.demo import build_demo_project, frames_folder
    from hemalens.gui.context_view import context_job

    path = build_demo_project(tmp_path / "demo.hemalens", frames=16, trained=False)
    assert sorted(p.name for p in frames_folder(path).glob("*.tif"))
    result = context_job(str(path), 0)
    assert np.asarray(result["frame"]).ndim == 2
    assert (frames_folder(path) / result["file"]).exists()
