"""Synthetic cohort: contract, determinism, atomic write, oracle model and the planted image signals.

One 32-patient cohort (seed 7) is written once per module (writing is most of this
module's time); the image checks read it back through SimpleITK, as every consumer
of a cohort would. Outcomes and oracle scores do not depend on the volumes, so the
per-split oracle checks run on the same generator's outcome draws for more patients
(:func:`sample_cohort`), after checking that the written tables are exactly those draws.
"""

from __future__ import annotations

import doctest
import hashlib
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from lifelines import KaplanMeierFitter
from rich.console import Console
from scipy import ndimage
from sklearn.metrics import roc_auc_score
from sksurv.metrics import concordance_index_censored

from hcc_exp.config import PHASES
from hcc_exp.data import synthetic, synthetic_model
from hcc_exp.data.contract import (
    BCLC_STAGES,
    COHORT_CSV,
    IMAGES_DIR,
    ORACLE_CSV,
    REQUIRED_COLUMNS,
    SPLITS,
    TNM_STAGES,
    PatientFiles,
)
from hcc_exp.data.io import read_volume
from hcc_exp.data.synthetic import (
    INSTITUTIONS,
    ORACLE_COLUMNS,
    sample_cohort,
    split_sizes,
    write_synthetic_cohort,
)
from hcc_exp.errors import ConfigError, MissingFileError
from hcc_exp.evaluation.oracle import cohort_oracle_metrics, oracle_metrics
from hcc_exp.reporting.console import render_synthetic_summary

N_PATIENTS = 32
ORACLE_PATIENTS = 80
SEED = 7


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> tuple[Path, synthetic.SyntheticSummary]:
    out = tmp_path_factory.mktemp("synth") / "cohort"
    summary = write_synthetic_cohort(out, patients=N_PATIENTS, seed=SEED, progress=False)
    return out, summary


@pytest.fixture(scope="module")
def table(cohort) -> pd.DataFrame:
    return pd.read_csv(cohort[0] / COHORT_CSV, dtype={"patient_id": str})


@pytest.fixture(scope="module")
def oracle(cohort) -> pd.DataFrame:
    return pd.read_csv(cohort[0] / ORACLE_CSV, dtype={"patient_id": str})


def _array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(read_volume(path))


def _header(path: Path) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader


def _frame(patients: list[synthetic.SyntheticPatient]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "patient_id": [p.patient_id for p in patients],
            "split": [p.institution.split for p in patients],
            "os_time_days": [p.outcomes.os_time_days for p in patients],
            "os_event": [p.outcomes.os_event for p in patients],
            "rfs_time_days": [p.outcomes.rfs_time_days for p in patients],
            "rfs_event": [p.outcomes.rfs_event for p in patients],
            "mvi": [p.outcomes.mvi for p in patients],
            "os_linear_predictor": [p.lp.os for p in patients],
            "rfs_linear_predictor": [p.lp.rfs for p in patients],
            "mvi_probability": [p.lp.mvi_probability for p in patients],
        }
    )


