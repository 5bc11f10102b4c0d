"""A hospital export built from a real scan: phases by known rigid motion, a simulated lesion, DICOM / SEG.

Real: the CT of HCC_048 (HCC-TACE-Seg, portal-venous, 512 x 512 x 89). Simulated (tag as such in
every test): the other phases (the real scan moved rigidly, the liver's enhancement shifted), the
liver mask (the scan's soft tissue inside an ellipsoid placed on the real liver, not a delineation),
the lesion (a hypodense sphere inserted inside that liver), the DICOM headers written here.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.uid import generate_uid
from scipy import ndimage

from hcc_exp.data.io import read_volume

LIVER_CENTRE_VOX = (50, 230, 170)
"""(slice, row, column) of HCC_048's series near the middle of the real liver (right lobe)."""
LIVER_RADII_MM = (30.0, 45.0, 40.0)
"""(z, y, x) half-axes of the ellipsoid the simulated liver mask is cut from."""


def downsampled(folder: Path, in_plane: int = 4, slices: int = 2) -> sitk.Image:
    """The real series read by the importer's reader, averaged over blocks of voxels (int16 HU)."""
    return sitk.BinShrink(read_volume(folder), [in_plane, in_plane, slices])


@dataclass(frozen=True)
class Phantom:
    """A portal phase with its (simulated) liver and lesion, all on one grid."""

    portal: sitk.Image
    liver: sitk.Image
    tumour: sitk.Image


def _like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


def phantom(
    real: sitk.Image, full_size_zyx=(89, 512, 512), lesion_offset_mm=(0.0, 0.0, 0.0), radius_mm=12.0
) -> Phantom:
    """Cut the simulated liver and insert the simulated lesion into ``real`` (a downsampled HCC_048)."""
    array = sitk.GetArrayFromImage(real).astype(np.float32)
    spacing_zyx = np.asarray(real.GetSpacing())[::-1]
    scale = np.asarray(real.GetSize())[::-1] / np.asarray(full_size_zyx)
    centre = np.asarray(LIVER_CENTRE_VOX) * scale
    zz, yy, xx = np.meshgrid(*(np.arange(n) for n in array.shape), indexing="ij")
    offsets = [(g - c) * s for g, c, s in zip((zz, yy, xx), centre, spacing_zyx, strict=True)]
    ellipsoid = sum((o / r) ** 2 for o, r in zip(offsets, LIVER_RADII_MM, strict=True)) <= 1
    soft = ndimage.median_filter(array, size=3)
    liver = ellipsoid & (soft > 60) & (soft < 180)  # the real liver's parenchyma (about 100 HU) in the box
    liver = ndimage.binary_fill_holes(ndimage.binary_opening(liver, iterations=1))
    labels, _ = ndimage.label(liver)
    liver = labels == np.bincount(labels.ravel())[1:].argmax() + 1
    lesion_centre = [o - d for o, d in zip(offsets, np.asarray(lesion_offset_mm)[::-1], strict=True)]
    tumour = (sum(o**2 for o in lesion_centre) <= radius_mm**2) & liver
    array[tumour] -= 45.0  # hypodense in the portal phase, as HCC washes out
    return Phantom(
        portal=_like(array.round().astype(np.int16), real),
        liver=_like(liver.astype(np.uint8), real),
        tumour=_like(tumour.astype(np.uint8), real),
    )


def rigid(
    image: sitk.Image, angle_deg: float, shift_mm: tuple[float, float, float], axis=(0.0, 0.0, 1.0)
) -> sitk.Euler3DTransform:
    """A rigid motion about ``image``'s centre: ``angle_deg`` about ``axis`` then ``shift_mm``."""
    transform = sitk.VersorRigid3DTransform()
    transform.SetCenter(image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()]))
    transform.SetRotation(tuple(float(a) for a in axis), float(np.radians(angle_deg)))
    transform.SetTranslation(tuple(float(s) for s in shift_mm))
    euler = sitk.Euler3DTransform()
    euler.SetCenter(transform.GetCenter())
    euler.SetMatrix(transform.GetMatrix())
    euler.SetTranslation(transform.GetTranslation())
    return euler


def moved(image: sitk.Image, transform: sitk.Transform, *, mask: bool = False) -> sitk.Image:
    """``image`` seen through ``transform`` (output point p shows input point T(p)), on its own grid."""
    if mask:
        return sitk.Resample(image, image, transform, sitk.sitkNearestNeighbor, 0, image.GetPixelID())
    return sitk.Resample(image, image, transform, sitk.sitkLinear, -1024, image.GetPixelID())


def dice(a: sitk.Image, b: sitk.Image) -> float:
    x, y = sitk.GetArrayViewFromImage(a) > 0, sitk.GetArrayViewFromImage(b) > 0
    return float(2 * (x & y).sum() / (x.sum() + y.sum()))


# --------------------------------------------------------------------------- a DICOM export
def write_dicom_series(
    image: sitk.Image,
    folder: Path,
    template: Path,
    *,
    patient_id: str,
    description: str,
    number: int,
    prefix: str = "",
) -> list[pydicom.Dataset]:
    """Write ``image`` (HU) as a CT series: stored = HU + 1024, intercept -1024; headers from a real slice."""
    folder.mkdir(parents=True, exist_ok=True)
    base = pydicom.dcmread(template)
    study_uid, series_uid, frame_uid = base.StudyInstanceUID, generate_uid(), base.FrameOfReferenceUID
    array = sitk.GetArrayFromImage(image).astype(np.int32) + 1024
    spacing, origin = image.GetSpacing(), np.asarray(image.GetOrigin())
    written = []
    for k in range(array.shape[0]):
        ds = copy.deepcopy(base)
        ds.PatientID = patient_id
        ds.PatientName = patient_id
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesDescription, ds.SeriesNumber, ds.InstanceNumber = description, number, k + 1
        position = origin + np.asarray(image.GetDirection()).reshape(3, 3) @ np.array(
            [0.0, 0.0, k * spacing[2]]
        )
        ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation = f"{position[2]:.4f}"
        ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]
        ds.SliceThickness = f"{spacing[2]:.4f}"
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        if "PixelPaddingValue" in ds:
            del ds.PixelPaddingValue
        ds.set_pixel_data(array[k].astype(np.int16), "MONOCHROME2", 16)
        ds.save_as(folder / f"{prefix}IM{k:04d}.dcm", enforce_file_format=True)
        written.append(ds)
    return written


def write_segmentation(source: list[pydicom.Dataset], regions: dict[str, sitk.Image], path: Path) -> None:
    """A DICOM-SEG over ``source`` (one frame per slice) with one binary segment per region (highdicom)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    kinds = {
        "Liver": (codes.SCT.Organ, codes.SCT.Liver),
        "Mass": (codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Mass),
    }
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=k + 1,
            segment_label=label,
            segmented_property_category=kinds[label][0],
            segmented_property_type=kinds[label][1],
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for k, label in enumerate(regions)
    ]
    pixels = np.stack([sitk.GetArrayFromImage(m) for m in regions.values()], axis=-1).astype(np.uint8)
    seg = hd.seg.Segmentation(
        source_images=source,
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=300,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="hcc-exp tests",
        manufacturer_model_name="simulated",
        software_versions="0",
        device_serial_number="0",
    )
    seg.save_as(path)
