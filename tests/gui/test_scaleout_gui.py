"""The GUI's compute-cluster setting, and a job on a Dask cluster cancelled from the GUI."""

from __future__ import annotations

import time

import pytest
from scaleout_tasks import sleep_one

from hemalens.engine.scaleout import Cluster, open_executor
from hemalens.gui.main_window import MainWindow
from hemalens.gui.workers import configured_cluster, start_job

pytestmark = [pytest.mark.gui, pytest.mark.timeout(120)]


def test_the_scheduler_setting_is_what_heavy_jobs_get(qtbot, monkeypatch):
    from PySide6.QtWidgets import QInputDialog

    win = MainWindow()
    qtbot.addWidget(win)
    assert configured_cluster().in_process  # default: this computer
    monkeypatch.setattr(QInputDialog, "getText",
                        staticmethod(lambda *a, **k: ("sched.lab:8786", True)))
    assert win.choose_scheduler() == "sched.lab:8786"
    assert configured_cluster().scheduler == "tcp://sched.lab:8786"
    monkeypatch.setattr(QInputDialog, "getText", staticmethod(lambda *a, **k: ("", True)))
    win.choose_scheduler()
    assert configured_cluster().in_process
    win.close()


def _cluster_job(address: str, progress=None) -> list[int]:
    with open_executor(Cluster(scheduler=address)) as ex:
        return list(ex.map(sleep_one, [(i,) for i in range(40)], progress=progress))


def test_cancel_of_a_gui_job_cancels_the_cluster_futures(qtbot, message_boxes):
    distributed = pytest.importorskip("distributed")
    local = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                     dashboard_address=None, silence_logs=40)
    client = distributed.Client(local, set_as_default=False)
    try:
        job = start_job(_cluster_job, local.scheduler_address, title="On the cluster",
                        show_dialog=False)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(client.processing().values()):
            qtbot.wait(50)
        assert any(client.processing().values())  # the cluster is working for the GUI
        job.cancel()
        with qtbot.waitSignal(job.ended, timeout=20000):
            pass
        assert job.state == "cancelled" and message_boxes == []
        # 6 tasks in flight would keep the worker busy ~6 s; cancelled, at most the
        # running one finishes
        t0 = time.monotonic()
        while time.monotonic() - t0 < 20 and any(client.processing().values()):
            qtbot.wait(50)
        assert time.monotonic() - t0 < 3.0
    finally:
        client.close()
        local.close()
