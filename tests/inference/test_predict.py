"""``hcc-exp predict`` on a tiny trained run: a cohort patient, the real CT, and named errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from scipy import ndimage

from hcc_exp.data.io import write_nifti
from hcc_exp.errors import CohortPredictionError, GridMismatchError, MissingFileError, OutputFolderError
from hcc_exp.evaluation.risk_model import RiskModel
from hcc_exp.inference.predict import Predictor, ensure_risk_model, predict_cohort, predict_patient
from hcc_exp.interpretability.cam import write_patient_cams
from hcc_exp.run_folder import RISK_MODEL_JSON, RunFolder

PHASES = ("arterial", "portal", "delayed")


def _check_outputs(result: dict, horizons=(365, 730)) -> None:
    for key in ("os_risk", "rfs_risk", "mvi_probability"):
        assert np.isfinite(result[key]), key
    assert 0.0 <= result["mvi_probability"] <= 1.0
    for endpoint in ("os", "rfs"):
        assert result[f"{endpoint}_risk_group"] == ("high" if result[f"{endpoint}_risk"] > result[f"{endpoint}_risk_cutoff"] else "low")
        survival = [result[f"{endpoint}_survival_{h}d"] for h in horizons]
        assert all(0.0 <= s <= 1.0 for s in survival), survival
        assert survival[0] >= survival[1]  # survival does not rise with time


@pytest.fixture(scope="module")
def run_copy(trained_run, tmp_path_factory):
    """A private copy of the run folder, so the risk-model fallback writes into it only."""
    target = tmp_path_factory.mktemp("run-copy") / "tiny"
    shutil.copytree(trained_run.run_dir, target, ignore=shutil.ignore_patterns("cam"))
    (target / RISK_MODEL_JSON).unlink(missing_ok=True)
    return target


def _breslow_by_hand(risk: np.ndarray, time: np.ndarray, event: np.ndarray, t: float) -> float:
    """H0(t) = sum over event times u <= t of d(u) / sum_{j: T_j >= u} exp(risk_j), one loop per time."""
    total = 0.0
    for u in np.unique(time[event == 1]):
        if u > t:
            break
        total += np.sum((time == u) & (event == 1)) / np.sum(np.exp(risk[time >= u]))
    return total


def test_missing_risk_model_is_fitted_from_the_run_predictions_and_written(trained_run, run_copy):
    from hcc_exp.config import load_config

    config = load_config(run_copy / "config.yaml")
    model = ensure_risk_model(RunFolder(run_copy), config)
    assert (run_copy / RISK_MODEL_JSON).is_file()
    assert RiskModel.load(run_copy / RISK_MODEL_JSON).to_dict() == model.to_dict()
    # The fallback refits what training wrote at the end of the run.
    # The fallback refits what training wrote at the end of the run (predictions.csv keeps 8 digits).
    written_by_training = RiskModel.load(trained_run.run_dir / RISK_MODEL_JSON)
    for endpoint in ("os", "rfs"):
        assert model.endpoint(endpoint).cutoff == pytest.approx(written_by_training.endpoint(endpoint).cutoff, rel=1e-6)

    # Expected values derived independently: the training split's median risk, and the Breslow
    # estimator from scikit-survival and from the textbook sum, on the run's own predictions.
    from sksurv.linear_model.coxph import BreslowEstimator

    predictions = pd.read_csv(run_copy / "predictions.csv", dtype={"patient_id": str})
    meta = json.loads((run_copy / "meta.json").read_text())
    labels = pd.read_csv(f"{meta['cache_dir']}/labels.csv", dtype={"patient_id": str}).set_index("patient_id")
    train = predictions[predictions["split"] == "train"]
    assert model.n_train == len(train) == 4
    for endpoint in ("os", "rfs"):
        risk = train[f"{endpoint}_risk"].to_numpy(float)
        time = labels.loc[train["patient_id"], f"{endpoint}_time_days"].to_numpy(float)
        event = labels.loc[train["patient_id"], f"{endpoint}_event"].to_numpy(int)
        fitted = model.endpoint(endpoint)
        assert fitted.cutoff == pytest.approx(float(np.median(risk)), abs=0)
        if event.sum() == 0:
            assert fitted.baseline is None
            continue
        horizons = [t for t in (365.0, 730.0) if t <= time.max()] + [float(np.median(time))]
        reference = BreslowEstimator().fit(risk, event.astype(bool), time)
        for t in horizons:
            expected_h0 = _breslow_by_hand(risk, time, event, t)
            # sksurv's baseline is for risk 0; ours is relative to its offset: compare S(t | risk) per patient.
            expected = np.exp(-expected_h0 * np.exp(risk))
            np.testing.assert_allclose(fitted.survival(risk, [t])[:, 0], expected, rtol=1e-9)
            np.testing.assert_allclose(
                expected, [fn(t) for fn in reference.get_survival_function(risk)], rtol=1e-9
            )


def test_predict_a_cohort_patient_reproduces_the_run_predictions(trained_run, run_copy, tmp_path):
    result = predict_patient(
        run_copy / "checkpoints" / "best.ckpt", trained_run.cohort_dir / "images" / "P004", tmp_path / "out",
        explain=write_patient_cams,
    )
    _check_outputs(result)
    assert result["patient_id"] == "P004"
    # Same preprocessing recipe and weights as training: the same numbers as predictions.csv.
    row = pd.read_csv(run_copy / "predictions.csv", dtype={"patient_id": str}).set_index("patient_id").loc["P004"]
    assert result["os_risk"] == pytest.approx(row["os_risk"], rel=1e-4, abs=1e-6)
    assert result["rfs_risk"] == pytest.approx(row["rfs_risk"], rel=1e-4, abs=1e-6)
    assert result["mvi_probability"] == pytest.approx(row["mvi_prob"], rel=1e-4, abs=1e-6)
    written = json.loads((tmp_path / "out" / "prediction.json").read_text())
    assert written == result
    for head in ("os", "rfs", "mvi"):
        assert (tmp_path / "out" / f"cam_{head}.png").read_bytes()[:4] == b"\x89PNG"


@pytest.fixture
def real_ct_patient(real_ct_dir, tmp_path):
    """The real CT as all three phases, its real liver mask, and an 8 mm tumour sphere deep in the liver."""
    folder = tmp_path / "real" / "RC01"
    folder.mkdir(parents=True)
    for phase in PHASES:
        shutil.copyfile(real_ct_dir / "ct.nii.gz", folder / f"{phase}.nii.gz")
    shutil.copyfile(real_ct_dir / "liver.nii.gz", folder / "liver.nii.gz")
    liver_image = sitk.ReadImage(str(real_ct_dir / "liver.nii.gz"))
    liver = sitk.GetArrayFromImage(liver_image) > 0
    spacing_zyx = tuple(reversed(liver_image.GetSpacing()))
    # Padding makes the scan's edges count as boundary: the tumour must not be cut by the field of view.
    depth = ndimage.distance_transform_edt(np.pad(liver, 1), sampling=spacing_zyx)[1:-1, 1:-1, 1:-1]
    centre = np.unravel_index(np.argmax(depth), liver.shape)
    assert depth[centre] > 8.0  # the sphere fits inside the liver
    grid = np.indices(liver.shape)
    dist2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, spacing_zyx, strict=True))
    tumour = sitk.GetImageFromArray((dist2 <= 8.0**2).astype(np.uint8))
    tumour.CopyInformation(liver_image)
    for phase in PHASES:
        write_nifti(tumour, folder / f"{phase}_tumour.nii.gz")
    return folder


def test_predict_the_real_ct(trained_run, run_copy, real_ct_patient, tmp_path):
    result = predict_patient(run_copy / "checkpoints" / "best.ckpt", real_ct_patient, tmp_path / "out", explain=write_patient_cams)
    _check_outputs(result)
    assert result["patient_id"] == "RC01"
    assert (tmp_path / "out" / "cam_os.png").is_file()


def test_missing_phase_and_off_grid_mask_are_named(run_copy, real_ct_patient, tmp_path):
    checkpoint = run_copy / "checkpoints" / "best.ckpt"
    (real_ct_patient / "delayed.nii.gz").unlink()
    with pytest.raises(MissingFileError, match="delayed image is missing"):
        predict_patient(checkpoint, real_ct_patient, tmp_path / "out1")
    shutil.copyfile(real_ct_patient / "arterial.nii.gz", real_ct_patient / "delayed.nii.gz")
    mask = sitk.ReadImage(str(real_ct_patient / "portal_tumour.nii.gz"))
    mask.SetSpacing((2.0, 2.0, 2.0))
    write_nifti(mask, real_ct_patient / "portal_tumour.nii.gz")
    with pytest.raises(GridMismatchError, match="grid"):
        predict_patient(checkpoint, real_ct_patient, tmp_path / "out2")
    assert not (tmp_path / "out1").exists() and not (tmp_path / "out2").exists()


def test_predict_cohort_writes_one_row_per_patient_and_names_failures(trained_run, run_copy, tmp_path):
    cohort = tmp_path / "cohort"
    shutil.copytree(trained_run.cohort_dir, cohort)
    (cohort / "images" / "P005" / "arterial_tumour.nii.gz").unlink()
    with pytest.raises(CohortPredictionError, match=r"1 of 12 patient.*P005: MissingFileError") as caught:
        predict_cohort(run_copy / "checkpoints" / "best.ckpt", cohort, tmp_path / "pred")
    assert list(caught.value.failures) == ["P005"]
    path = tmp_path / "pred" / "predictions.csv"
    assert caught.value.path == str(path)
    table = pd.read_csv(path, dtype={"patient_id": str}, keep_default_na=False)
    assert table["patient_id"].tolist() == [f"P{i:03d}" for i in range(12)]
    failed = table.set_index("patient_id").loc["P005"]
    assert failed["error"] == "MissingFileError" and "arterial tumour mask is missing" in failed["error_message"]
    ok = table[table["error"] == ""]
    assert len(ok) == 11
    assert np.isfinite(ok["os_risk"].astype(float)).all()
    assert ok["mvi_probability"].astype(float).between(0, 1).all()
    assert set(ok["os_risk_group"]) <= {"high", "low"}
    # Training patients are split at their own median.
    train_ids = [f"P{i:03d}" for i in range(0, 12, 3)]
    groups = ok.set_index("patient_id").loc[train_ids, "os_risk_group"]
    assert (groups == "high").sum() == 2


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from hcc_exp.cli import main; main()", *args], capture_output=True, text=True, check=False
    )


def test_cli_predict_cohort_with_a_failed_patient_exits_2_naming_it(trained_run, run_copy, tmp_path):
    cohort = tmp_path / "cohort"
    shutil.copytree(trained_run.cohort_dir, cohort, ignore=shutil.ignore_patterns("P00[6-9]", "P01*"))
    (cohort / "cohort.csv").unlink()
    (cohort / "images" / "P002" / "portal.nii.gz").unlink()
    result = _cli("predict", str(run_copy / "checkpoints" / "best.ckpt"), "--cohort", str(cohort), "--out", str(tmp_path / "p"))
    assert result.returncode == 2, result.stderr
    message = " ".join(result.stderr.split())  # Rich wraps long lines
    assert "P002: MissingFileError" in message and "Traceback" not in message
    assert len(pd.read_csv(tmp_path / "p" / "predictions.csv")) == 6


def test_an_unwritable_prediction_folder_is_refused_before_any_work(trained_run, run_copy, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    patient = trained_run.cohort_dir / "images" / "P004"
    checkpoint = run_copy / "checkpoints" / "best.ckpt"
    with pytest.raises(OutputFolderError, match="is a file"):
        predict_patient(checkpoint, patient, blocker)
    with pytest.raises(OutputFolderError, match="lies under the file"):
        predict_cohort(checkpoint, trained_run.cohort_dir, blocker / "sub")
    result = _cli("predict", str(checkpoint), str(patient), "--out", str(blocker / "sub"))
    assert result.returncode == 2
    message = " ".join(result.stderr.split())  # Rich wraps long lines
    assert "lies under the file" in message and "Traceback" not in message
    assert blocker.read_text() == "x"


def test_predict_dicom_phases(run_copy, real_ct_dir, tmp_path):
    """The portal phase as a DICOM series folder (the real 20-slice series), the others as NIfTI of it."""
    from hcc_exp.data.io import read_volume

    folder = tmp_path / "dicom-patient" / "DC01"
    folder.mkdir(parents=True)
    (folder / "portal").symlink_to(real_ct_dir / "dicom", target_is_directory=True)
    ct = read_volume(real_ct_dir / "dicom")
    # Reading a 512 x 512 series takes seconds: one DICOM phase keeps the test short.
    for phase in ("arterial", "delayed"):
        write_nifti(ct, folder / f"{phase}.nii.gz")
    shape_zyx = tuple(reversed(ct.GetSize()))
    spacing_zyx = tuple(reversed(ct.GetSpacing()))
    grid = np.indices(shape_zyx, sparse=True)
    centre = (shape_zyx[0] // 2, shape_zyx[1] // 2, shape_zyx[2] // 2)
    dist2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, spacing_zyx, strict=True))
    for name, radius in (("liver", 30.0), ("tumour", 10.0)):
        mask = sitk.GetImageFromArray((dist2 <= radius**2).astype(np.uint8))
        mask.CopyInformation(ct)
        targets = ["liver.nii.gz"] if name == "liver" else [f"{p}_tumour.nii.gz" for p in PHASES]
        for target in targets:
            write_nifti(mask, folder / target)
    # Without Grad-CAM (covered above): this test is about reading the series.
    predictor = Predictor.from_checkpoint(run_copy / "checkpoints" / "best.ckpt")
    result = predictor.predict(folder, tmp_path / "out")
    _check_outputs(result)
    assert result["patient_id"] == "DC01"
    assert json.loads((tmp_path / "out" / "prediction.json").read_text()) == result
    assert not list((tmp_path / "out").glob("*.png"))
