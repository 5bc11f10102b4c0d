"""Preprocessing of one patient: its phases onto one grid, window, ROI masks and crop (nnU-Net's ``preprocessor``).

Per patient and phase: read the CT and its tumour and liver masks, resample to
``PreprocessConfig.spacing_mm`` with SimpleITK (the portal phase defines the grid;
the other phases are resampled onto that same grid so that voxels correspond across
phases), clip at the 2.5 / 97.5 percentiles and min-max scale to [0, 1], derive the
peritumoral band (``margin_mm`` wide, centred on the tumour boundary, clipped to the
liver), and crop a fixed box centred on the portal tumour centroid. Only the box
(and, for the masks, the tumour around it) is ever resampled, which gives the same
voxels as resampling the whole scan and cropping, at a fraction of the cost (see
:func:`preprocess_patient`).

:func:`preprocess_patient` reads the patient's files and returns arrays;
:func:`preprocess_and_save` (what a worker process runs) also writes them to the
cache layout. Array axes are (z, y, x); SimpleITK geometry is (x, y, z).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from hcc_exp.config import PreprocessConfig
from hcc_exp.data.cache import IMAGE_NPY, MASKS_NPY
from hcc_exp.data.contract import PatientFiles
from hcc_exp.data.io import read_volume, same_grid
from hcc_exp.data.preprocessing.cropping import (
    Box,
    crop_start,
    intersect_boxes,
    mask_centroid_vox,
    union_boxes,
)
from hcc_exp.data.preprocessing.intensity import apply_window, clip_levels
from hcc_exp.data.preprocessing.regions import by_region, margin_band_array
from hcc_exp.data.preprocessing.resampling import (
    Grid,
    antialias_array,
    antialias_sigmas_mm,
    resample_onto,
    resample_to_grid,
    spacing_grid,
)
from hcc_exp.errors import CohortError, HccExpError, PatientPreprocessError
from hcc_exp.vocabulary import PHASES, REGIONS

REFERENCE_PHASE = "portal"
"""The phase whose resampled grid every phase is resampled onto (and whose tumour centres the crop)."""


def preprocess_patient(
    files: PatientFiles,
    cfg: PreprocessConfig,
    phases: Sequence[str] = PHASES,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Preprocess one patient's phases into the cache arrays.

    The reference grid is the portal CT resampled to ``cfg.spacing_mm`` (the first
    listed phase when portal is not among ``phases``); every phase's CT and masks
    are resampled onto it in physical space, so voxels correspond across phases.
    One box of ``cfg.crop_size_vox`` centred on the reference tumour's centroid is
    kept for every phase.

    Only the parts of the reference grid that matter are resampled: the box, and
    for the masks the box plus each phase's tumour. Every voxel equals what
    resampling the whole grid and then cropping would give (a sub-grid has the
    same voxel centres), at a cost that grows with the box, not with the scan's
    field of view. With ``cfg.antialias`` each phase's CT is first low-passed along
    the axes it is downsampled on (:func:`antialias`), so a target voxel averages the
    source noise instead of sampling it. The clipping percentiles are taken over the
    phase's own (anti-aliased) voxels (inside its liver mask when
    ``cfg.clip_within_liver``) before resampling, so they do not depend on the
    partial-volume voxels that interpolation creates at the liver's edge.

    Memory: one phase at a time. Its CT is read when it is processed (the reference phase
    first, for the grid) and dropped after; only a liver mask shared by the phases is kept.
    With anti-aliasing the peak is two float32 copies of one phase (filtered in place, the
    int16 voxels freed first): about 1.3 GB above the interpreter for a 512 x 512 x 400 patient
    (``benchmarks/bench_real_preprocess.py``).

    Args:
        files: the patient's resolved files.
        cfg: the preprocessing recipe.
        phases: phases to read, in channel order.

    Returns:
        ``image`` (P, D, H, W) of ``cfg.dtype`` in [0, 1] (0 where the box leaves the
        reference grid), ``masks`` (P, R, D, H, W) uint8 in {0, 1} with R =
        ``REGIONS`` (liver, margin, tumour), and an ``info`` dict of JSON types
        (source geometry, centroid, crop start, voxel counts, clip levels).

    Raises:
        PatientPreprocessError: a file is missing or unreadable, the reference
            tumour is empty, or the liver is empty while clipping inside it.
    """
    pid = files.patient_id
    phases = tuple(phases)
    if not phases:
        raise PatientPreprocessError(pid, "no phase to preprocess")
    reference_phase = REFERENCE_PHASE if REFERENCE_PHASE in phases else phases[0]
    tables = {"image": files.images, "tumour": files.tumour_masks, "liver": files.liver_masks}
    for phase in phases:  # every file named first: a missing one fails before any work
        for kind, table in tables.items():
            if table.get(phase) is None:
                raise PatientPreprocessError(
                    pid, f"missing {kind} for phase {phase}: expected {files.expected_name(kind, phase)}"
                )
    shared: dict[Path, sitk.Image] = {}  # a liver mask shared by the phases is read once

    def load(kind: str, phase: str) -> sitk.Image:
        # One phase in memory at a time (a 512 x 512 x 400 CT is 200 MB as int16, 800 MB as
        # float32): CTs and per-phase masks are read when their phase is processed, then dropped.
        path = tables[kind][phase]
        if path in shared:
            return shared[path]
        try:
            volume = read_volume(path, patient_id=pid)
        except CohortError as exc:
            raise PatientPreprocessError(pid, f"{exc.message}: {path}") from exc
        if kind == "liver" and sum(tables["liver"][q] == path for q in phases) > 1:
            shared[path] = volume
        return volume

    reference_ct = load("image", reference_phase)
    grid = spacing_grid(reference_ct, cfg.spacing_mm)
    spacing_zyx = tuple(float(s) for s in cfg.spacing_mm)
    whole = (np.zeros(3, dtype=int), np.asarray(grid.size_zyx))

    # Tumour centroid on the reference grid, from the region the tumour can occupy.
    ref_tumour = load("tumour", reference_phase)
    ref_region = _mask_reach(ref_tumour, grid)
    if ref_region is None:
        raise PatientPreprocessError(pid, f"the {reference_phase} tumour mask is empty or outside its scan")
    ref_mask = _mask_on_grid(ref_tumour, grid, ref_region)
    if not ref_mask.any():
        raise PatientPreprocessError(pid, f"the {reference_phase} tumour mask is empty on the resampled grid")
    centroid = mask_centroid_vox(ref_mask) + ref_region[0]
    del ref_mask
    start = np.asarray(crop_start(centroid, cfg.crop_size_vox))
    box = (start, start + np.asarray(cfg.crop_size_vox))
    inner = intersect_boxes(box, whole)  # the part of the box inside the reference grid
    if inner is None:  # cannot happen: the centroid lies inside the grid
        raise PatientPreprocessError(pid, "the crop box misses the reference grid")
    into_box = tuple(slice(int(a - s), int(b - s)) for a, b, s in zip(*inner, start, strict=True))

    size = tuple(int(n) for n in cfg.crop_size_vox)
    image = np.zeros((len(phases), *size), dtype=np.float32)
    masks = np.zeros((len(phases), len(REGIONS), *size), dtype=np.uint8)
    source: dict[str, Any] = {}
    levels: dict[str, list[float]] = {}
    counts: dict[str, dict[str, Any]] = {}
    preloaded = {reference_phase: (reference_ct, ref_tumour)}
    del reference_ct, ref_tumour
    # The reference phase first (its CT is already read), the others after; channels keep ``phases``' order.
    for phase in sorted(phases, key=lambda q: q != reference_phase):
        p = phases.index(phase)
        ct, tumour_img = preloaded.pop(phase, None) or (load("image", phase), load("tumour", phase))
        liver_img = load("liver", phase)

        # Masks: the box plus the whole tumour with a background rim, which is all the
        # margin depends on (margin_band_array extends a background edge as background).
        work = union_boxes(inner, _mask_reach(tumour_img, grid))
        tumour = _mask_on_grid(tumour_img, grid, work)
        liver = _mask_on_grid(liver_img, grid, work)
        del tumour_img
        margin = margin_band_array(tumour, spacing_zyx, cfg.margin_mm) & liver
        in_work = tuple(slice(int(a - w), int(b - w)) for a, b, w in zip(*inner, work[0], strict=True))
        for r, region_mask in enumerate(by_region(liver=liver, margin=margin, tumour=tumour)):
            masks[(p, r, *into_box)] = region_mask[in_work]
        full_tumour = int(tumour.sum())
        del tumour, liver, margin

        # CT: the box only; clip levels from the phase's own (anti-aliased) voxels.
        source[phase] = {
            "size_zyx": list(reversed(ct.GetSize())),
            "spacing_zyx_mm": [round(float(s), 6) for s in reversed(ct.GetSpacing())],
        }
        if cfg.antialias:
            held = [ct]
            del ct  # _antialiased takes the only reference and frees the int16 voxels early
            ct = _antialiased(held, tuple(reversed(spacing_zyx)))
        native = sitk.GetArrayViewFromImage(ct)
        reference_mask = None
        if cfg.clip_within_liver:
            reference_mask = _liver_on_ct_grid(liver_img, ct)
            if not reference_mask.any():
                raise PatientPreprocessError(pid, f"liver mask of phase {phase} is empty")
        del liver_img
        low, high = clip_levels(native, *cfg.clip_percentiles, reference_mask=reference_mask)
        del reference_mask
        inner_grid = grid.region(*inner)
        ct_box = resample_to_grid(ct, inner_grid, cfg.image_interpolator, default_value=float(native.min()))
        del native, ct
        image[(p, *into_box)] = apply_window(sitk.GetArrayFromImage(ct_box), low, high)

        counts[phase] = {region: int(masks[p, r].sum()) for r, region in enumerate(REGIONS)}
        counts[phase]["tumour_fraction_in_crop"] = (
            round(counts[phase]["tumour"] / full_tumour, 4) if full_tumour else None
        )
        levels[phase] = [round(float(low), 3), round(float(high), 3)]

    source = {phase: source[phase] for phase in phases}  # JSON key order: the channel order
    counts = {phase: counts[phase] for phase in phases}
    levels = {phase: levels[phase] for phase in phases}
    info = {
        "patient_id": pid,
        "reference_phase": reference_phase,
        "grid_size_zyx": list(grid.size_zyx),
        "source": source,
        "tumour_centroid_zyx_vox": [round(float(c), 3) for c in centroid],
        "crop_start_zyx": [int(v) for v in start],
        "voxels": counts,
        "clip_levels": levels,
    }
    return image.astype(cfg.dtype), masks, info


