"""DICOM series as a hospital archive stores them: choose one series, refuse what is not a CT volume.

A folder may hold several series (reconstructions, phases, a scout). The mapping chooses one by
``SeriesDescription`` pattern or ``SeriesInstanceUID`` (:class:`SeriesChoice`); without a choice
the folder must hold exactly one axial CT series. The chosen series is then checked from its
slice headers before any pixel is read:

* Modality must be CT, and no slice may be a localizer / scout (``ImageType``);
* one orientation for every slice, no gantry tilt (``GantryDetectorTilt`` or slice positions
  that drift sideways along the stack);
* slice positions along the slice normal evenly spaced: a gap of whole steps is a missing
  slice, a zero step a duplicate, anything else uneven spacing.

Each refusal is a named :class:`~hcc_exp.errors.DicomSeriesError` naming the patient, the series
(by folder, SeriesNumber and description) and a file. With ``resample=True`` (the mapping's
``phases: {<phase>: {folder: ..., resample: true}}``) gantry tilt and uneven spacing are not
refused: the slices are resampled onto a uniform grid (:func:`resample_to_uniform`). A missing
or duplicate slice is refused either way (resampling would invent the missing anatomy). Pixels are read by SimpleITK (rescale slope
/ intercept applied per slice), in the order computed here; HU below :data:`PADDING_BELOW_HU`
(the -2048 / -3024 padding outside the scanner's field of view) become :data:`AIR_HU`, so
padding never counts as tissue nor enters intensity statistics as anything but air.

Header fields stay in memory (:class:`SeriesHeader`): only geometry and pixels leave this
module, except that a refusal names the series by number and description so the user can choose.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from hcc_exp.errors import (
    AmbiguousSeriesError,
    DuplicateSliceError,
    GantryTiltError,
    LocalizerSeriesError,
    MissingSliceError,
    NonCTModalityError,
    SeriesNotFoundError,
    SliceSpacingError,
    UnreadableVolumeError,
)

AIR_HU = -1024
"""What padding becomes: air (the lowest value most scanners store)."""
PADDING_BELOW_HU = -1500
"""HU below this are padding, not tissue: air is -1000 (noise reaches about -1100); scanners pad
outside the field of view with -2048 or -3024 (HU after rescale)."""
SLICE_TOLERANCE_MM = 0.01
"""Allowed deviation of one slice step from the series' step, and sideways drift per slice."""
_LOCALIZER_TYPES = frozenset({"LOCALIZER", "SCOUT", "TOPOGRAM", "SURVIEW", "SCANOGRAM"})
_TAGS = [
    "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "Modality", "ImageType",
    "ImagePositionPatient", "ImageOrientationPatient", "GantryDetectorTilt", "SOPInstanceUID",
]  # fmt: skip


@dataclass(frozen=True)
class SeriesChoice:
    """Which series of a folder is the phase: a ``SeriesDescription`` glob (case-insensitive) or a UID."""

    description: str | None = None
    series_uid: str | None = None

    def matches(self, header: SeriesHeader) -> bool:
        if self.series_uid is not None and header.uid != self.series_uid:
            return False
        if self.description is not None:
            return fnmatch.fnmatchcase(header.description.lower(), self.description.lower())
        return True

    @property
    def given(self) -> bool:
        return self.description is not None or self.series_uid is not None


@dataclass
class _Slice:
    path: Path
    modality: str
    image_type: tuple[str, ...]
    position: np.ndarray | None
    orientation: np.ndarray | None
    tilt_deg: float
    sop_uid: str


@dataclass
class SeriesHeader:
    """One series' slice headers (in memory only; never written or logged beyond :meth:`label`)."""

    uid: str
    number: str
    description: str
    slices: list[_Slice]

    def label(self, folder: Path) -> str:
        text = f"{folder.name}/ #{self.number}" if self.number else f"{folder.name}/"
        if self.description:
            text += f" '{self.description}'"
        return f"{text} ({len(self.slices)} files)"

    @property
    def sop_uids(self) -> list[str]:
        return [s.sop_uid for s in self.slices]


def _text(value: object) -> str:
    return "" if value is None else str(value).strip()