@pytest.fixture(scope="module")
def features(cohort, table, oracle) -> pd.DataFrame:
    """Simple hand-made image features per patient, computed from the written files.

    ``sd_<phase>``: SD of HU inside the tumour eroded by 2 mm, after a 1 mm Gaussian.
    ``ring_arterial`` / ``deep_arterial``: mean arterial HU in the 0-4 mm band outside the
    tumour / in a 15-19 mm band (both within the liver), minus the median liver HU.
    Everything is computed on a box of the tumour +- 22 mm.
    """
    rows = []
    for pid in table["patient_id"]:
        files = PatientFiles.resolve(cohort[0], pid)
        tumour_image = sitk.ReadImage(str(files.tumour_masks["portal"]))
        spacing_zyx = np.array(tumour_image.GetSpacing()[::-1])
        tumour = sitk.GetArrayFromImage(tumour_image).astype(bool)
        idx = np.argwhere(tumour)
        reach = np.ceil(22.0 / spacing_zyx).astype(int)
        low, high = np.maximum(idx.min(0) - reach, 0), np.minimum(idx.max(0) + reach + 1, tumour.shape)
        box = tuple(slice(a, b) for a, b in zip(low, high, strict=True))
        tumour = tumour[box]
        liver = sitk.GetArrayFromImage(sitk.ReadImage(str(files.liver_masks["portal"])))[box].astype(bool)
        inner = ndimage.distance_transform_edt(tumour, sampling=spacing_zyx) > 2.0
        outside_mm = ndimage.distance_transform_edt(~tumour, sampling=spacing_zyx)
        ring = (outside_mm > 0) & (outside_mm <= 4.0) & liver
        deep = (outside_mm > 15.0) & (outside_mm <= 19.0) & liver
        row = {"patient_id": pid}
        for phase in PHASES:
            ct = sitk.GetArrayFromImage(sitk.ReadImage(str(files.images[phase])))[box]
            image = ndimage.gaussian_filter(ct.astype(np.float32), 1.0 / spacing_zyx)
            row[f"sd_{phase}"] = float(image[inner].std())
            if phase == "arterial":
                reference = np.median(image[liver & (outside_mm > 10.0)])
                row["ring_arterial"] = float(image[ring].mean() - reference)
                row["deep_arterial"] = float(image[deep].mean() - reference)
        rows.append(row)
    return table.merge(pd.DataFrame(rows), on="patient_id").merge(oracle[["patient_id", "os_linear_predictor"]])


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# --------------------------------------------------------------------------- splits
def test_split_sizes_follow_the_paper():
    assert split_sizes(388) == {"train": 192, "internal": 116, "external": 80}
    assert split_sizes(6) == {"train": 2, "internal": 2, "external": 2}
    assert split_sizes(64) == {"train": 32, "internal": 19, "external": 13}
    for n in range(6, 120):
        sizes = split_sizes(n)
        assert sum(sizes.values()) == n and min(sizes.values()) >= 2
    with pytest.raises(ConfigError, match="at least 6"):
        split_sizes(5)


def test_patient_draws_do_not_depend_on_cohort_size():
    small, large = sample_cohort(6, SEED), sample_cohort(N_PATIENTS, SEED)
    assert [p.latents for p in small[:2]] == [p.latents for p in large[:2]]
    assert sample_cohort(6, SEED + 1)[0].latents != small[0].latents


# --------------------------------------------------------------------------- generative model (no images)
@pytest.fixture(scope="module")
def population() -> list[synthetic.SyntheticPatient]:
    """Outcome draws of many patients (no volumes), to check the generative model's targets."""
    return sample_cohort(1500, seed=11)


def test_outcome_model_at_scale_matches_its_targets(population):
    frame = _frame(population)
    metrics = oracle_metrics(frame, frame)
    for split in SPLITS:
        assert 0.74 < metrics[f"{split}/os/oracle_c_index"] < 0.86, metrics
        assert 0.70 < metrics[f"{split}/rfs/oracle_c_index"] < 0.82, metrics
        assert 0.82 < metrics[f"{split}/mvi/oracle_auc"] < 0.95, metrics
    assert 0.30 <= frame["os_event"].mean() <= 0.45
    assert 0.50 <= frame["rfs_event"].mean() <= 0.65
    assert 0.25 <= frame["mvi"].mean() <= 0.55
    assert (frame["rfs_time_days"] <= frame["os_time_days"]).all()
    assert (frame.loc[frame["os_event"] == 1, "rfs_event"] == 1).all()
    assert frame["os_time_days"].max() <= synthetic.MAX_FOLLOW_UP_DAYS
    followup = KaplanMeierFitter().fit(frame["os_time_days"], 1 - frame["os_event"]).median_survival_time_
    assert 750 <= followup <= 1100
    # MVI and relapse share the peritumoral factor: MVI-positive patients relapse earlier.
    rfs_lp = frame["rfs_linear_predictor"]
    assert rfs_lp[frame["mvi"] == 1].mean() > rfs_lp[frame["mvi"] == 0].mean() + 0.5