def _mask_reach(mask: sitk.Image, grid: Grid) -> Box | None:
    """Indices of ``grid`` that nearest-neighbour resampling of ``mask`` can set (None when empty).

    A grid voxel takes the value of the source voxel nearest to it, and the source
    is extended by one edge voxel before resampling, so foreground can only land
    within 1.5 source voxels of the foreground's bounding box.
    """
    array = sitk.GetArrayViewFromImage(mask)
    hits = [np.flatnonzero(np.any(array, axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    if hits[0].size == 0:
        return None
    lo = [h[0] - 1.5 for h in hits]  # (z, y, x) source indices
    hi = [h[-1] + 1.5 for h in hits]
    corners_xyz = np.array([[x, y, z] for z in (lo[0], hi[0]) for y in (lo[1], hi[1]) for x in (lo[2], hi[2])])
    physical = np.array([mask.TransformContinuousIndexToPhysicalPoint(tuple(map(float, c))) for c in corners_xyz])
    index = grid.continuous_index_zyx(physical)
    start = np.floor(index.min(axis=0)).astype(int) - 1
    stop = np.ceil(index.max(axis=0)).astype(int) + 2
    return intersect_boxes((start, stop), (np.zeros(3, dtype=int), np.asarray(grid.size_zyx)))


def _mask_on_grid(mask: sitk.Image, grid: Grid, region: Box) -> np.ndarray:
    """Boolean (z, y, x) array of ``mask`` resampled (nearest neighbour) onto ``grid``'s ``region``."""
    resampled = resample_to_grid(mask, grid.region(*region), "nearest", 0)
    return sitk.GetArrayFromImage(resampled) > 0


def _antialiased(held: list[sitk.Image], target_spacing_xyz_mm: tuple[float, ...]) -> sitk.Image:
    """:func:`~hcc_exp.data.preprocessing.resampling.antialias` of the CT in ``held`` (its only
    reference, taken out): the input's voxels are freed before the filtered copy is made and the
    filter runs in place, so two float32 volumes are the peak (not two plus the input)."""
    ct = held.pop()
    if not any(antialias_sigmas_mm(ct.GetSpacing(), target_spacing_xyz_mm)):
        return ct
    array = sitk.GetArrayViewFromImage(ct).astype(np.float32)
    geometry = sitk.Image([1] * ct.GetDimension(), sitk.sitkUInt8)
    geometry.SetOrigin(ct.GetOrigin())
    geometry.SetSpacing(ct.GetSpacing())
    geometry.SetDirection(ct.GetDirection())
    spacing = ct.GetSpacing()
    del ct
    antialias_array(array, spacing, target_spacing_xyz_mm)
    out = sitk.GetImageFromArray(array)
    del array
    out.SetOrigin(geometry.GetOrigin())
    out.SetSpacing(geometry.GetSpacing())
    out.SetDirection(geometry.GetDirection())
    return out


def _liver_on_ct_grid(liver: sitk.Image, ct: sitk.Image) -> np.ndarray:
    if same_grid(ct, liver):
        liver = resample_onto(liver, ct, "nearest", 0)
    return sitk.GetArrayFromImage(liver) > 0


def preprocess_and_save(
    cohort_dir: Path,
    patient_id: str,
    out_dir: Path,
    cfg: PreprocessConfig,
    phases: tuple[str, ...],
) -> tuple[dict[str, Any], float]:
    """Preprocess one patient and write its ``image.npy`` / ``masks.npy`` under ``out_dir/<patient_id>``.

    Returns:
        The patient's ``info`` (see :func:`preprocess_patient`) and the seconds it took
        (kept apart: timings never enter the cache, whose bytes depend only on inputs and recipe).
    """
    started = time.perf_counter()
    try:
        files = PatientFiles.resolve(cohort_dir, patient_id, phases)
        image, masks, info = preprocess_patient(files, cfg, phases)
        folder = out_dir / patient_id
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / IMAGE_NPY, image)
        np.save(folder / MASKS_NPY, masks)
        return info, time.perf_counter() - started
    except PatientPreprocessError:
        raise
    except CohortError as exc:
        where = f": {exc.path}" if exc.path else ""
        raise PatientPreprocessError(patient_id, f"{exc.message}{where}") from exc
    except HccExpError as exc:
        raise PatientPreprocessError(patient_id, str(exc)) from exc
    except Exception as exc:  # any failure must name the patient
        raise PatientPreprocessError(patient_id, f"{type(exc).__name__}: {exc}") from exc