def scan_folder(folder: Path) -> list[SeriesHeader]:
    """Headers of every DICOM series directly in ``folder`` (non-DICOM files are skipped)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    by_uid: dict[str, SeriesHeader] = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_TAGS)
        except (InvalidDicomError, OSError, EOFError, ValueError):
            continue
        if "ImagePositionPatient" not in ds and "Modality" not in ds:
            continue  # not an image (e.g. a DICOMDIR)
        uid = _text(ds.get("SeriesInstanceUID"))  # empty in some anonymised exports: one unnamed series
        ipp, iop = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
        tilt = ds.get("GantryDetectorTilt")
        header = by_uid.setdefault(
            uid, SeriesHeader(uid, _text(ds.get("SeriesNumber")), _text(ds.get("SeriesDescription")), [])
        )
        header.slices.append(
            _Slice(
                path=path,
                modality=_text(ds.get("Modality")).upper(),
                image_type=tuple(_text(v).upper() for v in (ds.get("ImageType") or ())),
                position=None if ipp is None or len(ipp) != 3 else np.asarray(ipp, dtype=float),
                orientation=None if iop is None or len(iop) != 6 else np.asarray(iop, dtype=float),
                tilt_deg=float(tilt) if tilt not in (None, "") else 0.0,
                sop_uid=_text(ds.get("SOPInstanceUID")),
            )
        )
    return list(by_uid.values())


def _is_localizer(s: _Slice) -> bool:
    return bool(_LOCALIZER_TYPES & set(s.image_type))


def choose_series(
    folder: Path, series: list[SeriesHeader], choice: SeriesChoice, patient_id: str | None
) -> SeriesHeader:
    """The one series the mapping means (see the module docstring).

    Raises:
        UnreadableVolumeError: the folder holds no DICOM series.
        SeriesNotFoundError: no series matches the choice.
        AmbiguousSeriesError: several match; the message lists the candidates.
        NonCTModalityError: without a choice, the folder holds no CT series.
    """
    if not series:
        raise UnreadableVolumeError("folder holds no DICOM series", patient_id=patient_id, path=folder)
    if choice.given:
        candidates = [h for h in series if choice.matches(h)]
        if not candidates:
            raise SeriesNotFoundError(
                f"no series matches {_describe_choice(choice)}; the folder holds: {_listing(folder, series)}",
                patient_id=patient_id,
                path=folder,
            )
    else:  # a plain folder: the axial CT series; scouts and SEG objects beside it are not candidates
        candidates = [
            h for h in series if h.slices[0].modality == "CT" and not all(_is_localizer(s) for s in h.slices)
        ]
        if not candidates:
            first = series[0]
            raise NonCTModalityError(
                f"no axial CT series in the folder (modality {first.slices[0].modality or 'unknown'})",
                patient_id=patient_id,
                path=first.slices[0].path,
                series=first.label(folder),
            )
    if len(candidates) > 1:
        how = "match the mapping's choice" if choice.given else "are in the folder"
        raise AmbiguousSeriesError(
            f"{len(candidates)} series {how}: {_listing(folder, candidates)}; choose one in the mapping "
            "(phases: {<phase>: {folder: ..., series_description: '<pattern>'}} or series_uid)",
            patient_id=patient_id,
            path=folder,
        )
    return candidates[0]


def _describe_choice(choice: SeriesChoice) -> str:
    parts = []
    if choice.description is not None:
        parts.append(f"series_description {choice.description!r}")
    if choice.series_uid is not None:
        parts.append("the given series_uid")
    return " and ".join(parts)


def _listing(folder: Path, series: list[SeriesHeader]) -> str:
    return "; ".join(h.label(folder) for h in series)


def check_series(
    folder: Path, header: SeriesHeader, patient_id: str | None, *, allow_resample: bool = False
) -> tuple[list[_Slice], float, bool]:
    """The slices in stack order, the slice step (mm), and whether the stack needs resampling.

    With ``allow_resample`` a gantry tilt (tag or sideways drift) and uneven spacing are
    reported as ``needs_resampling`` instead of refused; the slice step is then the median step.

    Raises:
        NonCTModalityError, LocalizerSeriesError, GantryTiltError, DuplicateSliceError,
        MissingSliceError, SliceSpacingError, UnreadableVolumeError: see the module docstring.
    """
    label = header.label(folder)

    def error(cls, message: str, path: Path):
        return cls(message, patient_id=patient_id, path=path, series=label)

    for s in header.slices:
        if s.modality != "CT":
            raise error(NonCTModalityError, f"modality is {s.modality or 'missing'}, not CT", s.path)
        if _is_localizer(s):
            raise error(LocalizerSeriesError, "a localizer / scout image, not an axial CT slice", s.path)
        if s.position is None or s.orientation is None:
            raise error(
                UnreadableVolumeError, "slice has no ImagePositionPatient / ImageOrientationPatient", s.path
            )
        if abs(s.tilt_deg) > 1e-3 and not allow_resample:  # else the positions say where slices are
            raise error(GantryTiltError, f"gantry tilt {s.tilt_deg:g} degrees: the stack is sheared", s.path)
    if len(header.slices) < 2:
        raise error(UnreadableVolumeError, "a single slice, not a volume", header.slices[0].path)
    first = header.slices[0].orientation
    for s in header.slices[1:]:
        if not np.allclose(s.orientation, first, atol=1e-4):
            raise error(GantryTiltError, "slice orientation differs within the series", s.path)
    normal = np.cross(first[:3], first[3:])
    along = np.array([float(s.position @ normal) for s in header.slices])
    order = np.argsort(along, kind="stable")
    slices = [header.slices[i] for i in order]
    along = along[order]
    steps = np.diff(along)
    needs_resampling = False
    for k, step in enumerate(steps):
        if step < SLICE_TOLERANCE_MM:
            raise error(
                DuplicateSliceError,
                f"two slices at the same position ({along[k]:.2f} mm along the normal): "
                f"{slices[k].path.name} and {slices[k + 1].path.name}",
                slices[k + 1].path,
            )
        sideways = slices[k + 1].position - slices[k].position - step * normal
        if np.linalg.norm(sideways) > SLICE_TOLERANCE_MM and allow_resample:
            needs_resampling = True
        elif np.linalg.norm(sideways) > SLICE_TOLERANCE_MM:
            angle = np.degrees(np.arctan2(np.linalg.norm(sideways), step))
            raise error(
                GantryTiltError,
                f"slice positions drift sideways by {np.linalg.norm(sideways):.3f} mm per slice "
                f"({angle:.2f} degrees of tilt)",
                slices[k + 1].path,
            )
    spacing = float(np.median(steps))
    for k, step in enumerate(steps):
        if abs(step - spacing) <= SLICE_TOLERANCE_MM:
            continue
        whole = round(step / spacing)
        if whole >= 2 and abs(step - whole * spacing) <= SLICE_TOLERANCE_MM * whole:
            raise error(
                MissingSliceError,
                f"{whole - 1} slice(s) missing between {slices[k].path.name} and {slices[k + 1].path.name} "
                f"(gap {step:.3f} mm, slice step {spacing:.3f} mm)",
                slices[k + 1].path,
            )
        if allow_resample:
            needs_resampling = True
            continue
        raise error(
            SliceSpacingError,
            f"uneven slice spacing: {step:.3f} mm between {slices[k].path.name} and "
            f"{slices[k + 1].path.name}, {spacing:.3f} mm elsewhere",
            slices[k + 1].path,
        )
    return slices, spacing, needs_resampling


def read_series(
    folder: Path | str,
    choice: SeriesChoice | None = None,
    *,
    patient_id: str | None = None,
    resample: bool = False,
) -> tuple[sitk.Image, SeriesHeader]:
    """Read the chosen, checked series of ``folder`` as HU (int16 where the values fit).

    ``resample``: a tilted or unevenly spaced series is resampled onto a uniform grid
    (:func:`resample_to_uniform`) instead of refused.

    Returns:
        The volume (pixels and geometry only, no header dictionary) and the in-memory header.

    Raises:
        DicomSeriesError (a subclass per refusal) or UnreadableVolumeError.
    """
    folder = Path(folder)
    header = choose_series(folder, scan_folder(folder), choice or SeriesChoice(), patient_id)
    slices, spacing, needs_resampling = check_series(folder, header, patient_id, allow_resample=resample)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(s.path) for s in slices])
    reader.MetaDataDictionaryArrayUpdateOff()  # only pixel data and geometry leave this function
    reader.LoadPrivateTagsOff()
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        raise UnreadableVolumeError(
            f"cannot read DICOM series: {reason}", patient_id=patient_id, path=folder
        ) from exc
    array = sitk.GetArrayFromImage(image)
    array[array < PADDING_BELOW_HU] = AIR_HU  # padding outside the field of view becomes air
    in_plane = tuple(float(v) for v in image.GetSpacing()[:2])
    del image
    if needs_resampling:
        return resample_to_uniform(array, slices, in_plane, spacing), header
    if array.dtype.kind in "iu" and array.max() <= np.iinfo(np.int16).max:
        array = array.astype(np.int16, copy=False)
    clean = sitk.GetImageFromArray(array)
    orientation = slices[0].orientation
    row, col = orientation[:3], orientation[3:]
    clean.SetDirection(tuple(np.column_stack([row, col, np.cross(row, col)]).ravel()))
    clean.SetOrigin(tuple(float(v) for v in slices[0].position))
    clean.SetSpacing((*in_plane, spacing))
    return clean, header


def resample_to_uniform(
    array: np.ndarray, slices: list[_Slice], in_plane_mm: tuple[float, float], step_mm: float
) -> sitk.Image:
    """A tilted / unevenly spaced stack (slices sorted along the normal) on a uniform grid.

    The slices are parallel planes (one orientation) at positions ``p_k``. In the frame of the
    row, column and normal directions ``(r, c, n)``, slice ``k`` lies at ``t_k = p_k . n`` and
    is shifted in-plane by ``(p_k . r, p_k . c)``; a tilted stack drifts sideways, an uneven one
    has unequal ``t_k`` steps. The output grid has the direction ``(r, c, n)``, the series'
    in-plane spacing, ``step_mm`` along ``n``, slices at ``t_0, t_0 + step, ...`` up to the last
    slice, and covers every slice's in-plane extent (origin at the smallest offsets). A voxel at
    ``(u, v, t)`` is linear in-plane in the two slices around ``t``, then linear between them
    (along the normal, physically). Voxels outside a slice's field of view are air.

    Args:
        array: (slices, rows, columns) HU in the order of ``slices`` (padding already air).
        slices: the checked slices, sorted along the normal.
        in_plane_mm: (column, row) spacing, i.e. SimpleITK's x and y spacing.
        step_mm: the output slice step (the series' median step).

    Returns:
        An int16 image (HU rounded) with the uniform geometry.
    """
    from scipy import ndimage

    orientation = slices[0].orientation
    row, col = orientation[:3], orientation[3:]
    normal = np.cross(row, col)
    positions = np.array([s.position for s in slices])
    along = positions @ normal
    offset_u, offset_v = positions @ row, positions @ col  # mm, in-plane shift of each slice
    dx, dy = in_plane_mm
    n_slices, rows, columns = array.shape
    u0, v0 = float(offset_u.min()), float(offset_v.min())
    size_x = int(np.ceil(round((offset_u.max() - u0) / dx, 6))) + columns
    size_y = int(np.ceil(round((offset_v.max() - v0) / dy, 6))) + rows
    size_z = int(np.floor((along[-1] - along[0]) / step_mm + 1e-6)) + 1

    def on_common_plane(k: int) -> np.ndarray:
        """Slice ``k`` linearly resampled onto the output's in-plane grid (air outside it)."""
        shift = ((offset_v[k] - v0) / dy, (offset_u[k] - u0) / dx)  # (row, column) voxels
        plane = np.full((size_y, size_x), float(AIR_HU), dtype=np.float32)
        plane[:rows, :columns] = array[k]
        if abs(shift[0]) < 1e-9 and abs(shift[1]) < 1e-9:
            return plane
        out = ndimage.shift(plane, shift, order=1, mode="constant", cval=float(AIR_HU))
        return out

    out = np.empty((size_z, size_y, size_x), dtype=np.int16)
    cache: dict[int, np.ndarray] = {}
    for j in range(size_z):
        t = along[0] + j * step_mm
        k = min(int(np.searchsorted(along, t, side="right")) - 1, n_slices - 2)
        w = float(np.clip((t - along[k]) / (along[k + 1] - along[k]), 0.0, 1.0))
        for key in list(cache):
            if key < k:
                del cache[key]  # slices behind the sweep are not needed again
        lower = cache.setdefault(k, on_common_plane(k))
        value = lower if w < 1e-9 else (1 - w) * lower + w * cache.setdefault(k + 1, on_common_plane(k + 1))
        out[j] = np.rint(value).astype(np.int16)
    image = sitk.GetImageFromArray(out)
    image.SetDirection(tuple(np.column_stack([row, col, normal]).ravel()))
    image.SetOrigin(tuple(float(v) for v in u0 * row + v0 * col + along[0] * normal))
    image.SetSpacing((dx, dy, float(step_mm)))
    return image


def replace_padding(image: sitk.Image) -> sitk.Image:
    """``image`` with HU below :data:`PADDING_BELOW_HU` set to :data:`AIR_HU` (the rule for volume files)."""
    array = sitk.GetArrayViewFromImage(image)
    if array.dtype.kind not in "if" or array.size == 0 or array.min() >= PADDING_BELOW_HU:
        return image
    array = array.copy()
    array[array < PADDING_BELOW_HU] = AIR_HU
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    return out
