"""Tests of the stained bone-marrow simulator (engine/synth/marrow*.py).

Files and determinism, class frequencies, staining semantics on ground-truth masks,
maturation sizes, stage overlap (a simple classifier), the RGB segmentation path on the
manifest and the direct project import.
"""

from __future__ import annotations

import csv
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from hemalens.engine.errors import InputError
from hemalens.engine.ingest import segment_inputs
from hemalens.engine.io import read_manifest
from hemalens.engine.jobs import CallbackProgress, Cancelled
from hemalens.engine.project import Project
from hemalens.engine.synth.marrow import (
    MANIFEST_COLUMNS,
    TRUTH_COLUMNS,
    MarrowSimConfig,
    Region,
    Slide,
    import_marrow_patches,
    render_crop,
    simulate_marrow,
)
from hemalens.engine.synth.marrow_cells import CELL_TYPES, CLASSES, class_counts

N_SMALL = 60


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("marrow")
    return out, simulate_marrow(out, cells=N_SMALL, seed=3)


@pytest.fixture(scope="module")
def sim_h5(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("marrow_h5")
    return out, simulate_marrow(out, cells=N_SMALL, seed=3, fmt="h5")


def clean_region() -> Region:
    """Standard staining, even white light, no blur, no noise."""
    slide = Slide.draw("std", np.random.default_rng(0), variation=0.0)
    return Region("std_r001", slide, np.ones(3), (0.0, 0.0), 0.0, 0.0)


CLEAN = MarrowSimConfig(neighbour_rate=0.0, erythrocytes=0.0)


def render(cls: str, n: int, key0: int, config: MarrowSimConfig = CLEAN, region=None):
    region = region or clean_region()
    lo, hi = CELL_TYPES[cls][1:3]
    rng = np.random.default_rng(key0)
    for k in range(n):
        cell = {"class": cls, "maturation": rng.uniform(lo, hi), "key": key0 + k}
        yield render_crop(cell, region, config)


# ------------------------------------------------------------------------------ files


def test_summary_files_and_crops(sim):
    out, summary = sim
    assert summary["cells"] == N_SMALL
    assert list(summary["classes"]) == list(CLASSES)  # all 15 present, class order
    assert sum(summary["classes"].values()) == N_SMALL
    assert summary["slides"] >= 1 and summary["regions"] >= summary["slides"]
    cols, rows = read_csv(out / "truth.csv")
    assert cols == list(TRUTH_COLUMNS)
    assert [int(r["cell_id"]) for r in rows] == list(range(N_SMALL))
    for r in rows[:: max(1, N_SMALL // 12)]:
        img = np.asarray(Image.open(out / r["file"]))
        assert img.dtype == np.uint8 and img.shape == (96, 96, 3)
    # regions nest in slides: one slide per region
    slide_of = {}
    for r in rows:
        assert slide_of.setdefault(r["region"], r["slide"]) == r["slide"]
    assert len(slide_of) == summary["regions"]
    mcols, mrows = read_csv(out / "manifest.csv")
    assert mcols == list(MANIFEST_COLUMNS)
    assert [(m["file"], m["given_label"], m["donor"], m["run"]) for m in mrows] == [
        (r["file"], r["class"], r["slide"], r["region"]) for r in rows
    ]


def test_deterministic_bytes_and_formats_agree(tmp_path, sim, sim_h5):
    a, b = tmp_path / "a", tmp_path / "b"
    simulate_marrow(a, cells=20, seed=11, size=64)
    simulate_marrow(b, cells=20, seed=11, size=64)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 22
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    c = tmp_path / "c"
    simulate_marrow(c, cells=20, seed=12, size=64)
    assert (a / "truth.csv").read_bytes() != (c / "truth.csv").read_bytes()
    img = np.asarray(Image.open(a / "crops" / "000000.png"))
    assert img.shape == (64, 64, 3)
    # h5 is byte-stable too, and holds exactly the png crops of the same seed
    d = tmp_path / "d"
    simulate_marrow(d, cells=N_SMALL, seed=3, fmt="h5")
    assert (d / "marrow.h5").read_bytes() == (sim_h5[0] / "marrow.h5").read_bytes()
    import h5py

    with h5py.File(sim_h5[0] / "marrow.h5", "r") as f:
        patches = f["patches"][()]
        assert f["truth/class"].asstr()[()].tolist() == [
            r["class"] for r in read_csv(sim[0] / "truth.csv")[1]
        ]
    _, rows = read_csv(sim[0] / "truth.csv")
    for r in rows[::7]:
        crop = np.asarray(Image.open(sim[0] / r["file"]))
        assert np.array_equal(patches[int(r["cell_id"])], crop)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="cells"):
        simulate_marrow(tmp_path, cells=0, seed=0)
    with pytest.raises(ValueError, match="size"):
        simulate_marrow(tmp_path, cells=5, seed=0, size=31)
    with pytest.raises(ValueError, match="fmt"):
        simulate_marrow(tmp_path, cells=5, seed=0, fmt="tif")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        simulate_marrow(blocker, cells=5, seed=0)
    with pytest.raises(InputError, match="truth.csv"):
        import_marrow_patches(tmp_path, tmp_path / "p.h5")


def test_cancel_leaves_no_files(tmp_path):
    calls = []

    def on_progress(done, total):
        calls.append(done)
        if done >= 3:
            event.set()

    event = threading.Event()
    with pytest.raises(Cancelled):
        simulate_marrow(tmp_path, cells=10, seed=0, size=48,
                        progress=CallbackProgress(on_progress=on_progress, cancel_event=event))
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------ frequencies


def test_class_frequencies_span_orders_of_magnitude():
    p = {c: v[3] for c, v in CELL_TYPES.items()}
    assert len(CLASSES) == 15  # paper 2, Fig. 1
    assert max(p.values()) / min(p.values()) >= 30
    common = sorted(p, key=p.get, reverse=True)[:3]
    assert set(common) == {"segmented_granulocyte", "polychromatic_erythroblast",
                           "orthochromatic_erythroblast"}
    assert set(sorted(p, key=p.get)[:2]) == {"basophil", "promonocyte"}
    counts = class_counts(2000)
    assert sum(counts.values()) == 2000
    order = sorted(CLASSES, key=p.get)
    assert all(counts[a] <= counts[b] for a, b in zip(order, order[1:], strict=False))
    for n in (15, 16, 40):
        c = class_counts(n)
        assert sum(c.values()) == n and min(c.values()) >= 1
    few = class_counts(5)
    assert sum(few.values()) == 5 and few["segmented_granulocyte"] >= 1


def test_lineage_intervals_touch():
    for lineage in ("granulocytic", "erythroid", "monocytic"):
        spans = sorted((lo, hi) for lin, lo, hi, _ in CELL_TYPES.values() if lin == lineage)
        assert spans[0][0] == 0.0 and spans[-1][1] == 1.0
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))