def test_clinical_variables_carry_weaker_risk_signal_than_the_oracle(population):
    frame = _frame(population).join(pd.DataFrame([p.clinical for p in population]))
    frame["bclc_rank"] = frame["bclc"].map({s: i for i, s in enumerate(BCLC_STAGES)})
    frame["tnm_rank"] = frame["tnm"].map({s: i for i, s in enumerate(TNM_STAGES)})
    oracle_c = _c_index(frame, "os_linear_predictor")
    for column in ("afp_ng_ml", "tumour_size_mm", "bclc_rank", "tnm_rank"):
        c = _c_index(frame, column)
        assert 0.55 < c < oracle_c - 0.1, (column, c, oracle_c)
    assert 0.05 < frame["bclc"].eq("0").mean() < 0.12 and frame["bclc"].eq("D").mean() < 0.03
    assert 0.75 < frame["sex"].eq("M").mean() < 0.9


def test_rfs_linear_predictor_is_the_cox_predictor_of_min_relapse_death():
    # Hazard of the minimum is the sum of hazards: RFS risk exceeds both components' scaled risks.
    lp = synthetic.rfs_linear_predictor(0.0, 0.0)
    higher_death = synthetic.rfs_linear_predictor(1.0, 0.0)
    higher_relapse = synthetic.rfs_linear_predictor(0.0, 1.0)
    assert higher_death > lp and higher_relapse > lp
    k = synthetic.WEIBULL_SHAPE
    summed = (1 / synthetic.RELAPSE_SCALE_DAYS**k + 1 / synthetic.DEATH_SCALE_DAYS**k) * synthetic.RELAPSE_SCALE_DAYS**k
    assert lp == pytest.approx(math.log(summed))


# --------------------------------------------------------------------------- written cohort
def test_cohort_table_follows_the_contract(cohort, table):
    out, summary = cohort
    assert list(table.columns) == list(REQUIRED_COLUMNS)
    assert len(table) == N_PATIENTS and table["patient_id"].is_unique
    sizes = split_sizes(N_PATIENTS)
    assert table["split"].value_counts().to_dict() == sizes
    assert set(table.loc[table["split"] == "train", "institution"]) == {"I"}
    assert set(table.loc[table["split"] == "internal", "institution"]) == {"II", "III", "IV", "V"}
    assert set(table.loc[table["split"] == "external", "institution"]) == {"VI"}
    assert (table["rfs_time_days"] <= table["os_time_days"]).all()
    assert (table.loc[table["os_event"] == 1, "rfs_event"] == 1).all()
    assert (table["os_time_days"] >= 1).all()
    assert set(table["bclc"].astype(str)) <= {"0", "A", "B", "C", "D"}
    assert set(table["tnm"]) <= {"I", "II", "III", "IV"}
    assert set(table["sex"]) <= {"F", "M"}
    assert (table["afp_ng_ml"] > 0).all() and table["age"].between(25, 85).all()
    for split in SPLITS:
        rows = table[table["split"] == split]
        assert rows["os_event"].sum() >= 1 and rows["rfs_event"].sum() >= 1
        assert set(rows["mvi"]) == {0, 1}
    assert summary.n_per_split == sizes
    assert summary.os_event_rate["train"] == pytest.approx(table.loc[table["split"] == "train", "os_event"].mean())


def test_tumour_size_is_measured_with_noise_from_the_true_radius(table, oracle):
    merged = table.merge(oracle, on="patient_id")
    diameter = 2 * merged["tumour_radius_mm"]
    assert np.corrcoef(diameter, merged["tumour_size_mm"])[0, 1] > 0.9
    assert not np.allclose(merged["tumour_size_mm"], diameter.round(1))


