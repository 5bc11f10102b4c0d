"""Masks as hospitals and archives store them, brought exactly onto their image's grid.

Formats (:func:`read_mask`): a binary file or a label map in any format SimpleITK reads (NIfTI,
NRRD, MHA / MHD; ``labels: [...]`` picks the label map's values that make up the region), or a
DICOM Segmentation object read by highdicom (``segment:`` picks a segment by number, label or
description; a SEG drawn on another series than the phase's is refused).

Grids (:func:`onto_image_grid`): a mask whose voxel centres are the image's voxel centres in
another index order (a flipped axis, another direction matrix: what NIfTI writers do to
DICOM-derived masks) is carried onto the image grid exactly by physical position (nearest
neighbour, no value changes). A DICOM-SEG may cover only the image's slices it has content on.
A mask on a truly different grid is resampled (nearest) only with ``resample: true``; otherwise
it is refused with :class:`~hcc_exp.errors.MaskGridMismatchError` saying how far off it is.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from hcc_exp.data.importing.dicom import SeriesHeader
from hcc_exp.data.importing.mapping import MaskSpec
from hcc_exp.data.io import read_volume, same_grid, strip_metadata
from hcc_exp.errors import (
    MaskGridMismatchError,
    SegmentationReferenceError,
    SegmentNotFoundError,
    UnreadableVolumeError,
)

MASK_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")
"""Extensions tried, in order, after a mask stem."""
_INDEX_TOLERANCE = 1e-3
"""How close (in voxels) a mapped voxel centre must be to a voxel centre to count as the same."""


def find_mask(folder: Path, stem: str) -> Path | None:
    """The mask file named ``stem`` (a file name) or ``stem`` + one of :data:`MASK_SUFFIXES`."""
    if (folder / stem).is_file():
        return folder / stem
    for suffix in MASK_SUFFIXES:
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    return None


def is_dicom_file(path: Path) -> bool:
    """Whether ``path`` is a DICOM Part 10 file (``DICM`` after the 128-byte preamble)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def read_mask(
    path: Path, spec: MaskSpec, *, patient_id: str, series: Sequence[SeriesHeader] = ()
) -> sitk.Image:
    """The mask in ``path`` as stored (its own grid), pixels and geometry only.

    Args:
        path: the mask file.
        spec: the mapping's entry (labels, segment).
        patient_id: named in errors.
        series: the DICOM series the mask may have been drawn on (a SEG must reference one of
            them); empty when the phases are volume files (nothing to check against).

    Returns:
        ``uint8`` 0 / 1 for a label map or a SEG; a binary file keeps its values (``uint8``
        when they are exactly 0 / 1), so that validation can name a non-binary one.

    Raises:
        SegmentNotFoundError: no such segment / none of the labels is in the file.
        SegmentationReferenceError: the SEG was drawn on another series.
        UnreadableVolumeError: the file cannot be read.
    """
    if is_dicom_file(path):
        return _read_segmentation(path, spec, patient_id=patient_id, series=series)
    volume = read_volume(path, patient_id=patient_id)
    if volume.GetNumberOfComponentsPerPixel() != 1:
        raise UnreadableVolumeError(
            f"mask has {volume.GetNumberOfComponentsPerPixel()} components per voxel; expected one label map",
            patient_id=patient_id,
            path=path,
        )
    if spec.labels is None:
        return _clean_binary(volume)
    array = sitk.GetArrayViewFromImage(volume)
    present = np.unique(array)
    if not np.isin(spec.labels, present).any():
        raise SegmentNotFoundError(
            f"none of the labels {spec.labels} is in the label map (its labels: "
            f"{', '.join(str(v) for v in present[present != 0][:20]) or 'none'})",
            patient_id=patient_id,
            path=path,
        )
    out = sitk.GetImageFromArray(np.isin(array, spec.labels).astype(np.uint8))
    out.CopyInformation(volume)
    return out