# ------------------------------------------------------------------ staining semantics


def _pixels(rgb, info, what):
    d = info["drawn"]
    if what == "cytoplasm":
        m = (d.cell > 0.95) & (d.nucleus < 0.05) & (d.granules < 0.2)
    elif what == "granules":
        m = (d.granules > 0.6) & (d.nucleus < 0.05)
    else:
        m = d.cell > 0.95
    return rgb[m].astype(float)


def _stat(cls, what, n=6, key0=100):
    pix = np.concatenate([_pixels(rgb, info, what) for rgb, info in render(cls, n, key0)])
    return pix


def test_staining_semantics():
    # basophilic (blue) cytoplasm of blasts vs pink-lilac of segmented granulocytes
    blast, seg = _stat("blast", "cytoplasm"), _stat("segmented_granulocyte", "cytoplasm")
    blueness = lambda p: float(np.mean(p[:, 2] - p[:, 0]))  # noqa: E731
    assert blueness(blast) > blueness(seg) + 40
    assert np.mean(seg[:, 0]) > np.mean(seg[:, 1])  # pinkish: red above green
    # erythroid cytoplasm turns from deep blue to pinkish grey
    pro, ortho = _stat("proerythroblast", "cytoplasm"), _stat("orthochromatic_erythroblast",
                                                             "cytoplasm")
    assert blueness(pro) > blueness(ortho) + 60
    # eosinophil granules redder/oranger than neutral granules
    eos, neu = _stat("eosinophil", "granules"), _stat("segmented_granulocyte", "granules")
    redness = lambda p: float(np.mean(p[:, 0] - p[:, 2]))  # noqa: E731
    assert redness(eos) > redness(neu) + 30
    # basophil granules the darkest of all granules
    grey = lambda p: float(np.mean(p))  # noqa: E731
    baso = _stat("basophil", "granules")
    for other in ("eosinophil", "promyelocyte", "myelocyte"):
        assert grey(baso) < grey(_stat(other, "granules")) - 20, other


