"""Per-patient file checks of ``hcc-exp check``: volumes and masks of one patient folder.

:func:`check_patient_files` verifies each phase volume and mask (presence, integrity and CT
plausibility through :mod:`hcc_exp.data.volume_checks`, mask on the image grid, binary,
non-empty tumour inside the liver, one physical box shared by the phases) and appends every
problem to the caller's list, each a :class:`~hcc_exp.errors.CohortError` naming the patient
and file. :mod:`hcc_exp.data.validate` runs it for every patient; ``predict`` for one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from hcc_exp.data.contract import IMAGES_DIR, PatientFiles
from hcc_exp.data.io import physical_extent_mm, read_volume, same_grid
from hcc_exp.data.volume_checks import ct_problem, shape_problem, verify_volume_file
from hcc_exp.errors import (
    CohortError,
    DicomSeriesError,
    EmptyMaskError,
    GridMismatchError,
    ImplausibleVolumeError,
    MissingFileError,
    NonBinaryMaskError,
    PhaseGeometryError,
    TumourOutsideLiverError,
    UnreadableVolumeError,
)

TUMOUR_OUTSIDE_LIVER_MAX_FRACTION = 0.5
"""A tumour with more than this fraction of its voxels outside the liver mask is an error."""
PHASE_GEOMETRY_TOLERANCE_VOXELS = 1.0
"""Phases may differ in origin / physical extent by at most this many voxels (of the coarser phase)."""
PHASE_DIRECTION_TOLERANCE = 1e-3
"""Largest allowed difference between two phases' direction cosines."""


# --------------------------------------------------------------------------- images
def _read(path: Path, patient_id: str, errors: list[CohortError], *, phase_image: bool = False) -> sitk.Image | None:
    """Verify, read and check one volume; append its problems to ``errors``.

    Returns:
        The image, or None when it cannot be trusted at all (corrupt, non-finite, not 3D scalar).
        A phase volume that is not plausible CT is reported and still returned, so its grid is checked.
    """
    try:
        verify_volume_file(path, patient_id=patient_id)
        image = read_volume(path, patient_id=patient_id)
    except (UnreadableVolumeError, ImplausibleVolumeError) as exc:
        errors.append(type(exc)(exc.message, patient_id=patient_id, path=exc.path or path))
        return None
    except DicomSeriesError as exc:  # a refused DICOM series (gap, tilt, scout, ...): reported by name
        errors.append(exc)
        return None
    problem = shape_problem(image, patient_id=patient_id, path=path)
    if problem is not None:
        errors.append(problem)
        return None
    if phase_image and (problem := ct_problem(image, patient_id=patient_id, path=path)) is not None:
        errors.append(problem)
    return image


def _mask_array(mask: sitk.Image) -> np.ndarray:
    return sitk.GetArrayViewFromImage(mask)


def _check_binary(mask: sitk.Image, path: Path, patient_id: str, errors: list[CohortError]) -> bool:
    if mask.GetNumberOfComponentsPerPixel() != 1:
        errors.append(
            NonBinaryMaskError(
                f"mask has {mask.GetNumberOfComponentsPerPixel()} components per voxel; expected 1",
                patient_id=patient_id,
                path=path,
            )
        )
        return False
    array = _mask_array(mask)
    other = (array != 0) & (array != 1)
    n_other = int(np.count_nonzero(other))
    if n_other:
        examples = np.unique(array[other])[:5]
        shown = ", ".join(f"{v:g}" for v in examples.astype(float))
        errors.append(
            NonBinaryMaskError(
                f"{n_other} voxel(s) are neither 0 nor 1 (e.g. {shown})", patient_id=patient_id, path=path
            )
        )
        return False
    return True


def _phase_geometry_issues(ref: sitk.Image, other: sitk.Image) -> list[str]:
    """How ``other``'s physical box departs from ``ref``'s beyond the tolerance (empty if it does not)."""
    issues = []
    dir_ref = np.asarray(ref.GetDirection(), dtype=float).reshape(3, 3)
    dir_other = np.asarray(other.GetDirection(), dtype=float).reshape(3, 3)
    if not np.allclose(dir_ref, dir_other, atol=PHASE_DIRECTION_TOLERANCE):
        issues.append("direction differs")
        return issues
    tol = PHASE_GEOMETRY_TOLERANCE_VOXELS * np.maximum(ref.GetSpacing(), other.GetSpacing())
    # Origin offset along the image axes (so the tolerance is in voxels of each axis).
    offset = dir_ref.T @ (
        np.asarray(other.GetOrigin(), dtype=float) - np.asarray(ref.GetOrigin(), dtype=float)
    )
    if np.any(np.abs(offset) > tol):
        issues.append("origin offset along (x, y, z) " + _fmt3(offset) + " mm exceeds " + _fmt3(tol) + " mm")
    extent_diff = physical_extent_mm(other) - physical_extent_mm(ref)
    if np.any(np.abs(extent_diff) > tol):
        issues.append(
            f"physical extent {_fmt3(physical_extent_mm(other))} mm vs {_fmt3(physical_extent_mm(ref))} mm"
        )
    return issues


def _fmt3(values) -> str:
    return "(" + ", ".join(f"{float(v):.3g}" for v in values) + ")"