def test_patient_folders_are_complete_and_consistent(cohort, table):
    out, _ = cohort
    for _, row in table.iterrows():
        pid = row["patient_id"]
        files = PatientFiles.resolve(out, pid)
        expected = {f"{p}.nii.gz" for p in PHASES} | {f"{p}_tumour.nii.gz" for p in PHASES} | {"liver.nii.gz"}
        assert {p.name for p in files.folder.iterdir()} == expected
        institution = INSTITUTIONS[row["institution"]]
        reference = _header(files.images["portal"])
        sx, sy, sz = reference.GetSpacing()
        assert sx == sy and 0.7 <= sx <= 0.9 and abs(sx - institution.in_plane_mm) <= 0.03 + 1e-6
        assert sz == pytest.approx(institution.slice_mm)
        extent = np.array(reference.GetSize()) * np.array(reference.GetSpacing())
        assert (extent >= synthetic.MIN_FOV_MM).all()
        for path in [*files.images.values(), *files.tumour_masks.values(), files.liver_masks["portal"]]:
            header = _header(path)
            assert header.GetSize() == reference.GetSize() and header.GetOrigin() == reference.GetOrigin()
            assert header.GetSpacing() == reference.GetSpacing() and header.GetDirection() == reference.GetDirection()
        assert all(_header(files.images[p]).GetPixelID() == sitk.sitkInt16 for p in PHASES)
        tumour = _array(files.tumour_masks["arterial"])
        for phase in PHASES[1:]:
            np.testing.assert_array_equal(_array(files.tumour_masks[phase]), tumour)
        liver = _array(files.liver_masks["arterial"])
        for mask in (tumour, liver):
            assert mask.dtype == np.uint8 and mask.max() == 1 and ((mask == 0) | (mask == 1)).all(), pid
        assert (liver[tumour == 1] == 1).all(), pid


def test_volumes_have_realistic_attenuation_and_room_for_the_crop(cohort, table):
    out, _ = cohort
    medians = {p: [] for p in PHASES}
    contrast = {p: [] for p in PHASES}
    for _, row in table.iloc[::3].iterrows():
        pid = row["patient_id"]
        files = PatientFiles.resolve(out, pid)
        image = read_volume(files.tumour_masks["portal"])
        spacing_zyx = np.array(image.GetSpacing()[::-1])
        tumour = sitk.GetArrayFromImage(image).astype(bool)
        liver = _array(files.liver_masks["portal"]).astype(bool)
        outside_mm = ndimage.distance_transform_edt(~tumour, sampling=spacing_zyx)
        parenchyma = liver & (outside_mm > 10.0)
        # Liver surrounds the tumour: the 0-4 mm band outside it is (almost) all liver.
        band = (outside_mm > 0) & (outside_mm <= 4.0)
        assert liver[band].mean() > 0.95, pid
        # Tumour plus 2 cm stays inside the FOV, and so does a 96 mm box on its centroid.
        idx = np.argwhere(tumour)
        low_mm, high_mm = idx.min(0) * spacing_zyx, (idx.max(0) + 1) * spacing_zyx
        extent_mm = np.array(tumour.shape) * spacing_zyx
        assert (low_mm >= 20.0).all() and (extent_mm - high_mm >= 20.0).all(), pid
        centroid_mm = (idx.mean(0) + 0.5) * spacing_zyx
        assert (centroid_mm >= 50.0).all() and (extent_mm - centroid_mm >= 50.0).all(), pid
        for phase in PHASES:
            ct = _array(files.images[phase])
            assert ct.min() >= -1024 and ct.max() <= 3071
            medians[phase].append(np.median(ct[parenchyma]))
            contrast[phase].append(np.median(ct[tumour]) - np.median(ct[parenchyma]))
        # Institution noise level (domain shift): robust SD of neighbour differences in the liver.
        diff = np.diff(ct.astype(np.float32), axis=2)[parenchyma[:, :, 1:] & parenchyma[:, :, :-1]]
        noise_hu = 1.4826 * np.median(np.abs(diff - np.median(diff))) / math.sqrt(2)
        assert noise_hu == pytest.approx(INSTITUTIONS[row["institution"]].noise_hu, rel=0.15), pid
    liver_hu = {p: float(np.median(v)) for p, v in medians.items()}
    assert 50 < liver_hu["arterial"] < 90 and 90 < liver_hu["portal"] < 130 and 70 < liver_hu["delayed"] < 110
    assert liver_hu["portal"] > liver_hu["delayed"] > liver_hu["arterial"]
    # HCC: arterial hyper-enhancement, portal / delayed washout.
    assert np.median(contrast["arterial"]) > 25
    assert np.median(contrast["portal"]) < -10 and np.median(contrast["delayed"]) < -10