def test_chromatin_coarser_and_nucleus_darker_with_maturation():
    def nucleus_stats(cls):
        cv, mean = [], []
        for rgb, info in render(cls, 6, 300):
            m = (info["drawn"].nucleus > 0.98) & (info["drawn"].granules < 0.1)
            g = rgb[m].mean(axis=1)
            cv.append(g.std() / g.mean())
            mean.append(g.mean())
        return np.median(cv), np.mean(mean)

    cv_blast, grey_blast = nucleus_stats("blast")
    cv_seg, grey_seg = nucleus_stats("segmented_granulocyte")
    assert cv_seg > 1.5 * cv_blast
    assert grey_seg < grey_blast


def test_erythroid_cells_shrink_and_nucleus_condenses():
    order = ["proerythroblast", "basophilic_erythroblast", "polychromatic_erythroblast",
             "orthochromatic_erythroblast"]
    diam, nc = [], []
    for k, cls in enumerate(order):
        d, f = [], []
        for _, info in render(cls, 8, 500 + 50 * k):
            cell, nuc = info["drawn"].cell, info["drawn"].nucleus
            d.append(np.sqrt(4 * (cell > 0.5).sum() / np.pi) * CLEAN.pixel_size_um)
            f.append(nuc.sum() / cell.sum())
        diam.append(np.mean(d))
        nc.append(np.mean(f))
    assert all(a > b for a, b in zip(diam, diam[1:], strict=False)), diam
    assert diam[0] > 14 and diam[-1] < 10.5
    assert nc[-1] < 0.35 and nc[0] > 0.55


# ---------------------------------------------------------------------------- overlap


def _features(rgb, diameter):
    hist = [np.histogram(rgb[..., c], bins=8, range=(0, 256))[0] / rgb[..., c].size
            for c in range(3)]
    return np.concatenate([*hist, [diameter]])


def _pair_accuracy(a, b, n):
    config = MarrowSimConfig()  # full variation: slides, regions, neighbours, red cells
    rng = np.random.default_rng(7)
    slides = [Slide.draw(f"s{i}", rng, 1.0) for i in range(3)]
    regions = [Region.draw(f"r{i}", slides[i % 3], rng, config) for i in range(6)]
    x, y = [], []
    for label, cls in enumerate((a, b)):
        lo, hi = CELL_TYPES[cls][1:3]
        for k in range(n):
            cell = {"class": cls, "maturation": rng.uniform(lo, hi), "key": 1000 * label + k}
            rgb, info = render_crop(cell, regions[int(rng.integers(6))], config)
            x.append(_features(rgb, info["params"].diameter_um))
            y.append(label)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    return float(cross_val_score(clf, np.array(x), np.array(y), cv=cv).mean())


def test_adjacent_stages_overlap_but_distant_ones_do_not():
    # colour histograms + size: clearly above chance (0.5) on adjacent stages, not perfect
    for a, b in (("myelocyte", "metamyelocyte"),
                 ("polychromatic_erythroblast", "orthochromatic_erythroblast")):
        adjacent = _pair_accuracy(a, b, n=100)
        assert 0.62 < adjacent < 0.92, (a, b, adjacent)
    distant = _pair_accuracy("blast", "segmented_granulocyte", n=30)
    assert distant > 0.95, distant


# ------------------------------------------------------------------- ingest and import


