"""Reliability PNGs: written, decodable, no pyplot, clear errors on bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from hemalens.engine.calibrate import plot_reliability, plot_reliability_runs, reliability_data


def _run(seed: int, shift: float = 0.0) -> dict:
    rng = np.random.default_rng(seed)
    conf = rng.uniform(0.3, 1.0, 500)
    correct = rng.random(500) < np.clip(conf - shift, 0, 1)
    return reliability_data(conf, correct)


def _png_size(path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.load()
        return im.size


def test_single_and_multi_panel_reliability(tmp_path):
    one = plot_reliability(_run(0), tmp_path / "a" / "one.png", title="LeNet5")
    w1, h1 = _png_size(one)
    two = plot_reliability({"uncalibrated": _run(0, 0.2), "calibrated": _run(1)},
                           tmp_path / "two.png")
    w2, h2 = _png_size(two)
    assert w2 > 1.8 * w1  # two panels side by side


def test_box_plot_over_runs(tmp_path):
    runs = [_run(s, 0.1) for s in range(15)]
    runs[3]["accuracy"][4] = np.nan  # an empty bin in one run is skipped, not plotted as 0
    runs[3]["count"][4] = 0
    out = plot_reliability_runs({"AlexNet": runs, "AlexNet + TS": [_run(s) for s in range(15)]},
                                tmp_path / "box.png", title="frequentist")
    w, h = _png_size(out)
    assert w > h
    assert _png_size(plot_reliability_runs(runs, tmp_path / "single.png"))[0] > 0


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="single run"):
        plot_reliability_runs(_run(0), tmp_path / "x.png")
    with pytest.raises(ValueError, match="no runs"):
        plot_reliability_runs({"a": []}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="different numbers of bins"):
        rel5 = reliability_data([0.5, 0.7], [True, False], n_bins=5)
        plot_reliability_runs([_run(0), rel5], tmp_path / "x.png")
    with pytest.raises(ValueError, match="lacks 'count'"):
        plot_reliability({"a": {"edges": [0, 1], "accuracy": [1], "confidence": [1]}},
                         tmp_path / "x.png")
    with pytest.raises(ValueError, match="no panels"):
        plot_reliability({}, tmp_path / "x.png")


def test_importing_calibrate_loads_no_pyplot():
    code = ("import sys, hemalens.engine.calibrate as c, tempfile, os;"
            "c.plot_reliability(c.reliability_data([0.5], [True]),"
            " os.path.join(tempfile.mkdtemp(), 'p.png'));"
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