def test_oracle_is_separate_and_consistent(cohort, table, oracle):
    assert list(oracle.columns) == list(ORACLE_COLUMNS)
    assert not set(oracle.columns) - {"patient_id", "institution", "split"} & set(table.columns)
    assert list(oracle["patient_id"]) == list(table["patient_id"])
    # The written tables are exactly the generator's draws (so sample_cohort stands in for them).
    drawn = _frame(sample_cohort(N_PATIENTS, SEED))
    for col in ("split", "os_time_days", "os_event", "rfs_time_days", "rfs_event", "mvi"):
        assert list(table[col]) == list(drawn[col]), col
    for col in ("os_linear_predictor", "rfs_linear_predictor", "mvi_probability"):
        np.testing.assert_allclose(oracle[col], drawn[col], atol=1e-6)


def test_oracle_metrics_of_the_written_files_equal_sksurv_and_sklearn(cohort, table, oracle):
    # Expected values straight from the reference libraries on the files as written.
    out, _ = cohort
    metrics = cohort_oracle_metrics(out)
    on_disk = pd.read_csv(out / COHORT_CSV, dtype={"patient_id": str}).merge(
        pd.read_csv(out / ORACLE_CSV, dtype={"patient_id": str}).drop(columns=["split", "institution"]), on="patient_id"
    )
    expected: dict[str, float] = {}
    for split in SPLITS:
        rows = on_disk[on_disk["split"] == split]
        for task in ("os", "rfs"):
            expected[f"{split}/{task}/oracle_c_index"] = concordance_index_censored(
                rows[f"{task}_event"].astype(bool).to_numpy(),
                rows[f"{task}_time_days"].to_numpy(float),
                rows[f"{task}_linear_predictor"].to_numpy(float),
            )[0]
        expected[f"{split}/mvi/oracle_auc"] = roc_auc_score(rows["mvi"], rows["mvi_probability"])
    assert set(metrics) == set(expected)
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=1e-12), key
    pooled = oracle_metrics(oracle, table.assign(split="train"))
    assert min(pooled.values()) > 0.7, pooled


def test_oracle_beats_chance_on_every_split():
    frame = _frame(sample_cohort(ORACLE_PATIENTS, SEED))
    metrics = oracle_metrics(frame, frame)
    for split in SPLITS:
        assert metrics[f"{split}/os/oracle_c_index"] > 0.65, metrics
        assert metrics[f"{split}/rfs/oracle_c_index"] > 0.65, metrics
        assert metrics[f"{split}/mvi/oracle_auc"] > 0.7, metrics


def test_oracle_metrics_need_an_oracle(tiny_cohort):
    with pytest.raises(MissingFileError, match="oracle.csv"):
        cohort_oracle_metrics(tiny_cohort)


def test_summary_counts_and_rates_are_those_of_the_written_table(cohort, table):
    _, summary = cohort
    json.dumps(summary.to_dict())
    for split in SPLITS:
        rows = table[table["split"] == split]
        assert summary.n_per_split[split] == len(rows) == split_sizes(N_PATIENTS)[split]
        assert summary.os_event_rate[split] == pytest.approx(rows["os_event"].sum() / len(rows))
        assert summary.rfs_event_rate[split] == pytest.approx(rows["rfs_event"].sum() / len(rows))
        assert summary.mvi_rate[split] == pytest.approx(rows["mvi"].sum() / len(rows))