def test_segmentation_finds_one_cell_per_crop(sim, tmp_path):
    out, _ = sim
    specs = read_manifest(out / "manifest.csv")
    assert len(specs) == N_SMALL and {s.modality for s in specs} == {"rgb"}
    result = segment_inputs(specs, tmp_path / "seg.h5")
    assert result["failed_inputs"] == []
    _, rows = read_csv(out / "truth.csv")
    with Project.open(result["project"]) as p:
        qc = p.cells["qc_pass"]
        per_input = np.bincount(p.cells["input_id"][qc], minlength=N_SMALL)
        assert np.mean(per_input == 1) >= 0.9
        names = p.label_names()
        one = np.flatnonzero(qc & (per_input[p.cells["input_id"]] == 1))
        truth_diam = np.array([float(rows[i]["diameter_um"]) for i in p.cells["input_id"][one]])
        rel = np.abs(p.cells["diameter_um"][one] / truth_diam - 1)
        assert np.median(rel) < 0.08
        assert [names[i] for i in one] == [rows[k]["class"] for k in p.cells["input_id"][one]]
        assert p.inputs["donor"].tolist() == [r["slide"] for r in rows]
        assert p.inputs["run"].tolist() == [r["region"] for r in rows]


def test_h5_manifest_groups_open_as_stacks(sim_h5, tmp_path):
    out, summary = sim_h5
    specs = read_manifest(out / "manifest.csv")
    _, rows = read_csv(out / "truth.csv")
    assert len(specs) < N_SMALL  # one row per region and class
    small = specs[:4]
    result = segment_inputs(small, tmp_path / "seg.h5")
    assert result["failed_inputs"] == []
    expected = sum(
        1 for r in rows for s in small if (r["region"], r["class"]) == (s.run, s.given_label)
    )
    assert result["frames"] == expected
    import h5py  # each group is a view of its region's crops of its class

    with h5py.File(out / "marrow.h5", "r") as f:
        cls, region = f["truth/class"].asstr()[()], f["truth/region"].asstr()[()]
        for s in small:
            view = f[str(s.path).split(":", 1)[1]]
            idx = np.flatnonzero((cls == s.given_label) & (region == s.run))
            assert view.is_virtual and np.array_equal(view[()], f["patches"][idx])


@pytest.mark.parametrize("which", ["png", "h5"])
def test_import_patches_without_segmentation(sim, sim_h5, tmp_path, which):
    out, _ = sim if which == "png" else sim_h5
    _, rows = read_csv(out / "truth.csv")
    res = import_marrow_patches(out, tmp_path / "p.h5")
    assert res["cells"] == N_SMALL and res["inputs"] == len({r["region"] for r in rows})
    with Project.open(res["project"]) as p:
        assert p.patch_kind == "rgb" and p.patch_shape == (96, 96, 3)
        assert p.cells["qc_pass"].all()
        assert p.label_names().tolist() == [r["class"] for r in rows]
        assert np.array_equal(p.cells["original_label"], p.cells["given_label"])
        region = p.inputs["run"][p.cells["input_id"]]
        slide = p.inputs["donor"][p.cells["input_id"]]
        assert region.tolist() == [r["region"] for r in rows]
        assert slide.tolist() == [r["slide"] for r in rows]
        np.testing.assert_allclose(p.cells["maturation"], [float(r["maturation"]) for r in rows],
                                   atol=1e-4)
        idx = np.array([N_SMALL - 1, 0, 17])
        imgs = p.images(idx)
        assert imgs.dtype == np.uint8
        for k, i in enumerate(idx):
            if which == "png":
                ref = np.asarray(Image.open(out / rows[i]["file"]))
            else:
                ref = np.asarray(Image.open(sim[0] / f"crops/{i:06d}.png"))
            assert np.array_equal(imgs[k], ref)


def test_more_jitter_means_more_overlap():
    # the knob works: no jitter and no asynchrony -> apparent maturation == true maturation
    config = replace(CLEAN, maturation_jitter=0.0, asynchrony=0.0)
    for _, info in render("myelocyte", 3, 900, config):
        assert info["params"].t_apparent == pytest.approx(info["params"].t)
