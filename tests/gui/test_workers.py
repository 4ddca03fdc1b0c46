from __future__ import annotations

import logging
import threading
import time

import pytest
from PySide6.QtCore import Qt

from hemalens.engine.errors import InputError
from hemalens.engine.jobs import Progress, checkpoint
from hemalens.gui import workers
from hemalens.gui.workers import QtProgress, active_jobs, cancel_all, start_job

pytestmark = [pytest.mark.gui, pytest.mark.timeout(60)]


def counting_job(n: int, progress: Progress | None = None) -> int:
    """An engine-style job: status, then progress per item, checkpoint between items."""
    progress.set_status("counting")
    for k in range(1, n + 1):
        checkpoint(progress)
        progress.set_progress(k, n)
    return n * 10


def endless_job(started: threading.Event, progress: Progress | None = None) -> str:
    """Runs until cancelled (at most ~20 s so a broken cancel cannot hang the suite)."""
    started.set()
    for k in range(2000):
        checkpoint(progress)
        progress.set_progress(k, None)
        time.sleep(0.01)
    return "not cancelled"


def wait_ended(qtbot, job, timeout=10000):
    if job.is_running:
        with qtbot.waitSignal(job.ended, timeout=timeout):
            pass


def test_qt_progress_is_an_engine_progress():
    p = QtProgress()
    assert isinstance(p, Progress)
    assert not p.is_cancelled()
    p.cancel()
    assert p.is_cancelled() and p.cancel_event.is_set()


def test_progress_signals_arrive_in_order_and_result_reaches_gui_thread(qtbot, message_boxes):
    results, seen, threads = [], [], []

    def on_result(value):
        threads.append(threading.current_thread() is threading.main_thread())
        results.append(value)

    job = start_job(counting_job, 5, title="Counting", on_result=on_result, min_interval=0)
    job.progress.connect(lambda done, total: seen.append((done, total)))
    with qtbot.waitSignals(
        [job.status, job.progress, job.succeeded, job.ended], order="simple", timeout=10000
    ):
        pass
    wait_ended(qtbot, job)
    assert job.state == "done" and job.result == 50
    assert seen == [(k, 5) for k in range(1, 6)]
    assert results == [50] and threads == [True]
    assert message_boxes == []
    assert job not in active_jobs()


def test_progress_is_throttled_but_final_value_arrives(qtbot):
    seen = []
    job = start_job(counting_job, 20000, title="Many", show_dialog=False)
    job.progress.connect(lambda done, total: seen.append((done, total)))
    wait_ended(qtbot, job)
    assert job.state == "done"
    assert seen[-1] == (20000, 20000)
    dones = [d for d, _ in seen]
    assert dones == sorted(dones)
    assert len(seen) < 100  # 20k reports in well under 5 s at <= 20 per second


def test_cancel_ends_as_cancelled_without_error_dialog(qtbot, message_boxes):
    started = threading.Event()
    results, errors, cancelled = [], [], []
    job = start_job(endless_job, started, title="Endless", on_result=results.append,
                    on_error=errors.append)
    job.cancelled.connect(lambda: cancelled.append(True))
    assert started.wait(5)
    assert job.dialog is not None
    assert job.dialog.windowModality() == Qt.WindowModality.NonModal
    job.cancel()
    wait_ended(qtbot, job)
    assert job.state == "cancelled"
    assert type(job.error).__name__ == "Cancelled"
    assert cancelled == [True] and results == [] and errors == []
    assert message_boxes == []
    assert job.dialog is None


def test_cancel_button_of_the_progress_dialog_cancels(qtbot, message_boxes):
    started = threading.Event()
    job = start_job(endless_job, started, title="Endless")
    assert started.wait(5)
    button = job._cancel_button
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    assert job.progress_adapter.is_cancelled()
    wait_ended(qtbot, job)
    assert job.state == "cancelled" and message_boxes == []


def test_input_error_is_shown_with_its_one_line_message_and_logged(qtbot, message_boxes, caplog):
    errors = []

    def failing(progress=None):
        progress.set_status("reading")
        raise InputError("data/run1.tif", "not a phase\nimage")

    with caplog.at_level(logging.ERROR, logger=workers.__name__):
        job = start_job(failing, title="Import", on_error=errors.append)
        wait_ended(qtbot, job)
    assert job.state == "error"
    assert message_boxes == [("critical", "Import", "data/run1.tif: not a phase image")]
    assert len(errors) == 1 and isinstance(errors[0], InputError)
    record = next(r for r in caplog.records if "Import failed" in r.getMessage())
    assert record.exc_info is not None and record.exc_info[0] is InputError


def test_unexpected_exception_message_names_its_type(qtbot, message_boxes):
    def failing(progress=None):
        raise ValueError("boom\n  second line")

    job = start_job(failing, title="Step")
    with qtbot.waitSignal(job.failed, timeout=10000) as blocker:
        pass
    assert isinstance(blocker.args[0], ValueError)
    assert message_boxes == [("critical", "Step", "ValueError: boom second line")]


def test_cancel_all_stops_running_jobs_and_drains_the_pool(qtbot, message_boxes):
    events = [threading.Event(), threading.Event()]
    jobs = [start_job(endless_job, ev, title=f"J{k}", show_dialog=False)
            for k, ev in enumerate(events)]
    assert all(ev.wait(5) for ev in events)
    assert set(active_jobs()) >= set(jobs)
    t0 = time.perf_counter()
    assert cancel_all(5000)
    assert time.perf_counter() - t0 < 2
    for job in jobs:
        wait_ended(qtbot, job)
        assert job.state == "cancelled"
    assert message_boxes == []


def test_warnings_raised_in_a_job_are_logged(qtbot, caplog):
    import warnings

    def warns(progress=None):
        warnings.warn("frame 3 has no pixel size", UserWarning, stacklevel=1)
        return 1

    with caplog.at_level(logging.WARNING, logger=workers.__name__):
        job = start_job(warns, title="Import", show_dialog=False)
        wait_ended(qtbot, job)
    assert job.state == "done"
    assert any("frame 3 has no pixel size" in r.getMessage() for r in caplog.records)
