"""Checking a single patient folder for ``hcc-exp predict``: the named errors of ``hcc-exp check``."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from hcc_exp.data.io import image_from_array, write_nifti
from hcc_exp.errors import GridMismatchError, MissingFileError, UnreadableVolumeError
from hcc_exp.inference.predict import (
    NotComputedTomographyError,
    modality_problem,
    raise_first_problem,
    resolve_patient_folder,
)
from tests.factories import write_tiny_cohort

PHASES = ("arterial", "portal", "delayed")


@pytest.fixture
def patient_dir(tmp_path):
    cohort = write_tiny_cohort(tmp_path / "cohort", n_patients=1)
    # A patient folder outside any cohort layout (not under images/).
    target = tmp_path / "new-patient" / "P000"
    shutil.copytree(cohort / "images" / "P000", target)
    return target


def test_a_valid_folder_resolves_to_its_own_files(patient_dir):
    files, errors = resolve_patient_folder(patient_dir, PHASES)
    assert errors == []
    assert files.patient_id == "P000"
    assert files.images["portal"] == patient_dir / "portal.nii.gz"
    assert files.tumour_masks["delayed"] == patient_dir / "delayed_tumour.nii.gz"
    assert files.liver_masks["arterial"] == patient_dir / "liver.nii.gz"
    assert files.images["portal"].is_file()


def test_missing_phase_is_a_missing_file_error_naming_the_file(patient_dir):
    (patient_dir / "delayed.nii.gz").unlink()
    _, errors = resolve_patient_folder(patient_dir, PHASES)
    assert [type(e) for e in errors] == [MissingFileError]
    assert errors[0].patient_id == "P000"
    assert errors[0].path.startswith(str(patient_dir))
    assert "delayed" in errors[0].path
    with pytest.raises(MissingFileError, match="delayed image is missing"):
        raise_first_problem(errors)
    # A model without the delayed phase does not need it.
    assert resolve_patient_folder(patient_dir, ("arterial", "portal"))[1] == []


def test_mask_off_the_grid_is_a_grid_mismatch_error(patient_dir):
    mask = sitk.ReadImage(str(patient_dir / "portal_tumour.nii.gz"))
    mask.SetOrigin((5.0, 0.0, 0.0))
    write_nifti(mask, patient_dir / "portal_tumour.nii.gz")
    _, errors = resolve_patient_folder(patient_dir, PHASES)
    assert any(isinstance(e, GridMismatchError) and e.path == str(patient_dir / "portal_tumour.nii.gz") for e in errors)


def test_unreadable_and_non_ct_volumes_are_named(patient_dir):
    (patient_dir / "arterial.nii.gz").write_bytes(b"not a nifti")
    unit = np.random.default_rng(0).uniform(0, 1, (12, 32, 32)).astype(np.float32)
    write_nifti(image_from_array(unit, (0.8, 0.8, 2.5)), patient_dir / "portal.nii.gz")
    _, errors = resolve_patient_folder(patient_dir, PHASES)
    kinds = {type(e) for e in errors}
    assert UnreadableVolumeError in kinds
    non_ct = [e for e in errors if isinstance(e, NotComputedTomographyError)]
    assert len(non_ct) == 1 and non_ct[0].path == str(patient_dir / "portal.nii.gz")
    with pytest.raises(UnreadableVolumeError, match="more problem"):
        raise_first_problem(errors)


def test_a_folder_that_does_not_exist(tmp_path):
    with pytest.raises(MissingFileError, match="does not exist"):
        resolve_patient_folder(tmp_path / "nobody", PHASES)


def test_modality_check_accepts_ct_and_refuses_normalised_or_mr_like_volumes(real_ct_dir):
    assert modality_problem(sitk.ReadImage(str(real_ct_dir / "ct.nii.gz"))) is None
    unit = sitk.GetImageFromArray(np.random.default_rng(0).uniform(0, 1, (4, 5, 6)).astype(np.float32))
    assert "not CT Hounsfield units" in modality_problem(unit)
    mr_like = sitk.GetImageFromArray(np.random.default_rng(0).uniform(0, 3000, (4, 5, 6)).astype(np.float32))
    assert modality_problem(mr_like) is not None
