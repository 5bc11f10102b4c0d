"""Masks drawn on one phase, carried to the other phases by registration (SimpleITK).

Each other phase (fixed) is registered to the annotated phase (moving): both are resampled to
an isotropic working spacing, then a rigid (Euler) transform is fitted by Mattes mutual
information over a multi-resolution pyramid, optionally followed by a B-spline stage
(:class:`~hcc_exp.data.importing.mapping.RegistrationSettings`). The fitted transform maps a
point of the fixed phase to the annotated phase, so the mask is carried across by resampling it
(nearest neighbour) onto the fixed phase's grid.

Quality: the intensity correlation of the fixed phase and the registered annotated phase inside
the body (HU > -500 in the fixed phase, clipped to [-1024, 1500]) must reach
``min_correlation``, otherwise :class:`~hcc_exp.errors.RegistrationFailedError`. Every
propagated mask gets a QC record (:class:`PropagationQC`) and a three-plane PNG
(:func:`write_overlay_png`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from hcc_exp.data.importing.mapping import RegistrationSettings

BODY_HU = -500.0
"""Voxels of the fixed phase above this HU are "inside the body" for the quality check."""


@dataclass(frozen=True)
class Registration:
    """A fitted transform (fixed-phase point -> annotated-phase point) and its quality.

    Attributes:
        transform: the rigid (or rigid + B-spline) transform.
        rigid: its rigid part.
        correlation: Pearson correlation inside the body after registration (unitless).
        metric: the final Mattes mutual information (negative; lower is better).
    """

    transform: sitk.Transform
    rigid: sitk.Euler3DTransform
    correlation: float
    metric: float

    @property
    def rotation_deg(self) -> float:
        """The rigid part's rotation angle (degrees)."""
        matrix = np.asarray(self.rigid.GetMatrix()).reshape(3, 3)
        return float(np.degrees(np.arccos(np.clip((np.trace(matrix) - 1) / 2, -1, 1))))

    def displacement_mm(self, point_xyz_mm) -> np.ndarray:
        """Where the rigid part moves ``point`` (mm, x y z): ``T(p) - p``."""
        point = tuple(float(v) for v in point_xyz_mm)
        return np.asarray(self.rigid.TransformPoint(point)) - np.asarray(point)


def _working(image: sitk.Image, spacing_mm: float) -> sitk.Image:
    """``image`` as float32 on an isotropic ``spacing_mm`` grid over the same extent, low-passed first."""
    image = sitk.Cast(image, sitk.sitkFloat32)
    spacing = np.asarray(image.GetSpacing())
    sigmas = [float(max(0.0, (spacing_mm - s) / 2.0)) for s in spacing]
    if any(s > 0 for s in sigmas):
        image = sitk.DiscreteGaussian(image, [v * v for v in sigmas], 32, 0.01, True)
    size = [max(2, int(round(n * s / spacing_mm))) for n, s in zip(image.GetSize(), spacing, strict=True)]
    return sitk.Resample(
        image, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(), (spacing_mm,) * 3,
        image.GetDirection(), -1024.0, sitk.sitkFloat32,
    )  # fmt: skip


def _method(settings: RegistrationSettings, levels: int | None = None) -> sitk.ImageRegistrationMethod:
    """Mattes MI with the settings' pyramid, or its finest ``levels`` levels."""
    first = 0 if levels is None else max(0, len(settings.shrink_factors) - levels)
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(settings.sampling, settings.seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetShrinkFactorsPerLevel(settings.shrink_factors[first:])
    method.SetSmoothingSigmasPerLevel(settings.smoothing_sigmas_mm[first:])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return method


def correlation_in_body(fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform) -> float:
    """Pearson correlation of ``fixed`` and ``moving`` resampled through ``transform``, inside the body."""
    warped = sitk.Resample(moving, fixed, transform, sitk.sitkLinear, -1024.0, sitk.sitkFloat32)
    a = np.clip(sitk.GetArrayViewFromImage(fixed), -1024, 1500)
    b = np.clip(sitk.GetArrayViewFromImage(warped), -1024, 1500)
    body = a > BODY_HU
    if body.sum() < 100:
        return float("nan")
    return float(np.corrcoef(a[body], b[body])[0, 1])


def register(fixed: sitk.Image, moving: sitk.Image, settings: RegistrationSettings) -> Registration:
    """Register ``moving`` (the annotated phase) to ``fixed`` (see the module docstring)."""
    fixed_w = _working(fixed, settings.working_spacing_mm)
    moving_w = _working(moving, settings.working_spacing_mm)
    initial = sitk.CenteredTransformInitializer(
        fixed_w, moving_w, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.GEOMETRY
    )
    method = _method(settings)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=1e-3, numberOfIterations=settings.iterations, relaxationFactor=0.5
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetInitialTransform(initial, inPlace=False)
    fitted = method.Execute(fixed_w, moving_w)
    rigid = sitk.Euler3DTransform(sitk.CompositeTransform(fitted).GetNthTransform(0))
    transform: sitk.Transform = rigid
    metric = float(method.GetMetricValue())
    if settings.bspline:
        mesh = [
            max(1, int(round(n * s / settings.bspline_mesh_mm)))
            for n, s in zip(fixed_w.GetSize(), fixed_w.GetSpacing(), strict=True)
        ]
        bspline = sitk.BSplineTransformInitializer(fixed_w, mesh)
        method = _method(settings, levels=settings.bspline_levels)
        method.SetOptimizerAsLBFGSB(
            gradientConvergenceTolerance=1e-5,
            numberOfIterations=settings.bspline_iterations,
            maximumNumberOfFunctionEvaluations=settings.bspline_evaluations,
        )
        method.SetMovingInitialTransform(rigid)
        method.SetInitialTransform(bspline, inPlace=True)
        method.Execute(fixed_w, moving_w)
        metric = float(method.GetMetricValue())
        transform = sitk.CompositeTransform([rigid, bspline])  # bspline applied first, then rigid
    return Registration(transform, rigid, correlation_in_body(fixed_w, moving_w, transform), metric)


def propagate(mask: sitk.Image, registration: Registration, reference: sitk.Image) -> sitk.Image:
    """``mask`` (on the annotated phase) carried onto ``reference``'s grid (nearest neighbour)."""
    out = sitk.Resample(
        mask, reference, registration.transform, sitk.sitkNearestNeighbor, 0, mask.GetPixelID()
    )
    out.CopyInformation(reference)
    return out


def volume_ml(mask: sitk.Image) -> float:
    """Foreground volume of a 0 / 1 mask in millilitres."""
    voxels = int(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))
    return voxels * float(np.prod(mask.GetSpacing())) / 1000.0


