"""Masks drawn on one phase: the other phases registered to it, the mask carried across, bad fits refused.

Real: the CT of HCC_048 (downsampled 4x in-plane, 2x in z: 128 x 128 x 44 voxels of 2.8 x 2.8 x
5 mm). Simulated: the arterial and delayed phases (that scan moved by known rigid motions, 6 mm
and 4 degrees about an oblique axis, with the liver's enhancement changed), the liver mask and
the lesion (see ``real_scan.py``).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from hcc_exp.data.contract import IMAGES_DIR
from hcc_exp.data.importer import QC_CSV, QC_DIR, import_cohort
from hcc_exp.data.importing.mapping import RegistrationSettings
from hcc_exp.data.importing.registration import mask_centroid_mm, propagate, register
from hcc_exp.data.io import write_nifti
from hcc_exp.errors import CohortValidationError, RegistrationFailedError
from tests.data.importing.real_scan import dice, downsampled, moved, phantom, rigid
from tests.data.importing.test_masks import _assert_as_it_was, _existing_cohort
from tests.data.test_importer import _clinical_rows, _mapping

FAST = RegistrationSettings(sampling=0.05)
MOTION = {"angle_deg": 4.0, "shift_mm": (4.243, -3.0, 3.0), "axis": (0.3, 0.2, 1.0)}  # |shift| = 6.0 mm


@pytest.fixture(scope="module")
def scan(request):
    from tests.conftest import REAL_HCC_DIR

    folder = REAL_HCC_DIR / "hcc048-portal"
    if not folder.is_dir():
        pytest.skip(f"HCC-TACE-Seg sample not found at {folder}")
    real = downsampled(folder)
    return phantom(real)


def _enhanced(image: sitk.Image, liver: sitk.Image, delta_hu: float) -> sitk.Image:
    """Another contrast phase (simulated): the liver's HU shifted by ``delta_hu``."""
    array = sitk.GetArrayFromImage(image).astype(np.int32)
    array[sitk.GetArrayViewFromImage(liver) > 0] += int(delta_hu)
    out = sitk.GetImageFromArray(array.astype(np.int16))
    out.CopyInformation(image)
    return out


def _max_error_mm(found: sitk.Transform, truth: sitk.Transform, box: sitk.Image) -> float:
    """Largest distance between where the two transforms send the liver box's corners and centroid."""
    index = np.argwhere(sitk.GetArrayViewFromImage(box) > 0)
    lo, hi = index.min(axis=0)[::-1], index.max(axis=0)[::-1]
    points = [
        box.TransformContinuousIndexToPhysicalPoint([float(v) for v in c])
        for c in itertools.product(*zip(lo, hi, strict=True))
    ]
    points.append(mask_centroid_mm(box))
    return max(
        float(np.linalg.norm(np.subtract(found.TransformPoint(p), truth.TransformPoint(p)))) for p in points
    )


def test_known_rigid_motion_is_recovered_and_the_tumour_carried_across(scan):
    truth = rigid(scan.portal, **MOTION)
    arterial = moved(_enhanced(scan.portal, scan.liver, -35), truth)  # fixed: the phase to carry the mask to
    result = register(arterial, scan.portal, FAST)
    rotation_error = (
        np.asarray(result.rigid.GetMatrix()).reshape(3, 3) @ np.asarray(truth.GetMatrix()).reshape(3, 3).T
    )
    assert np.degrees(np.arccos(np.clip((np.trace(rotation_error) - 1) / 2, -1, 1))) <= 1.0
    assert result.rotation_deg == pytest.approx(4.0, abs=1.0)
    assert _max_error_mm(result.rigid, truth, scan.liver) <= 1.0
    tumour_truth = moved(scan.tumour, truth, mask=True)
    assert dice(propagate(scan.tumour, result, arterial), tumour_truth) >= 0.9
    assert result.correlation > 0.8


