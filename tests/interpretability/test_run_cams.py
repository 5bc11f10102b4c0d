"""``run_cams`` end to end on a run trained for 2 epochs on a tiny cohort."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from hcc_exp.data.cache import PreprocessedCohort
from hcc_exp.interpretability.cam import (
    HEADS,
    UnknownPatientError,
    cam_region_table,
    run_cams,
    select_patients,
)
from hcc_exp.interpretability.regions import ANALYSIS_REGIONS, PARTITION

PHASES = ("arterial", "portal", "delayed")


@pytest.fixture(scope="module")
def cam_dir(trained_run):
    # One patient keeps the test short (3 overlays); the default choice is tested below.
    return run_cams(trained_run.run_dir, patient_ids=["P001"])


@pytest.fixture(scope="module")
def cohort(trained_run):
    meta = json.loads((trained_run.run_dir / "meta.json").read_text())
    return PreprocessedCohort.open(meta["cache_dir"])


def test_default_patients_are_the_first_of_each_split(cohort):
    # The tiny cohort assigns splits round-robin: P000 train, P001 internal, P002 external, ...
    assert select_patients(cohort, None, 2) == ["P000", "P003", "P001", "P004", "P002", "P005"]
    assert select_patients(cohort, ["P004", "P004", "P000"], 2) == ["P004", "P000"]


def test_run_cams_writes_overlays_maps_and_tables(trained_run, cam_dir):
    assert cam_dir == trained_run.run_dir / "cam"
    per_map = pd.read_csv(cam_dir / "regions.csv", dtype={"patient_id": str})
    assert per_map.groupby("patient_id")["split"].first().to_dict() == {"P001": "internal"}
    assert len(per_map) == len(HEADS) * len(PHASES) * len(ANALYSIS_REGIONS)
    for head in HEADS:
        png = cam_dir / "P001" / f"{head}.png"
        assert png.read_bytes()[:4] == b"\x89PNG"
    partition = per_map[per_map["region"].isin(PARTITION)]
    np.testing.assert_allclose(partition.groupby(["patient_id", "head", "phase"])["volume_share"].sum(), 1.0, rtol=1e-5)

    summary = pd.read_csv(cam_dir / "regions_summary.csv")
    assert set(summary["phase"]) == {*PHASES, "all"}
    shares = json.loads((cam_dir / "region_shares.json").read_text())  # strict JSON: NaN written as null
    assert set(shares["shares"]) == {"internal"}
    assert shares["patients"] == {"train": [], "internal": ["P001"], "external": []}
    tumour = shares["shares"]["internal"]["os"]["all"]["tumour"]
    assert tumour["volume_share_mean"] == pytest.approx(
        per_map.query("head == 'os' and region == 'tumour'")["volume_share"].mean(), rel=1e-5
    )
    markdown = (cam_dir / "regions.md").read_text()
    assert "## Internal validation: OS risk (n = 1)" in markdown and "| Tumour + 1 cm margin |" in markdown


def test_saved_raw_maps_reproduce_the_region_table(cohort, cam_dir):
    _, masks = cohort.load("P001")
    with np.load(cam_dir / "P001" / "cams.npz") as saved:
        cams = {head: saved[head] for head in HEADS}
    for maps in cams.values():
        assert maps.shape == (3, *cohort.shape_zyx)
        assert np.all(np.isfinite(maps)) and np.all(maps >= 0)
    table = cam_region_table(cams, masks, PHASES, tuple(cohort.manifest["spacing_mm"]))
    written = pd.read_csv(cam_dir / "regions.csv", dtype={"patient_id": str}).query("patient_id == 'P001'")
    np.testing.assert_allclose(
        written[["energy_share", "hit_rate", "volume_share"]].to_numpy(),
        table[["energy_share", "hit_rate", "volume_share"]].to_numpy(),
        rtol=1e-5,
    )


def test_named_patients_and_unknown_ones(trained_run, tmp_path):
    with pytest.raises(UnknownPatientError, match="P999"):
        run_cams(trained_run.run_dir, patient_ids=["P999"])
