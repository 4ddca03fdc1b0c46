"""Manifest parsing: relative paths, CLI fallbacks, bad manifests, missing rows fail at open."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from hemalens.engine.errors import InputError
from hemalens.engine.io import InputSpec, make_spec, open_source, read_manifest
from hemalens.engine.io.spec import sniff_format, split_dataset

HEADER = "file,modality,given_label,donor,run,pixel_size_um,wavelength_nm,background_file\n"


def _write(tmp_path: Path, text: str, name: str = "manifest.csv") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_manifest_rows_relative_paths_and_fallbacks(tmp_path):
    sub = tmp_path / "data"
    sub.mkdir()
    m = _write(
        sub,
        HEADER
        + "run01_phase.tif,phase,lymphocyte,D1,run01,0.3,528,\n"
        + "holo/run01_holo.tif,hologram,lymphocyte,D1,run01,,,holo/run01_bg.tif\n"
        + ",,,,,,,\n"  # blank row is skipped
        + "/abs/elsewhere.npy,,,,,,,\n",
    )
    specs = read_manifest(m, pixel_size_um=0.5, wavelength_nm=633.0)
    assert len(specs) == 3
    a, b, c = specs
    assert a == InputSpec(
        path=sub / "run01_phase.tif",
        file="run01_phase.tif",
        modality="phase",
        pixel_size_um=0.3,
        wavelength_nm=528.0,
        given_label="lymphocyte",
        donor="D1",
        run="run01",
    )
    # CLI values fill only the empty cells
    assert b.pixel_size_um == 0.5 and b.wavelength_nm == 633.0
    assert b.path == sub / "holo" / "run01_holo.tif" and b.file == "holo/run01_holo.tif"
    assert b.background == sub / "holo" / "run01_bg.tif"
    assert c.path == Path("/abs/elsewhere.npy") and c.modality == "auto"
    assert c.given_label is None and c.background is None


def test_manifest_relative_to_its_folder_not_cwd(tmp_path, monkeypatch):
    m = _write(tmp_path, "file\nx.tif\n")
    monkeypatch.chdir("/")
    (spec,) = read_manifest(str(m))
    assert spec.path == tmp_path / "x.tif"


def test_manifest_only_file_column_semicolons_bom_and_case(tmp_path):
    p = tmp_path / "m.csv"
    p.write_bytes("\ufeffFile;Pixel_Size_um;phase_scale\na.png;0.2;0.01\n".encode())
    (spec,) = read_manifest(p, wavelength_nm=550.0)
    assert spec.file == "a.png" and spec.pixel_size_um == 0.2
    assert spec.phase_scale == 0.01 and spec.wavelength_nm == 550.0


def test_missing_file_row_fails_only_at_open(tmp_path):
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, np.zeros((2, 32, 32), np.float32), photometric="minisblack")
    m = _write(tmp_path, HEADER + "gone.tif,phase,,,,0.3,528,\ngood.tif,phase,,,,0.3,528,\n")
    specs = read_manifest(m)
    assert [s.file for s in specs] == ["gone.tif", "good.tif"]
    with pytest.raises(InputError, match=r"^gone\.tif: file not found$"):
        open_source(specs[0])
    with open_source(specs[1]) as src:
        assert src.n_frames == 2


@pytest.mark.parametrize(
    ("content", "phrase"),
    [
        (None, "manifest not found"),
        ("", "manifest is empty"),
        ("path,label\na.tif,x\n", "no 'file' column (columns: path, label)"),
        ("file\n\n", "manifest lists no files"),
        ("file,pixel_size_um\na.tif,abc\n", "line 2: pixel_size_um 'abc' is not a number"),
        ("file,wavelength_nm\na.tif,-5\n", "line 2: wavelength_nm must be a positive number"),
        ("file,modality\na.tif,xray\n", "line 2: unknown modality 'xray'"),
        ("file,donor\n,D1\n", "line 2: empty 'file' cell"),
    ],
)
def test_bad_manifest(tmp_path, content, phrase):
    p = tmp_path / "bad.csv"
    if content is not None:
        p.write_text(content)
    with pytest.raises(InputError) as info:
        read_manifest(p)
    assert str(info.value).startswith(f"{p}: ")
    assert phrase in info.value.reason


def test_binary_or_directory_manifest(tmp_path):
    p = tmp_path / "img.csv"
    p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    with pytest.raises(InputError, match="not a text CSV file"):
        read_manifest(p)
    with pytest.raises(InputError, match="is a directory"):
        read_manifest(tmp_path)


def test_make_spec_resolves_against_base(tmp_path):
    spec = make_spec("a/b.tif", base=tmp_path, background="bg.tif", pixel_size_um=0.3)
    assert spec.path == tmp_path / "a" / "b.tif" and spec.file == "a/b.tif"
    assert spec.background == tmp_path / "bg.tif" and spec.pixel_size_um == 0.3


def test_split_dataset_and_sniff(tmp_path):
    assert split_dataset(Path("/x/f.h5:/grp/data")) == (Path("/x/f.h5"), "/grp/data")
    assert split_dataset(Path("/x/f.tif")) == (Path("/x/f.tif"), None)
    p = tmp_path / "arr.bin"
    np.save(p.with_suffix(".npy"), np.zeros((2, 2)))
    p.with_suffix(".npy").rename(p)
    assert sniff_format(p, "arr.bin") == "npy"  # content decides, not the extension
