"""End to end on a hospital-style export built from a real scan: import -> check -> preprocess -> train -> predict.

Real: the CT of HCC_048 (HCC-TACE-Seg, portal-venous), downsampled, and the header of one of its
DICOM slices used as the template of every slice written.

Simulated (tagged here as such; none of it is ground truth):
* six "patients" are that one scan; their arterial and delayed phases are it moved by known rigid
  motions (2-5 degrees, 3-7 mm) with the liver's enhancement changed;
* the liver mask (the scan's soft tissue inside an ellipsoid on the real liver) and a hypodense
  lesion inserted inside it, drawn on the portal phase only, given as a label map stored in another
  index order (fast variant) or as a DICOM-SEG with segments "Liver" and "Mass" (slow variant);
* all three phases as DICOM series in one folder, chosen by SeriesDescription;
* the clinical XLSX with the hospital's own column names and codes (outcomes invented).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from hcc_exp.cli import app
from hcc_exp.config import build_config
from hcc_exp.data.contract import IMAGES_DIR
from hcc_exp.data.importer import QC_CSV, QC_DIR, ImportMapping, import_cohort
from hcc_exp.data.preprocess import preprocess_cohort
from hcc_exp.data.validate import validate_cohort
from hcc_exp.inference.predict import predict_cohort
from hcc_exp.training.train import train
from tests.conftest import REAL_HCC_DIR, tiny_run_overrides
from tests.data.importing.real_scan import (
    dice,
    downsampled,
    moved,
    phantom,
    rigid,
    write_dicom_series,
    write_segmentation,
)
from tests.data.importing.test_masks import _reordered
from tests.data.importing.test_registration import _enhanced
from tests.data.test_importer import COLUMNS, VALUES, _clinical_rows

PATIENTS = [f"RH-{k:02d}" for k in range(1, 7)]
LESION_OFFSETS_MM = [(0, 0, 0), (6, -5, 0), (-6, 5, 4), (5, 6, -4), (-5, -6, 0), (0, 8, 3)]


def _motions(k: int, image: sitk.Image) -> dict[str, sitk.Euler3DTransform]:
    return {
        "arterial": rigid(image, 2.0 + 0.5 * k, (3.0 + 0.5 * k, -2.0, 1.5), axis=(0.2, 0.3, 1.0)),
        "delayed": rigid(image, -(1.5 + 0.4 * k), (-2.0, 2.5 + 0.6 * k, -1.0), axis=(0.3, -0.2, 1.0)),
    }


def _hospital_export(root: Path, real_dir: Path, *, in_plane: int, seg: bool) -> tuple[Path, dict]:
    real = downsampled(real_dir, in_plane=in_plane)
    template = sorted(real_dir.glob("*.dcm"))[0]
    src = root / "export"
    truths = {}
    for k, pid in enumerate(PATIENTS):
        scan = phantom(real, lesion_offset_mm=LESION_OFFSETS_MM[k], radius_mm=10.0 + k)
        motions = _motions(k, scan.portal)
        phases = {
            "arterial": moved(_enhanced(scan.portal, scan.liver, -35), motions["arterial"]),
            "portal": scan.portal,
            "delayed": moved(_enhanced(scan.portal, scan.liver, -15), motions["delayed"]),
        }
        written = {}
        for n, (phase, image) in enumerate(phases.items()):
            written[phase] = write_dicom_series(
                image, src / pid / "CT", template, patient_id=pid, description=f"ABD {phase.upper()} 5mm",
                number=n + 2, prefix=f"S{n}_",
            )  # fmt: skip
        if seg:
            write_segmentation(
                written["portal"], {"Liver": scan.liver, "Mass": scan.tumour}, src / pid / "seg.dcm"
            )
        else:
            labels = sitk.GetImageFromArray(
                (sitk.GetArrayFromImage(scan.liver) + sitk.GetArrayFromImage(scan.tumour)).astype(np.uint8)
            )
            labels.CopyInformation(scan.portal)
            sitk.WriteImage(_reordered(labels, flip_x=True, swap_xy=False), str(src / pid / "seg.nii.gz"))
        truths[pid] = {
            phase: moved(scan.tumour, motions[phase], mask=True) for phase in ("arterial", "delayed")
        } | {"motions": motions}
    with pd.ExcelWriter(src / "clinical.xlsx") as writer:
        _clinical_rows(PATIENTS).to_excel(writer, sheet_name="Clinical", index=False)
    return src, truths


def _mapping(seg: bool, registration: dict) -> ImportMapping:
    masks = (
        {
            "liver": {"file": "seg.dcm", "segment": "Liver", "phase": "portal"},
            "tumour": {"file": "seg.dcm", "segment": "mass", "phase": "portal"},
        }
        if seg
        else {
            "liver": {"file": "seg", "labels": [1, 2], "phase": "portal"},
            "tumour": {"file": "seg", "labels": [2], "phase": "portal"},
        }
    )
    return ImportMapping.model_validate(
        {
            "clinical": "clinical.xlsx",
            "sheet": "Clinical",
            "columns": COLUMNS,
            "values": VALUES,
            "drop_columns": ["Name"],
            "phases": {
                p: {"folder": "CT", "series_description": f"*{p}*"} for p in ("arterial", "portal", "delayed")
            },
            "masks": masks,
            "registration": registration,
        }
    )


def _run(tmp_path: Path, *, in_plane: int, seg: bool, registration: dict) -> None:
    real_dir = REAL_HCC_DIR / "hcc048-portal"
    if not real_dir.is_dir():
        pytest.skip(f"HCC-TACE-Seg sample not found at {real_dir}")
    src, truths = _hospital_export(tmp_path, real_dir, in_plane=in_plane, seg=seg)
    cohort = tmp_path / "cohort"

    report = import_cohort(src, cohort, _mapping(seg, registration), progress=False)
    assert report.ok, [str(e) for e in report.errors]
    qc = pd.read_csv(cohort / QC_DIR / QC_CSV)
    assert len(qc) == len(PATIENTS) * 2 * 2
    for pid in PATIENTS:
        for phase in ("arterial", "delayed"):
            out = sitk.ReadImage(str(cohort / IMAGES_DIR / pid / f"{phase}_tumour.nii.gz"))
            assert dice(out, truths[pid][phase]) >= 0.85, (pid, phase)
            row = qc[(qc["patient_id"] == pid) & (qc["to_phase"] == phase) & (qc["mask"] == "tumour")].iloc[0]
            truth = truths[pid]["motions"][phase]
            angle = np.degrees(np.arccos((np.trace(np.asarray(truth.GetMatrix()).reshape(3, 3)) - 1) / 2))
            assert abs(row["rotation_deg"] - angle) <= 1.0

    result = CliRunner().invoke(app, ["check", str(cohort), "--quiet"])
    assert result.exit_code == 0, result.output
    assert validate_cohort(cohort, progress=False).summary is not None

    root = tmp_path / "work"
    config = build_config({}, {**tiny_run_overrides(root, cohort), "trainer.max_epochs": 1})
    cache = preprocess_cohort(cohort, root / "cache", config.preprocess, progress=False)
    assert len(cache.labels) == len(PATIENTS)
    run = train(config, run_dir=root / "runs" / "e2e", progress=False)
    predictions = pd.read_csv(
        predict_cohort(run.run_dir / "checkpoints" / "best.ckpt", cohort, out_dir=root / "pred")
    )
    assert sorted(predictions["patient_id"]) == PATIENTS
    if "error" in predictions:
        assert predictions["error"].isna().all(), predictions.to_dict("records")

    # Only geometry and pixels left the DICOM headers: no description, date or UID in the cohort.
    header = __import__("pydicom").dcmread(
        next((src / PATIENTS[0] / "CT").glob("S0_*.dcm")), stop_before_pixels=True
    )
    secrets = [b"ABD ARTERIAL", str(header.StudyInstanceUID).encode(), str(header.SeriesInstanceUID).encode()]
    if header.get("StudyDate"):
        secrets.append(str(header.StudyDate).encode())
    for path in cohort.rglob("*"):
        if path.is_file():
            payload = path.read_bytes()
            payload += gzip.decompress(payload) if path.name.endswith(".gz") else b""
            assert not any(s in payload for s in secrets), path


def test_hospital_export_label_map_end_to_end(tmp_path: Path):
    """Fast variant: 64 x 64 x 44 phases, a label map in another index order, a light registration."""
    _run(
        tmp_path,
        in_plane=8,
        seg=False,
        registration={"sampling": 0.05, "working_spacing_mm": 4.0, "iterations": 60},
    )


@pytest.mark.slow
def test_hospital_export_dicom_seg_end_to_end(tmp_path: Path):
    """Slow variant: 128 x 128 x 44 phases, a DICOM-SEG with "Liver" and "Mass", rigid + B-spline registration."""
    _run(tmp_path, in_plane=4, seg=True, registration={"bspline": True, "iterations": 50, "sampling": 0.05})