def test_summary_renders_as_a_console_table(tmp_path):
    # A stand-in with hand-picked numbers: 2 of 5, 1 of 3 and 1 of 2 events.
    summary = SimpleNamespace(
        cohort_dir=tmp_path, seed=1, version=2,
        n_per_split={"train": 5, "internal": 3, "external": 2},
        os_event_rate={"train": 0.4, "internal": 1 / 3, "external": 0.5},
        rfs_event_rate={"train": 0.6, "internal": 2 / 3, "external": 1.0},
        mvi_rate={"train": 0.2, "internal": 0.0, "external": 0.5},
    )
    console = Console(record=True, width=200)
    render_synthetic_summary(summary, console, oracle={"external/os/oracle_c_index": 0.8126, "external/mvi/oracle_auc": 0.75})
    rows = [[cell.strip() for cell in line.strip().strip("│").split("│")] for line in console.export_text().splitlines()]
    cells = {row[0]: row[1:] for row in rows if row[0] in SPLITS}
    assert cells["train"] == ["5", "40%", "60%", "20%", "n/e", "n/e", "n/e"]
    assert cells["internal"] == ["3", "33%", "67%", "0%", "n/e", "n/e", "n/e"]
    assert cells["external"] == ["2", "50%", "100%", "50%", "0.813", "n/e", "0.750"]
    plain = Console(record=True, width=200)
    render_synthetic_summary(summary, plain)
    assert "oracle" not in plain.export_text()


# --------------------------------------------------------------------------- determinism and atomicity
def test_same_seed_same_bytes_other_seed_other_bytes(cohort, tmp_path):
    first = tmp_path / "first"
    write_synthetic_cohort(first, patients=6, seed=3, progress=False)
    digest = _tree_digest(first)
    # Writing again onto the existing folder replaces it with identical bytes.
    write_synthetic_cohort(first, patients=6, seed=3, progress=True)
    assert _tree_digest(first) == digest
    assert len(digest) == 2 + 6 * 7
    assert [p.name for p in tmp_path.iterdir()] == ["first"]  # no temporary folder left behind
    other = _tree_digest(cohort[0])
    assert other[COHORT_CSV] != digest[COHORT_CSV]
    assert other[f"{IMAGES_DIR}/SYN0001/portal.nii.gz"] != digest[f"{IMAGES_DIR}/SYN0001/portal.nii.gz"]


def test_failed_write_leaves_existing_cohort_untouched(tmp_path, monkeypatch):
    out = tmp_path / "cohort"
    out.mkdir()
    (out / "marker.txt").write_text("previous cohort")
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return original(*args, **kwargs)

    original = synthetic.synthesize_volumes
    monkeypatch.setattr(synthetic, "synthesize_volumes", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        write_synthetic_cohort(out, patients=6, seed=1, progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["cohort"]
    assert [p.name for p in out.iterdir()] == ["marker.txt"]


# --------------------------------------------------------------------------- planted signals
def _c_index(frame: pd.DataFrame, risk: str) -> float:
    return concordance_index_censored(frame["os_event"].astype(bool), frame["os_time_days"].astype(float), frame[risk])[0]


def test_prognostic_texture_is_strongest_in_the_portal_phase(features):
    c = {phase: _c_index(features, f"sd_{phase}") for phase in PHASES}
    assert c["portal"] > 0.65, c
    assert c["portal"] > c["arterial"] and c["portal"] > c["delayed"], c
    # Against the true OS risk (no censoring noise) the ordering is clear-cut.
    rho = {phase: features[f"sd_{phase}"].corr(features["os_linear_predictor"], method="spearman") for phase in PHASES}
    assert rho["portal"] > 0.6, rho
    assert rho["portal"] > rho["arterial"] + 0.2 and rho["portal"] > rho["delayed"] + 0.2, rho


def test_mvi_signal_lives_in_the_peritumoral_margin(features):
    ring = roc_auc_score(features["mvi"], features["ring_arterial"])
    deep = roc_auc_score(features["mvi"], features["deep_arterial"])
    assert ring > 0.7, (ring, deep)
    assert ring > deep + 0.15, (ring, deep)


def test_model_doctests():
    result = doctest.testmod(synthetic_model)
    assert result.attempted > 0 and result.failed == 0