def _phase_src(root: Path, scan, *, broken_delayed: bool, patients=("HCC-201", "HCC-202")) -> Path:
    """Patients with NIfTI phases; masks drawn on portal only; the second's delayed phase flipped if broken."""
    src = root / "raw"
    patients = list(patients)
    for pid in patients:
        folder = src / pid
        folder.mkdir(parents=True)
        arterial = moved(_enhanced(scan.portal, scan.liver, -35), rigid(scan.portal, **MOTION))
        delayed = moved(_enhanced(scan.portal, scan.liver, -15), rigid(scan.portal, -3.0, (-2.0, 4.0, -1.0)))
        if (
            broken_delayed and pid == "HCC-202"
        ):  # the patient turned over: no rigid fit from the scanner geometry
            delayed = sitk.Flip(delayed, [False, True, False])
            delayed.SetDirection(scan.portal.GetDirection())
            delayed.SetOrigin(scan.portal.GetOrigin())
        write_nifti(scan.portal, folder / "PV.nii.gz")
        write_nifti(arterial, folder / "ART.nii.gz")
        write_nifti(delayed, folder / "DEL.nii.gz")
        write_nifti(scan.tumour, folder / "tumour.nii.gz")
        write_nifti(scan.liver, folder / "liver.nii.gz")
    _clinical_rows(patients).to_csv(src / "clinical.csv", index=False)
    return src


def _one_phase_mapping(**settings):
    return _mapping(
        masks={
            "tumour": {"file": "tumour", "phase": "portal"},
            "liver": {"file": "liver", "phase": "portal"},
        },
        registration={**FAST.model_dump(), **settings},
    )


def test_import_carries_masks_to_every_phase_with_qc(scan, tmp_path: Path):
    src = _phase_src(tmp_path, scan, broken_delayed=False)
    dst = tmp_path / "cohort"
    report = import_cohort(src, dst, _one_phase_mapping(), progress=False)
    assert report.ok, [str(e) for e in report.errors]
    qc = pd.read_csv(dst / QC_DIR / QC_CSV)
    assert len(qc) == 2 * 2 * 2  # patients x masks x other phases
    art = qc[(qc["to_phase"] == "arterial") & (qc["mask"] == "tumour")]
    assert (art["rotation_deg"] - 4.0).abs().max() <= 1.0
    truth = moved(scan.tumour, rigid(scan.portal, **MOTION), mask=True)
    for pid in ("HCC-201", "HCC-202"):
        out = sitk.ReadImage(str(dst / IMAGES_DIR / pid / "arterial_tumour.nii.gz"))
        assert dice(out, truth) >= 0.9
    assert set(qc["volume_before_ml"].round(3)) == {
        round(
            float(sitk.GetArrayViewFromImage(scan.tumour).sum() * np.prod(scan.tumour.GetSpacing()) / 1000), 3
        ),
        round(
            float(sitk.GetArrayViewFromImage(scan.liver).sum() * np.prod(scan.liver.GetSpacing()) / 1000), 3
        ),
    }
    for png in qc["overlay_png"]:
        assert (dst / QC_DIR / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_registration_is_refused_by_name_and_leaves_the_destination_as_it_was(scan, tmp_path: Path):
    src = _phase_src(tmp_path, scan, broken_delayed=True, patients=("HCC-202",))
    dst = tmp_path / "cohort"
    before = _existing_cohort(dst)
    mapping = _one_phase_mapping(iterations=40)  # a fit that cannot succeed need not run long
    with pytest.raises(CohortValidationError) as err:
        import_cohort(src, dst, mapping, progress=False, overwrite=True)
    (problem,) = [p for p in err.value.problems if isinstance(p, RegistrationFailedError)]
    assert problem.patient_id == "HCC-202" and problem.path.endswith("HCC-202/DEL.nii.gz")
    assert "delayed phase to the portal phase" in problem.message and "min_correlation 0.6" in problem.message
    assert len(err.value.problems) == 1
    _assert_as_it_was(dst, before)
