"""Dask scale-out: each step on a LocalCluster of 2 worker processes gives the in-process
result bit for bit; a killed worker is retried; an unreachable scheduler fails in one line;
a cancel cancels the futures and leaves the project as it was."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import tree_digest
from scaleout_tasks import refuse, sleep_one, slow_square

from hemalens.engine.cli import main
from hemalens.engine.jobs import CallbackProgress, Cancelled
from hemalens.engine.scaleout import Cluster, open_executor, parse_cluster

distributed = pytest.importorskip("distributed")

@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scale")
    assert main(["synth", "qpi", str(out / "sim"), "--frames", "60", "--seed", "5",
                 "--donors", "1", "--json"]) == 0
    assert main(["segment", "--manifest", str(out / "sim" / "manifest.csv"),
                 "-o", str(out / "P.hemalens"), "--background", "10", "--json"]) == 0
    assert main(["train", str(out / "P.hemalens"), "--epochs", "1", "--mc", "3",
                 "--name", "m1", "--json"]) == 0
    return out


@pytest.fixture(scope="module")
def cluster():
    """One LocalCluster of 2 single-threaded worker processes for the module."""
    from dask import config

    from hemalens.engine.scaleout import WORKER_ENVIRON

    with config.set(WORKER_ENVIRON):  # as open_executor starts its local clusters
        local = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                         dashboard_address=None, silence_logs=40)
    client = distributed.Client(local, set_as_default=False)
    try:
        yield Cluster(scheduler=local.scheduler_address), client
    finally:
        client.close()
        local.close()


def _cells_h5(project: Path) -> dict[str, np.ndarray]:
    with h5py.File(project / "cells.h5") as f:
        out = {f"cells/{k}": f["cells"][k][()] for k in f["cells"]}
        out |= {k: f[k][()] for k in ("patches/images", "patches/raw")}
    return out


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f") for k in a)


def test_segment_on_two_local_workers_writes_the_same_cells(sim, tmp_path, capsys):
    manifest = str(sim / "sim" / "manifest.csv")
    assert main(["segment", "--manifest", manifest, "-o", str(tmp_path / "A.hemalens"),
                 "--background", "10", "--json"]) == 0
    capsys.readouterr()
    assert main(["segment", "--manifest", manifest, "-o", str(tmp_path / "B.hemalens"),
                 "--background", "10", "--workers", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["frames"] == 60 and report["cells"] > 50
    a, b = _cells_h5(tmp_path / "A.hemalens"), _cells_h5(tmp_path / "B.hemalens")
    assert _same(a, b)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".hl-")] == []


def test_predict_on_a_scheduler_is_bit_identical(sim, cluster, tmp_path):
    from hemalens.engine.review.predictions import read_predictions
    from hemalens.engine.workflows.predict import predict_project

    project = tmp_path / "P.hemalens"
    shutil.copytree(sim / "P.hemalens", project)
    predict_project(project, passes=4, chunk=128)
    local = read_predictions(project, "m1")[0]
    result = predict_project(project, passes=4, chunk=128, cluster=cluster[0])
    remote = read_predictions(project, "m1")[0]
    assert result["executor"].startswith("scheduler tcp://")
    assert _same(local, remote) and len(remote["predicted"]) == result["cells"]
    # the chunks really ran on both workers
    assert len(cluster[1].scheduler_info()["workers"]) == 2


@pytest.mark.parametrize("method", ["saliency", "lime"])
def test_explain_on_a_scheduler_is_bit_identical(sim, cluster, tmp_path, method):
    from hemalens.engine.explain.store import read_explanations
    from hemalens.engine.models.store import load_model
    from hemalens.engine.workflows.explain import explain_project

    project = tmp_path / "P.hemalens"
    shutil.copytree(sim / "P.hemalens", project)
    _, meta = load_model(project)
    ids = np.arange(0, 24 if method == "saliency" else 6)
    maps = []
    for where in (None, cluster[0]):
        r = explain_project(project, method, cells=ids.tolist(), force=True, chunk=3,
                            cluster=where)
        assert r["computed"] == len(ids)
        maps.append(read_explanations(project, "m1", method, ids,
                                      model_created=str(meta["created"]),
                                      settings={"seed": 0}))
    assert maps[0][2].all() and maps[1][2].all()
    assert np.array_equal(maps[0][0], maps[1][0]) and np.array_equal(maps[0][1], maps[1][1])


def test_an_unreachable_scheduler_fails_in_one_line_naming_it(sim, capsys):
    t0 = time.monotonic()
    code = main(["predict", str(sim / "P.hemalens"), "--scheduler", "127.0.0.1:9",
                 "--connect-timeout", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and time.monotonic() - t0 < 30
    assert err.count("\n") == 0 and "tcp://127.0.0.1:9" in err and "Dask scheduler" in err
    assert parse_cluster(0, " ") == Cluster()  # an empty setting means in-process


def test_cancel_cancels_the_futures_and_changes_nothing(sim, cluster, tmp_path):
    from hemalens.engine.workflows.predict import predict_project

    project = tmp_path / "P.hemalens"
    shutil.copytree(sim / "P.hemalens", project)
    before = tree_digest(project)
    progress = CallbackProgress()
    progress._on_progress = lambda done, total: progress.cancel()  # after the first chunk
    with pytest.raises(Cancelled):
        predict_project(project, passes=30, chunk=32, cluster=cluster[0], progress=progress)
    assert tree_digest(project) == before
    # the pending futures are cancelled, not left to run: 1 s tasks, 10 in flight on 2
    # workers would keep them busy ~5 s; cancelled, only the two running ones finish
    progress = CallbackProgress()
    with open_executor(cluster[0]) as ex, pytest.raises(Cancelled):
        for _ in ex.map(sleep_one, [(i,) for i in range(40)], progress=progress):
            progress.cancel()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 20 and any(cluster[1].processing().values()):
        time.sleep(0.05)
    assert time.monotonic() - t0 < 3.0


@pytest.mark.slow  # kills a worker process; its restart takes long on a loaded machine
def test_a_worker_killed_mid_task_is_retried_and_the_result_is_complete(sim, cluster,
                                                                          tmp_path):
    from hemalens.engine.review.predictions import read_predictions
    from hemalens.engine.workflows.predict import predict_project

    project = tmp_path / "P.hemalens"
    shutil.copytree(sim / "P.hemalens", project)
    predict_project(project, passes=20, chunk=32)
    local = read_predictions(project, "m1")[0]
    client = cluster[1]
    pids = client.run(os.getpid)
    killed: list[str] = []

    def kill_one_busy_worker() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            for address, tasks in client.processing().items():
                if tasks and any("predict_chunk" in str(t) for t in tasks):
                    time.sleep(0.05)
                    os.kill(pids[address], signal.SIGKILL)
                    killed.append(address)
                    return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_one_busy_worker)
    killer.start()
    predict_project(project, passes=20, chunk=32, cluster=cluster[0])
    killer.join()
    assert killed, "no worker was busy to be killed"
    assert _same(local, read_predictions(project, "m1")[0])
    with open_executor(cluster[0]) as ex:  # the cluster still works (nanny restarted it)
        assert list(ex.map(slow_square, [(i,) for i in range(4)])) == [0, 1, 4, 9]


def test_dry_run_on_a_scheduler_gives_the_same_table(cluster):
    from hemalens.engine.embed.dryrun import dry_run

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 60)
    X = rng.normal(size=(180, 6)) + 0.8 * np.eye(6)[y]
    groups = rng.permutation(np.arange(180) // 15)
    grid = {"lambda_c": (0.125, 0.5), "lambda_s": (1.0,), "lambda_r": (0.32,),
            "criteria": (("mean-std*mean-all", False),), "neighbours_second": (1, 2),
            "svm": {"C": (10.0,), "gamma_factor": (1.0,)}}
    combos = [("c",), ("c", "s"), ("s", "r")]
    kw = dict(grid=grid, iterations=6, folds=3, stop_at_perfect=False)
    local = dry_run(X, y, groups, combos, **kw)
    remote = dry_run(X, y, groups, combos, cluster=cluster[0], **kw)
    assert json.dumps(local, sort_keys=True) == json.dumps(remote, sort_keys=True)
    assert sum(len(v) for v in remote["curves"].values()) > 4  # several settings ran


def test_evaluate_on_a_scheduler_gives_the_same_tables(sim, cluster, capsys):
    project = str(sim / "P.hemalens")
    args = ["evaluate", project, "--runs", "2", "--epochs", "1", "--mc", "3", "--json"]
    assert main(args) == 0
    local = json.loads(capsys.readouterr().out)
    assert main([*args, "--scheduler", cluster[0].scheduler]) == 0
    remote = json.loads(capsys.readouterr().out)
    assert local["table1"] == remote["table1"] and local["table2"] == remote["table2"]
    assert remote["runs"] == 2


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
@pytest.mark.slow  # a CLI subprocess on the cluster, then SIGINT
def test_ctrl_c_on_the_cli_cancels_the_cluster_work_and_keeps_the_project(sim, cluster,
                                                                         tmp_path):
    import subprocess
    import sys

    project = tmp_path / "P.hemalens"
    shutil.copytree(sim / "P.hemalens", project)
    before = tree_digest(project)
    proc = subprocess.Popen(
        [sys.executable, "-m", "hemalens.engine.cli", "predict", str(project), "--mc", "400",
         "--scheduler", cluster[0].scheduler],
        stderr=subprocess.PIPE, text=True)
    client = cluster[1]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(
            "predict_chunk" in str(t) for ts in client.processing().values() for t in ts):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "cancelled; nothing was changed" in err and "Traceback" not in err
    assert tree_digest(project) == before
    t0 = time.monotonic()
    while time.monotonic() - t0 < 20 and any(client.processing().values()):
        time.sleep(0.05)
    assert time.monotonic() - t0 < 5.0  # no chunk left queued for the cancelled command


def test_an_error_on_a_worker_reaches_the_driver_as_the_same_one_line_error(cluster):
    import pickle

    from hemalens.engine.errors import MetadataError, ProjectError

    err = pickle.loads(pickle.dumps(MetadataError("a.tif", "pixel size unknown")))
    assert type(err) is MetadataError and str(err) == "a.tif: pixel size unknown"
    with open_executor(cluster[0]) as ex, pytest.raises(ProjectError) as info:
        list(ex.map(refuse, [("/data/P.hemalens",)]))
    assert str(info.value) == "/data/P.hemalens: has no cells to predict"


def test_a_cluster_without_workers_fails_in_one_line_instead_of_waiting(monkeypatch):
    from hemalens.engine import scaleout
    from hemalens.engine.errors import HemaLensError

    monkeypatch.setattr(scaleout, "NO_WORKERS_S", 1.0)
    with open_executor(scaleout.Cluster(workers=1)) as ex:
        ex.client.retire_workers()
        deadline = time.monotonic() + 30
        while ex.client.scheduler_info().get("workers") and time.monotonic() < deadline:
            time.sleep(0.1)
        with pytest.raises(HemaLensError, match="no Dask worker has been connected"):
            list(ex.map(slow_square, [(i,) for i in range(3)]))