def _clean_binary(mask: sitk.Image) -> sitk.Image:
    """Pixels and geometry only; ``uint8`` when the values are exactly 0 / 1."""
    mask = strip_metadata(mask)
    if mask.GetPixelID() != sitk.sitkUInt8:
        array = sitk.GetArrayViewFromImage(mask)
        if not np.any((array != 0) & (array != 1)):
            mask = sitk.Cast(mask, sitk.sitkUInt8)
    return mask


def _read_segmentation(
    path: Path, spec: MaskSpec, *, patient_id: str, series: Sequence[SeriesHeader]
) -> sitk.Image:
    import highdicom as hd

    try:
        seg = hd.seg.segread(path)
    except Exception as exc:  # pydicom / highdicom raise many types for a file that is not a SEG
        raise UnreadableVolumeError(
            f"not a readable DICOM Segmentation object: {str(exc).strip()[:200] or type(exc).__name__}",
            patient_id=patient_id,
            path=path,
        ) from exc
    numbers = _segment_numbers(seg, spec, patient_id=patient_id, path=path)
    if series:
        referenced = {series_uid for _, series_uid, _ in seg.get_source_image_uids()}
        for item in getattr(seg, "ReferencedSeriesSequence", []) or []:
            referenced.add(str(item.SeriesInstanceUID))
        if not referenced & {h.uid for h in series}:
            raise SegmentationReferenceError(
                "the DICOM-SEG was drawn on another series than this phase's "
                f"(it references {len(referenced)} series, none of them the phase's)",
                patient_id=patient_id,
                path=path,
            )
    volume = seg.get_volume(segment_numbers=numbers, combine_segments=False)
    array = np.asarray(volume.array)
    if array.ndim == 4:  # (slices, rows, columns, segments): the region is their union
        array = array.any(axis=-1)
    image = sitk.GetImageFromArray((array > 0).astype(np.uint8))
    # highdicom's affine maps the array index (slice, row, column) to patient coordinates (LPS, mm),
    # which is ITK's physical space; ITK's index order is (column, row, slice).
    affine = np.asarray(volume.affine, dtype=float)
    columns = affine[:3, [2, 1, 0]]
    spacing = np.linalg.norm(columns, axis=0)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetDirection(tuple(float(v) for v in (columns / spacing).ravel()))
    image.SetOrigin(tuple(float(v) for v in affine[:3, 3]))
    return image


def _segment_numbers(seg, spec: MaskSpec, *, patient_id: str, path: Path) -> list[int]:
    segments = {int(item.SegmentNumber): item for item in seg.SegmentSequence}
    names = ", ".join(f"{n} '{item.SegmentLabel}'" for n, item in segments.items())
    if spec.labels is not None:
        wanted = [n for n in spec.labels if n in segments]
        if not wanted:
            raise SegmentNotFoundError(
                f"segment number(s) {spec.labels} not in the DICOM-SEG (segments: {names})",
                patient_id=patient_id,
                path=path,
            )
        return wanted
    if spec.segment is None:
        if len(segments) == 1:
            return list(segments)
        raise SegmentNotFoundError(
            f"the DICOM-SEG holds {len(segments)} segments ({names}): name one with segment:",
            patient_id=patient_id,
            path=path,
        )
    if isinstance(spec.segment, int):
        if spec.segment in segments:
            return [spec.segment]
    else:
        wanted_text = spec.segment.strip().lower()
        for number, item in segments.items():
            texts = {
                str(item.get("SegmentLabel", "")).strip().lower(),
                str(item.get("SegmentDescription", "")).strip().lower(),
            }
            if wanted_text in texts:
                return [number]
    raise SegmentNotFoundError(
        f"segment {spec.segment!r} not in the DICOM-SEG (segments: {names})", patient_id=patient_id, path=path
    )