def check_patient_files(
    cohort_dir: Path, patient_id: str, phases: tuple[str, ...], errors: list[CohortError]
) -> dict[str, tuple[float, float, float]]:
    """Check one patient's files; append problems to ``errors``.

    Returns:
        phase -> voxel spacing (x, y, z) in mm of the volumes that could be read.
    """
    files = PatientFiles.resolve(cohort_dir, patient_id, phases)
    if not files.folder.is_dir():
        errors.append(
            MissingFileError(
                f"patient folder {IMAGES_DIR}/{patient_id}/ does not exist",
                patient_id=patient_id,
                path=files.folder,
            )
        )
        return {}

    images: dict[str, sitk.Image] = {}
    for phase in phases:
        path = files.images[phase]
        if path is None:
            errors.append(
                MissingFileError(
                    f"{phase} image is missing",
                    patient_id=patient_id,
                    path=files.expected_name("image", phase),
                )
            )
            continue
        image = _read(path, patient_id, errors, phase_image=True)
        if image is not None:
            images[phase] = image

    # Each mask file is read once, even when shared by the phases (liver.nii.gz).
    masks: dict[Path, sitk.Image | None] = {}
    binary: dict[Path, bool] = {}

    def mask(path: Path, kind: str) -> sitk.Image | None:
        if path not in masks:
            masks[path] = _read(path, patient_id, errors)
            if masks[path] is not None:
                binary[path] = _check_binary(masks[path], path, patient_id, errors)
                if binary[path] and not np.any(_mask_array(masks[path])):
                    errors.append(
                        EmptyMaskError(f"{kind} mask has no voxel set to 1", patient_id=patient_id, path=path)
                    )
                    binary[path] = False  # nothing further to check on an empty mask
        return masks[path]

    if all(files.liver_masks[phase] is None for phase in phases):
        # One problem, not one per phase: neither the shared mask nor any per-phase mask exists.
        errors.append(
            MissingFileError(
                "liver mask is missing",
                patient_id=patient_id,
                path=files.folder / f"liver.nii.gz (or <phase>_liver.nii.gz for each of {', '.join(phases)})",
            )
        )
    # A shared liver mask off the grid of phases that share one grid is one problem, not one per phase.
    off_grid: dict[tuple[str, Path, str], list[str]] = {}
    for phase in phases:
        tumour_path, liver_path = files.tumour_masks[phase], files.liver_masks[phase]
        tumour = liver = None
        if tumour_path is None:
            errors.append(
                MissingFileError(
                    f"{phase} tumour mask is missing",
                    patient_id=patient_id,
                    path=files.expected_name("tumour", phase),
                )
            )
        else:
            tumour = mask(tumour_path, "tumour")
        if liver_path is None:
            if any(files.liver_masks[p] is not None for p in phases):
                errors.append(
                    MissingFileError(
                        f"{phase} liver mask is missing",
                        patient_id=patient_id,
                        path=files.expected_name("liver", phase),
                    )
                )
        else:
            liver = mask(liver_path, "liver")

        image = images.get(phase)
        on_grid: dict[str, bool] = {}
        for kind, m, m_path in (("tumour", tumour, tumour_path), ("liver", liver, liver_path)):
            if m is None or image is None:
                on_grid[kind] = False
                continue
            issues = same_grid(image, m)
            on_grid[kind] = not issues
            if issues:
                off_grid.setdefault((kind, m_path, "; ".join(issues)), []).append(phase)
        # Without a readable image the two masks can still be compared if they share a grid.
        comparable = (on_grid["tumour"] and on_grid["liver"]) or (
            image is None and tumour is not None and liver is not None and not same_grid(tumour, liver)
        )
        if comparable and binary.get(tumour_path) and binary.get(liver_path):
            tumour_array = _mask_array(tumour) != 0
            outside = np.count_nonzero(tumour_array & (_mask_array(liver) == 0))
            fraction = outside / np.count_nonzero(tumour_array)
            if fraction > TUMOUR_OUTSIDE_LIVER_MAX_FRACTION:
                errors.append(
                    TumourOutsideLiverError(
                        f"{fraction:.0%} of the {phase} tumour voxels lie outside the liver mask "
                        f"(at most {TUMOUR_OUTSIDE_LIVER_MAX_FRACTION:.0%} allowed)",
                        patient_id=patient_id,
                        path=tumour_path,
                    )
                )

    for (kind, m_path, issues), on_phases in off_grid.items():
        errors.append(
            GridMismatchError(
                f"{kind} mask is not on the grid of the {', '.join(on_phases)} image: {issues}",
                patient_id=patient_id,
                path=m_path,
            )
        )

    read_phases = [p for p in phases if p in images]
    if read_phases:
        ref_phase = read_phases[0]
        for phase in read_phases[1:]:
            issues = _phase_geometry_issues(images[ref_phase], images[phase])
            if issues:
                errors.append(
                    PhaseGeometryError(
                        f"{phase} image does not cover the same physical box as {ref_phase}: "
                        + "; ".join(issues),
                        patient_id=patient_id,
                        path=files.images[phase],
                    )
                )
    return {phase: tuple(float(s) for s in img.GetSpacing()) for phase, img in images.items()}
