"""The HTML review report and its PNG figures."""

from __future__ import annotations

import re
import struct

import numpy as np
import pytest

from hemalens.engine.review.differential import differential_counts
from hemalens.engine.review.mislabel import mislabel_queue, queue_metrics
from hemalens.engine.review.ood import ood_statistics
from hemalens.engine.review.report import MAX_QUEUE_ROWS, write_report

CLASSES = ["lymphocyte", "monocyte", "neutrophil", "eosinophil"]


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def review():
    rng = np.random.default_rng(0)
    n = 600
    pred = rng.choice(4, n, p=[0.3, 0.1, 0.55, 0.05])
    sample = np.array(["run01", "run02", "run<3>"])[rng.integers(0, 3, n)]
    qc = rng.random(n) < 0.1
    diff = differential_counts(pred, sample, CLASSES, include=~qc,
                               flagged=rng.random(n) < 0.05, excluded_reasons={"qc": qc})
    given = np.where(rng.random(n) < 0.05, (pred + 1) % 4, pred)
    conf = rng.uniform(0.5, 1.0, n)
    q = mislabel_queue(pred, conf, given)
    queue = [{"cell_id": int(i), "given": CLASSES[given[i]], "predicted": CLASSES[pred[i]],
              "confidence": float(conf[i])} for i in q]
    conf_sets = {"leukocyte": rng.beta(9, 1, 300), "erythrocyte": rng.beta(4, 2, 100),
                 "noise": rng.beta(1, 4, 100)}
    edges = np.linspace(0, 1, 11)
    return {
        "meta": {"model": "lenet5", "measure": "mc_std", "temperature": 1.3},
        "class_names": CLASSES,
        "differential": diff,
        "queue": queue,
        "queue_metrics": queue_metrics(q, given != pred),
        "ood": {"mc_std": ood_statistics(conf_sets), "freq": ood_statistics(conf_sets)},
        "ood_confidences": {"mc_std": conf_sets},
        "reliability": {"edges": edges, "accuracy": np.r_[np.nan, np.linspace(0.1, 0.95, 9)],
                        "confidence": np.r_[np.nan, edges[1:-1] + 0.05], "count": np.arange(10)},
        "calibration": {"freq": {"ece": 0.0412, "mce": 0.1234}},
    }


def test_report_files_and_numbers(review, tmp_path):
    out = tmp_path / "report dir"
    path = write_report(out, review, title="Sample <A> review")
    assert path == out / "report.html" and path.is_file()
    text = path.read_text(encoding="utf-8")
    assert "<title>Sample &lt;A&gt; review</title>" in text  # escaped
    # every referenced figure exists, is a real PNG, and every PNG is referenced
    refs = re.findall(r'<img src="([^"]+)"', text)
    assert set(refs) == {p.name for p in out.glob("*.png")}
    assert {"differential.png", "ood_mc_std.png", "ood_freq.png",
            "reliability_all.png"} <= set(refs)
    for r in refs:
        w, h = png_size(out / r)
        assert w > 200 and h > 200
    # the differential numbers: each class's percent, CI and n per sample
    diff = review["differential"]
    assert "run&lt;3&gt;" in text and "run<3>" not in text
    for s, row in diff.items():
        for c in CLASSES:
            v = row[c]
            cell = (f"{v['percent']:.1f} ({v['ci_low']:.1f}&ndash;{v['ci_high']:.1f}), "
                    f"n={v['n']}")
            assert cell in text, (s, c)
        assert f"<td>{row['_total']}</td>" in text
    # queue, OOD and calibration numbers
    first = review["queue"][0]
    assert f"<td>{first['cell_id']}</td>" in text and f"{first['confidence']:.3f}" in text
    st = review["ood"]["mc_std"]
    assert f"{st['auroc']['noise']:.3f}" in text and f"{st['kruskal']['H']:.2f}" in text
    assert "0.0412" in text and "0.1234" in text and "lenet5" in text


def test_report_minimal_and_long_queue(tmp_path):
    diff = differential_counts(np.zeros(3, int), np.array(["s"] * 3), ["a", "b"],
                               include=np.array([False] * 3))  # nothing counted: NaN
    queue = [{"cell_id": i, "given": "a", "predicted": "b", "confidence": 0.99}
             for i in range(MAX_QUEUE_ROWS + 7)]
    stats = ood_statistics({"leukocyte": np.r_[0.9, 0.8], "digits": np.r_[0.1, 0.2]})
    review = {"model": "alexnet-1", "threshold": 0.95, "differential": diff, "queue": queue,
              "ood": {"mc_std": stats, "best_measure": "mc_std"}}  # as workflows.review
    path = write_report(tmp_path, review, title="t")
    text = path.read_text()
    assert "- (-&ndash;-), n=0" in text  # NaN shown as "-"
    assert text.count("<td>0.990</td>") == MAX_QUEUE_ROWS and "and 7 more cells" in text
    assert (tmp_path / "ood_mc_std.png").is_file()  # boxes from the summary quartiles
    assert len(list(tmp_path.glob("ood_*.png"))) == 1
    assert "alexnet-1" in text and "Best separating measure: mc_std" in text
    empty = write_report(tmp_path / "e", {"queue": []}, title="nothing").read_text()
    assert "No cell confidently disagrees" in empty and "<img" not in empty