# --------------------------------------------------------------------------- grids
def _index_to_physical(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    return direction * np.asarray(image.GetSpacing(), dtype=float), np.asarray(image.GetOrigin(), dtype=float)


def _corners(image: sitk.Image) -> np.ndarray:
    """Physical positions (mm) of the 8 corner voxel centres, shape (8, 3)."""
    matrix, origin = _index_to_physical(image)
    last = np.asarray(image.GetSize(), dtype=float) - 1
    return np.array([origin + matrix @ (np.array(c) * last) for c in itertools.product((0, 1), repeat=3)])


def same_voxel_centres(image: sitk.Image, mask: sitk.Image, *, allow_subset: bool = False) -> bool:
    """Whether every mask voxel centre is an image voxel centre, and (unless ``allow_subset``) vice versa.

    The map from image index to mask index is affine, ``T i + t``; the centres coincide when ``T``
    is a signed permutation and ``t`` integral (both within :data:`_INDEX_TOLERANCE`).
    """
    a_img, o_img = _index_to_physical(image)
    a_msk, o_msk = _index_to_physical(mask)
    transform = np.linalg.solve(a_msk, a_img)
    offset = np.linalg.solve(a_msk, o_img - o_msk)
    rounded = np.round(transform)
    if not np.allclose(transform, rounded, atol=_INDEX_TOLERANCE):
        return False
    if not (np.abs(rounded).sum(axis=0) == 1).all() or not (np.abs(rounded).sum(axis=1) == 1).all():
        return False
    if not np.allclose(offset, np.round(offset), atol=_INDEX_TOLERANCE):
        return False
    image_size = np.abs(rounded) @ np.asarray(image.GetSize(), dtype=float)
    if allow_subset:
        return True
    if not np.allclose(image_size, mask.GetSize()):
        return False
    last = np.asarray(image.GetSize(), dtype=float) - 1
    mapped = np.array([rounded @ (np.array(c) * last) + offset for c in itertools.product((0, 1), repeat=3)])
    return bool((mapped > -0.5).all() and (mapped < np.asarray(mask.GetSize()) - 0.5).all())


def grid_offset_mm(image: sitk.Image, mask: sitk.Image) -> float:
    """How far apart two grids are: the largest distance (mm) from an image corner to the nearest mask corner."""
    img, msk = _corners(image), _corners(mask)
    return float(np.max(np.min(np.linalg.norm(img[:, None, :] - msk[None, :, :], axis=-1), axis=1)))


def _nearest_onto(mask: sitk.Image, image: sitk.Image) -> sitk.Image:
    out = sitk.Resample(mask, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, mask.GetPixelID())
    out.CopyInformation(image)
    return out


def onto_image_grid(
    mask: sitk.Image,
    image: sitk.Image,
    *,
    resample: bool,
    patient_id: str,
    path: Path | str,
    allow_subset: bool = False,
) -> sitk.Image:
    """``mask`` on ``image``'s grid (see the module docstring).

    Args:
        mask, image: the mask as read and its phase's CT.
        resample: the mapping allows resampling a mask on another grid (nearest neighbour).
        patient_id, path: named in the error.
        allow_subset: the mask's voxel centres may be a subset of the image's (a DICOM-SEG).

    Raises:
        MaskGridMismatchError: another grid and ``resample`` is false.
    """
    issues = same_grid(image, mask)
    if not issues:
        out = sitk.Image(mask)
        out.CopyInformation(image)  # drop sub-tolerance differences in the stored geometry
        return out
    if same_voxel_centres(image, mask, allow_subset=allow_subset) or resample:
        return _nearest_onto(mask, image)
    raise MaskGridMismatchError(
        f"mask is on another grid than its image ({'; '.join(issues)}): its corners lie up to "
        f"{grid_offset_mm(image, mask):.2f} mm from the image's; set resample: true in the mapping "
        "to resample it (nearest neighbour)",
        patient_id=patient_id,
        path=path,
    )
