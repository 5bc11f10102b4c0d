"""The cache as a DVC output: identical bytes wherever and whenever it is built; only the needed columns; its size stated first."""

from __future__ import annotations

import logging
import shutil
from collections import namedtuple
from pathlib import Path

import pandas as pd
import pytest

from hcc_exp.config import PreprocessConfig
from hcc_exp.data.cache import LABELS, MANIFEST
from hcc_exp.data.preprocessing import cache_size, preprocess_cohort
from hcc_exp.data.preprocessing.cache_size import check_cache_fits, expected_cache_bytes
from hcc_exp.errors import InsufficientDiskSpaceError, MissingColumnError
from tests.test_dvc import dvc_directory_md5

CFG = PreprocessConfig(spacing_mm=(2.0, 2.0, 2.0), crop_size_vox=(16, 16, 16), workers=1)

# The pipeline's columns, written out here (not taken from the code under test).
PIPELINE_COLUMNS = [
    "patient_id", "institution", "split",
    "os_time_days", "os_event", "rfs_time_days", "rfs_event", "mvi",
    "bclc", "tnm", "afp_ng_ml", "tumour_size_mm", "age", "sex",
]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- determinism
def test_same_cohort_and_recipe_give_the_same_dvc_hash_wherever_it_runs(tiny_cohort: Path, tmp_path: Path, monkeypatch):
    # Two checkouts: the cohort at two places, preprocessed from two working folders
    # (relative paths, as `dvc repro` runs it), one serially and one with two workers.
    outputs = []
    for name, workers in (("checkout-a", 1), ("elsewhere/checkout-b", 2)):
        checkout = tmp_path / name
        shutil.copytree(tiny_cohort, checkout / "data" / "raw")
        monkeypatch.chdir(checkout)
        preprocess_cohort(Path("data/raw"), Path("data/preprocessed"), CFG.model_copy(update={"workers": workers}),
                          progress=False)
        outputs.append(checkout / "data" / "preprocessed")
    a, b = outputs
    assert _files(a).keys() == _files(b).keys()
    differing = [name for name, data in _files(a).items() if _files(b)[name] != data]
    assert differing == []
    assert dvc_directory_md5(a) == dvc_directory_md5(b)
    manifest = (next(a.glob("*/" + MANIFEST))).read_text(encoding="utf-8")
    assert str(tmp_path) not in manifest and "seconds" not in manifest and "created" not in manifest


def test_rebuilding_gives_the_same_bytes_and_the_build_facts_stay_outside(tiny_cohort: Path, tmp_path: Path):
    first = preprocess_cohort(tiny_cohort, tmp_path / "one", CFG, progress=False)
    before = _files(tmp_path / "one")
    shutil.rmtree(tmp_path / "one")
    again = preprocess_cohort(tiny_cohort, tmp_path / "one", CFG, progress=False)
    assert _files(tmp_path / "one") == before
    assert again.build is not None and not again.build.reused
    assert again.build.cohort_dir == str(tiny_cohort.resolve())
    assert sorted(again.build.patient_seconds) == sorted(first.patient_ids())
    reused = preprocess_cohort(tiny_cohort, tmp_path / "one", CFG, progress=False)
    assert reused.build.reused and reused.build.patient_seconds == {}


# --------------------------------------------------------------------------- labels.csv
def test_labels_keep_the_pipeline_columns_only_with_their_values_as_written(tiny_cohort: Path, tmp_path: Path):
    csv = tiny_cohort / "cohort.csv"
    table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    table.insert(1, "patient_name", [f"Name {i}" for i in range(len(table))])
    table["mrn"] = "12345"
    table.loc[0, "patient_id"] = "NA"  # an identifier, not a missing value
    shutil.move(tiny_cohort / "images" / "P000", tiny_cohort / "images" / "NA")
    table = table[[*reversed(table.columns)]]  # any column order in, the cache's order out
    table.to_csv(csv, index=False)
    cache = preprocess_cohort(tiny_cohort, tmp_path / "cache", CFG, progress=False)
    written = (cache.root / LABELS).read_text(encoding="utf-8")
    assert written.splitlines()[0] == ",".join(PIPELINE_COLUMNS)
    assert "Name" not in written and "12345" not in written
    labels = pd.read_csv(cache.root / LABELS, dtype=str, keep_default_na=False)
    expected = pd.read_csv(csv, dtype=str, keep_default_na=False)[PIPELINE_COLUMNS]
    pd.testing.assert_frame_equal(labels, expected)
    assert cache.patient_ids()[0] == "NA" and "NA" in cache.manifest["patients"]


def test_a_cohort_without_a_pipeline_column_is_refused_by_name(tiny_cohort: Path, tmp_path: Path):
    csv = tiny_cohort / "cohort.csv"
    pd.read_csv(csv, dtype=str).drop(columns=["rfs_event"]).to_csv(csv, index=False)
    with pytest.raises(MissingColumnError, match="rfs_event") as err:
        preprocess_cohort(tiny_cohort, tmp_path / "cache", CFG, progress=False)
    assert err.value.column == "rfs_event" and err.value.path == str(csv)
    assert not (tmp_path / "cache").exists()


# --------------------------------------------------------------------------- size before writing
def test_expected_size_is_the_size_of_the_written_arrays(tiny_cohort: Path, tmp_path: Path):
    # 6 patients x (2 npy headers of 128 B + 3 phases x 16^3 x (2 B float16 + 3 masks x 1 B)).
    assert expected_cache_bytes(CFG, patients=6, phases=3) == 6 * (2 * 128 + 3 * 4096 * 5) == 370_176
    float32 = CFG.model_copy(update={"dtype": "float32"})
    assert expected_cache_bytes(float32, patients=6, phases=2) == 6 * (256 + 2 * 4096 * 7)
    cache = preprocess_cohort(tiny_cohort, tmp_path / "cache", CFG, progress=False)
    written = sum(p.stat().st_size for p in cache.root.rglob("*.npy"))
    assert written == 370_176 == cache.build.expected_bytes


DiskUsage = namedtuple("DiskUsage", "total used free")


def test_a_400_cubed_crop_is_announced_with_a_warning(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(cache_size.shutil, "disk_usage", lambda path: DiskUsage(10**13, 0, 10**13))
    huge = PreprocessConfig(crop_size_vox=(400, 400, 400))
    with caplog.at_level(logging.WARNING, logger="hcc_exp.data.preprocessing"):
        needed = check_cache_fits(huge, patients=8, phases=3, cache_root=tmp_path)
    assert needed == 8 * (256 + 3 * 64_000_000 * 5)  # 7.68 GB
    assert "7.7 GB" in caplog.text and "crop_size_vox" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hcc_exp.data.preprocessing"):
        check_cache_fits(CFG, patients=8, phases=3, cache_root=tmp_path)
    assert caplog.text == ""


def test_a_disk_too_small_is_refused_before_anything_is_written(tiny_cohort: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(cache_size.shutil, "disk_usage", lambda path: DiskUsage(10**6, 10**6 - 1000, 1000))
    cache_root = tmp_path / "cache"
    with pytest.raises(InsufficientDiskSpaceError, match=r"voxels: 370\.2 kB, the disk has 1\.0 kB free") as err:
        preprocess_cohort(tiny_cohort, cache_root, CFG, progress=False)
    assert str(cache_root) in str(err.value)
    assert not cache_root.exists()