def mask_centroid_mm(mask: sitk.Image) -> tuple[float, float, float] | None:
    """Physical centroid (mm, x y z) of a mask's foreground, ``None`` when empty."""
    index = np.argwhere(sitk.GetArrayViewFromImage(mask) > 0)
    if index.size == 0:
        return None
    centre_xyz = index.mean(axis=0)[::-1]
    return mask.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in centre_xyz))


@dataclass(frozen=True)
class PropagationQC:
    """One propagated mask: which, from where to where, and how well (one row of ``qc/registration.csv``)."""

    patient_id: str
    mask: str
    from_phase: str
    to_phase: str
    correlation: float
    mattes_mi: float
    translation_x_mm: float
    translation_y_mm: float
    translation_z_mm: float
    rotation_deg: float
    volume_before_ml: float
    volume_after_ml: float
    overlay_png: str


def qc_record(
    patient_id: str, kind: str, from_phase: str, to_phase: str, registration: Registration,
    before: sitk.Image, after: sitk.Image, overlay_png: str,
) -> PropagationQC:  # fmt: skip
    """The QC row of one propagated mask; the translation is the rigid displacement at the mask's centroid."""
    centre = mask_centroid_mm(after) or after.TransformContinuousIndexToPhysicalPoint(
        tuple((n - 1) / 2 for n in after.GetSize())
    )
    shift = registration.displacement_mm(centre)
    return PropagationQC(
        patient_id, kind, from_phase, to_phase, round(registration.correlation, 4), round(registration.metric, 4),
        *(round(float(v), 3) for v in shift), round(registration.rotation_deg, 3),
        round(volume_ml(before), 3), round(volume_ml(after), 3), overlay_png,
    )  # fmt: skip


def write_overlay_png(
    path: Path, images: dict[str, sitk.Image], masks: dict[str, sitk.Image], title: str
) -> None:
    """Three planes (axial, coronal, sagittal through the mask's centroid) per phase, mask contour on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = list(images)
    fig, axes = plt.subplots(len(phases), 3, figsize=(9, 3 * len(phases)), squeeze=False)
    for row, phase in enumerate(phases):
        ct = sitk.GetArrayViewFromImage(images[phase])
        mask = sitk.GetArrayViewFromImage(masks[phase]) > 0
        index = np.argwhere(mask)
        z, y, x = index.mean(axis=0).round().astype(int) if index.size else np.asarray(ct.shape) // 2
        sz, sy, sx = (float(s) for s in reversed(images[phase].GetSpacing()))
        planes = [
            (ct[z], mask[z], sy / sx, "axial"),
            (ct[:, y, :][::-1], mask[:, y, :][::-1], sz / sx, "coronal"),
            (ct[:, :, x][::-1], mask[:, :, x][::-1], sz / sy, "sagittal"),
        ]
        for col, (plane, contour, aspect, name) in enumerate(planes):
            ax = axes[row, col]
            ax.imshow(plane, cmap="gray", vmin=-160, vmax=240, aspect=aspect, interpolation="nearest")
            if contour.any():
                ax.contour(contour.astype(float), levels=[0.5], colors="lime", linewidths=0.8)
            ax.set_title(f"{phase} {name}", fontsize=8)
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
