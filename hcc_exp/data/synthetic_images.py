"""Rendering of one synthetic patient's triphasic CT, tumour and liver masks from its latent factors.

Attenuation per tissue and phase, the institution's acquisition (spacing, noise, gain,
offset), and the planted image signals: portal-phase tumour texture (OS), the arterial
peritumoral halo and satellites (MVI), the delayed capsule and the cirrhotic background.
Pure numpy: arrays in, :class:`SyntheticVolumes` out (written by :mod:`hcc_exp.data.synthetic`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter

from hcc_exp.data.synthetic_model import InstitutionProfile, PatientLatents
from hcc_exp.vocabulary import PHASES

MIN_FOV_MM = 104.0
"""Smallest edge of the cubic field of view centred on the tumour: a 96 mm crop box centred
on the tumour's centroid fits with a few mm to spare for resampling."""

TUMOUR_MARGIN_MM = 20.0
"""The field of view holds the tumour's largest radius plus this margin on every side (+4 mm)."""

HETEROGENEITY_BLOB_SIGMA_MM = 3.5
"""Gaussian scale of the prognostic intratumoural texture: blobs about 9 mm across, resolved
at the demo's 2 mm voxels (a 2 mm scale, 5 mm blobs, was mostly averaged away there)."""

NUISANCE_BLOB_SIGMA_MM = 2.0
"""Gaussian scale of the outcome-free intratumoural texture and of the halo's patches."""

HALO_DECAY_MM = 5.0
"""e-folding distance of the peritumoral enhancement halo outside the tumour surface."""

HETEROGENEITY_PHASE_WEIGHT: dict[str, float] = {"arterial": 0.4, "portal": 1.0, "delayed": 0.4}
"""Expression of the prognostic tumour texture per phase (portal venous strongest)."""

HALO_PHASE_WEIGHT: dict[str, float] = {"arterial": 1.0, "portal": 0.35, "delayed": 0.15}
"""Expression of the peritumoral enhancement halo per phase (arterial strongest)."""

CIRRHOSIS_PHASE_WEIGHT: dict[str, float] = {"arterial": 0.8, "portal": 1.0, "delayed": 0.9}

# Attenuation (HU) per tissue and phase at contrast gain 1. An institution's gain scales the
# enhancement above UNENHANCED_HU (tumour and satellites enhance from the liver's value).
UNENHANCED_HU: dict[str, float] = {"fat": -100.0, "muscle": 45.0, "liver": 55.0, "vessel": 40.0}
PHASE_HU: dict[str, dict[str, float]] = {
    "arterial": {"muscle": 50.0, "liver": 70.0, "vessel": 150.0, "tumour": 115.0, "satellite": 110.0},
    "portal": {"muscle": 60.0, "liver": 110.0, "vessel": 190.0, "tumour": 90.0, "satellite": 95.0},
    "delayed": {"muscle": 55.0, "liver": 90.0, "vessel": 135.0, "tumour": 65.0, "satellite": 70.0},
}
CAPSULE_HU: dict[str, float] = {"arterial": -5.0, "portal": 12.0, "delayed": 35.0}
AIR_HU = -1000.0
HU_RANGE = (-1024, 3071)



# --------------------------------------------------------------------------- volumes
@dataclass
class SyntheticVolumes:
    """One patient's volumes on one grid.

    Attributes:
        phases: phase -> CT array (z, y, x) int16 HU.
        tumour: main tumour mask (z, y, x) uint8 (satellite nodules are not annotated).
        liver: liver mask (z, y, x) uint8, tumour included.
        spacing_xyz_mm: voxel spacing (x, y, z) mm.
        origin_xyz_mm: physical position of voxel (0, 0, 0) (x, y, z) mm.
        expression: amplitudes (HU) actually rendered, for the oracle.
    """

    phases: dict[str, np.ndarray]
    tumour: np.ndarray
    liver: np.ndarray
    spacing_xyz_mm: tuple[float, float, float]
    origin_xyz_mm: tuple[float, float, float]
    expression: dict[str, float] = field(default_factory=dict)


def _ramp(signed_mm: np.ndarray, width_mm: float) -> np.ndarray:
    """Soft indicator of ``signed_mm > 0`` with a linear edge ``width_mm`` wide (partial volume)."""
    return np.clip(signed_mm * (1.0 / width_mm) + 0.5, 0.0, 1.0)


def _texture(rng: np.random.Generator, shape: tuple[int, ...], sigma_mm: float, spacing_zyx: np.ndarray) -> np.ndarray:
    """Gaussian-filtered white noise (blobs about ``2.5 * sigma_mm`` across), unit SD, float32."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    smooth = gaussian_filter(noise, sigma=sigma_mm / spacing_zyx, truncate=2.5, mode="reflect")
    smooth *= np.float32(1.0 / max(float(smooth.std()), 1e-6))
    return smooth


def _surface_waves(rng: np.random.Generator, n: int, freq: tuple[float, float]) -> list[tuple[float, ...]]:
    """``n`` random plane waves on the unit sphere: (normal z, y, x, frequency, phase)."""
    normals = rng.normal(size=(n, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    freqs = rng.uniform(*freq, size=n)
    phases = rng.uniform(0, 2 * math.pi, size=n)
    return [(*map(float, nrm), float(f), float(ph)) for nrm, f, ph in zip(normals, freqs, phases, strict=True)]


def _eval_waves(waves: list[tuple[float, ...]], uz, uy, ux):
    """Sum of the waves at unit directions (uz, uy, ux): zero mean, unit SD, bounded to +-1.5."""
    out = 0.0
    for nz, ny, nx, f, ph in waves:
        out = out + np.cos(f * (nz * uz + ny * uy + nx * ux) + ph)
    return 1.5 * np.tanh(out / (1.5 * math.sqrt(len(waves) / 2.0)))


def _tumour_radius_at(latents: PatientLatents, low, high, uz, uy, ux):
    """Radius (mm) of the tumour surface in the direction (uz, uy, ux)."""
    return latents.tumour_radius_mm * (
        1.0 + 0.05 * _eval_waves(low, uz, uy, ux) + latents.margin_irregularity * _eval_waves(high, uz, uy, ux)
    )


def synthesize_volumes(
    latents: PatientLatents, institution: InstitutionProfile, rng: np.random.Generator
) -> SyntheticVolumes:
    """Render the three phases and the masks of one patient (pure: arrays out, no IO).

    Geometry is built in mm around the tumour centre, which is the field-of-view
    centre: an ellipsoidal liver with smooth random deformation whose lateral surface
    lies 14-28 mm beyond the tumour, a cylindrical body wall (muscle, subcutaneous fat,
    air) outside it, 3-5 vessels passing beside the tumour, and the tumour with its
    texture, capsule, peritumoral halo and satellite nodules.
    """
    z = latents
    in_plane = round(institution.in_plane_mm + rng.uniform(-0.03, 0.03), 3)
    spacing_zyx = np.array([institution.slice_mm, in_plane, in_plane], dtype=float)
    # Largest tumour radius the bounded surface waves can reach.
    r_max = z.tumour_radius_mm * (1.0 + 0.05 * 1.5 + z.margin_irregularity * 1.5)
    fov_mm = max(MIN_FOV_MM, 2.0 * (r_max + TUMOUR_MARGIN_MM + 4.0))
    shape = tuple(int(math.ceil(fov_mm / s)) for s in spacing_zyx)
    axes = [(np.arange(n, dtype=np.float32) - np.float32((n - 1) / 2.0)) * np.float32(s) for n, s in zip(shape, spacing_zyx, strict=True)]
    gz, gy, gx = axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]
    f32 = np.float32

    # ---- layout (mm, z/y/x, relative to the FOV centre)
    tumour_c = np.zeros(3)
    angle = rng.uniform(-0.7, 0.7) + (math.pi if rng.random() < 0.5 else 0.0)
    lateral = np.array([0.0, math.sin(angle), math.cos(angle)])
    depth = r_max + rng.uniform(14.0, 28.0)
    semi = np.array([rng.uniform(70, 85), rng.uniform(75, 95), rng.uniform(85, 105)])
    radius_along = 1.0 / math.sqrt(float(np.sum((lateral / semi) ** 2)))
    liver_c = tumour_c - (radius_along - depth) * lateral + np.array([rng.uniform(-8, 8), 0.0, 0.0])

    # ---- body wall: vertical cylinder whose inner surface lies just beyond the liver; (1, y, x)
    body_r = rng.uniform(140.0, 170.0)
    body_c = tumour_c - (body_r - depth - rng.uniform(1.0, 6.0)) * lateral
    radial = np.sqrt((gy - f32(body_c[1])) ** 2 + (gx - f32(body_c[2])) ** 2) - f32(body_r)
    muscle_mm, subcut_mm = rng.uniform(8.0, 14.0), rng.uniform(8.0, 25.0)
    w_body = _ramp(muscle_mm + subcut_mm - radial, 1.0)
    w_muscle = _ramp(radial, 1.0) * _ramp(muscle_mm - radial, 1.0)
    inside_wall = _ramp(-radial, 1.0)

    # ---- liver: ellipsoid with a smooth separable deformation, cut by the abdominal wall
    q2 = ((gz - f32(liver_c[0])) / f32(semi[0])) ** 2 + ((gy - f32(liver_c[1])) / f32(semi[1])) ** 2
    q = np.sqrt(q2 + ((gx - f32(liver_c[2])) / f32(semi[2])) ** 2)
    stretch = np.ones(shape, dtype=np.float32)
    for _ in range(3):
        waves = [np.cos(ax * f32(2 * math.pi / rng.uniform(80.0, 200.0)) + f32(rng.uniform(0, 6.3))) for ax in (gz, gy, gx)]
        stretch += (f32(rng.uniform(0.015, 0.04)) * waves[0] * waves[1]) * waves[2]
    w_liver = _ramp((1.0 - q * stretch) * f32(semi.mean()), 1.2) * inside_wall
    del q, q2, stretch

    # ---- vessels beside the tumour, inside the liver
    dist_t = np.sqrt((gz - f32(tumour_c[0])) ** 2 + (gy - f32(tumour_c[1])) ** 2 + (gx - f32(tumour_c[2])) ** 2)
    w_vessel = _vessel(rng, gz, gy, gx, tumour_c, r_max)
    for _ in range(int(rng.integers(2, 5))):
        np.maximum(w_vessel, _vessel(rng, gz, gy, gx, tumour_c, r_max), out=w_vessel)
    w_vessel *= _ramp(dist_t - f32(r_max + 6.0), 3.0)
    w_vessel *= w_liver

    # ---- tumour, capsule, halo and satellites on a box around the tumour
    half = r_max + 14.0
    lo = [max(0, int(math.floor((tumour_c[i] - half - axes[i][0]) / spacing_zyx[i]))) for i in range(3)]
    hi = [min(shape[i], int(math.ceil((tumour_c[i] + half - axes[i][0]) / spacing_zyx[i])) + 1) for i in range(3)]
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    bz, by, bx = gz[box[0]], gy[:, box[1]], gx[:, :, box[2]]
    rho = dist_t[box]
    del dist_t
    low_waves = _surface_waves(rng, 3, (1.0, 2.5))
    high_waves = _surface_waves(rng, 5, (7.0, 12.0))
    cap_waves = _surface_waves(rng, 3, (1.5, 3.0))
    # Surface bumps matter only near the surface: evaluate them on a shell of voxels
    # (deep inside, the boundary is the mean radius; far outside, the largest radius).
    r_in = z.tumour_radius_mm * (1.0 - 0.05 * 1.5 - z.margin_irregularity * 1.5) - 3.0
    deep = rho <= r_in
    shell = np.nonzero(~deep & (rho < r_max + 9.0))
    s_inv = 1.0 / np.maximum(rho[shell], f32(1e-3))
    uz = (np.broadcast_to(bz, rho.shape)[shell] - f32(tumour_c[0])) * s_inv
    uy = (np.broadcast_to(by, rho.shape)[shell] - f32(tumour_c[1])) * s_inv
    ux = (np.broadcast_to(bx, rho.shape)[shell] - f32(tumour_c[2])) * s_inv
    boundary = np.where(deep, f32(z.tumour_radius_mm), f32(r_max))
    boundary[shell] = _tumour_radius_at(z, low_waves, high_waves, uz, uy, ux)
    # The capsule covers a fraction of the surface that grows with its integrity.
    coverage = np.zeros_like(rho)
    coverage[shell] = _ramp(_eval_waves(cap_waves, uz, uy, ux) + 3.0 * (z.capsule_integrity - 0.5), 0.5)
    del uz, uy, ux, s_inv
    inside_mm = boundary - rho
    w_tumour = _ramp(inside_mm, 0.8)
    w_capsule = w_tumour * _ramp(2.0 - inside_mm, 0.6) * coverage * f32(z.capsule_integrity)
    del coverage, boundary

    w_sat = np.zeros_like(rho)
    for _ in range(z.n_satellites):
        u = rng.normal(size=3)
        u /= np.linalg.norm(u)
        r_b = float(_tumour_radius_at(z, low_waves, high_waves, *map(float, u)))
        centre = tumour_c + u * (r_b + rng.uniform(2.5, 8.0))
        d = np.sqrt((bz - f32(centre[0])) ** 2 + (by - f32(centre[1])) ** 2 + (bx - f32(centre[2])) ** 2)
        np.maximum(w_sat, _ramp(f32(rng.uniform(1.5, 3.5)) - d, 0.8), out=w_sat)
    w_sat *= 1.0 - w_tumour

    t_het = _texture(rng, rho.shape, HETEROGENEITY_BLOB_SIGMA_MM, spacing_zyx)
    t_nuis = _texture(rng, rho.shape, NUISANCE_BLOB_SIGMA_MM, spacing_zyx)
    # Patchy halo: decays over HALO_DECAY_MM outside the surface, patches from the nuisance texture.
    w_halo = (1.0 - w_tumour) * np.exp(np.minimum(inside_mm, 0.0) * f32(1.0 / HALO_DECAY_MM))
    w_halo *= np.clip(1.0 + 0.8 * t_nuis, 0.0, 2.0) * w_liver[box]
    het_tex = t_het * w_tumour
    nuis_tex = t_nuis * w_tumour
    keep = 1.0 - w_tumour - w_sat
    del t_het, t_nuis, inside_mm, rho

    w_parenchyma = w_liver * (1.0 - w_vessel)
    cirr_tex = _texture(rng, shape, 2.5, spacing_zyx)
    cirr_tex *= w_parenchyma

    nuisance_hu = {"arterial": rng.uniform(6.0, 18.0), "portal": rng.uniform(0.0, 2.0), "delayed": -rng.uniform(5.0, 15.0)}
    phase_jitter = {p: float(rng.normal(0.0, 6.0)) for p in PHASES}
    fat_hu = UNENHANCED_HU["fat"] + float(rng.normal(0.0, 6.0))

    # ---- compose: unenhanced + gain * enhancement, relative to fat inside the body
    gain = institution.contrast_gain

    def enhanced(tissue: str, target_hu: float) -> float:
        base = UNENHANCED_HU.get(tissue, UNENHANCED_HU["liver"])
        return base + gain * (target_hu - base)

    phases: dict[str, np.ndarray] = {}
    expression: dict[str, float] = {"cirrhosis_hu": z.cirrhosis_amplitude_hu}
    for phase in PHASES:
        hu = PHASE_HU[phase]
        jitter = phase_jitter[phase]
        het_hu = z.heterogeneity_amplitude_hu * HETEROGENEITY_PHASE_WEIGHT[phase]
        halo_hu = z.halo_amplitude_hu * HALO_PHASE_WEIGHT[phase]
        image = w_parenchyma * f32(enhanced("liver", hu["liver"] + jitter - 5.0 * z.cirrhosis) - fat_hu)
        image += w_vessel * f32(enhanced("vessel", hu["vessel"]) - fat_hu)
        image += cirr_tex * f32(gain * z.cirrhosis_amplitude_hu * CIRRHOSIS_PHASE_WEIGHT[phase])
        tb = image[box]
        tb *= keep
        tb += w_tumour * f32(enhanced("tumour", hu["tumour"] + jitter) - fat_hu)
        tb += het_tex * f32(gain * het_hu)
        tb += nuis_tex * f32(gain * nuisance_hu[phase])
        tb += w_capsule * f32(gain * CAPSULE_HU[phase])
        tb += w_sat * f32(enhanced("satellite", hu["satellite"] + jitter) - fat_hu)
        tb += w_halo * f32(gain * halo_hu)
        # Air, fat and muscle vary only in-plane here: one (y, x) plane broadcast over z.
        tissue_plane = fat_hu + f32(enhanced("muscle", hu["muscle"]) - fat_hu) * w_muscle
        image += f32(AIR_HU) + (tissue_plane - f32(AIR_HU) + f32(institution.offset_hu)) * w_body
        image += rng.standard_normal(shape, dtype=np.float32) * f32(institution.noise_hu)
        np.rint(image, out=image)
        np.clip(image, *HU_RANGE, out=image)
        phases[phase] = image.astype(np.int16)
        expression[f"heterogeneity_hu_{phase}"] = het_hu
        expression[f"nuisance_hu_{phase}"] = abs(nuisance_hu[phase])
        expression[f"halo_hu_{phase}"] = halo_hu

    tumour_mask = np.zeros(shape, dtype=np.uint8)
    tumour_mask[box] = w_tumour >= 0.5
    liver_mask = (w_liver >= 0.5).astype(np.uint8)
    liver_mask[box] |= (w_tumour >= 0.5) | (w_sat >= 0.5)

    spacing_xyz = (float(spacing_zyx[2]), float(spacing_zyx[1]), float(spacing_zyx[0]))
    table_shift = rng.uniform(-20.0, 20.0, size=3)
    origin_xyz = tuple(round(float(axes[2 - i][0]) + float(table_shift[i]), 3) for i in range(3))
    return SyntheticVolumes(phases, tumour_mask, liver_mask, spacing_xyz, origin_xyz, expression)  # type: ignore[arg-type]


def _vessel(rng: np.random.Generator, gz, gy, gx, tumour_c: np.ndarray, r_max: float) -> np.ndarray:
    """Soft tube (radius 1.5-4.5 mm) along a random axis, gently curved, passing beside the tumour."""
    grids = (gz, gy, gx)
    axis = int(rng.integers(0, 3))
    across = [a for a in range(3) if a != axis]
    t = grids[axis]
    offsets = (
        float(rng.choice([-1.0, 1.0]) * rng.uniform(r_max + 8.0, r_max + 40.0)),
        float(rng.uniform(-40.0, 40.0)),
    )
    dist2 = 0.0
    for a, offset in zip(across, offsets, strict=True):
        bend = np.float32(rng.uniform(2.0, 6.0)) * np.sin(
            t * np.float32(2 * math.pi / rng.uniform(60.0, 120.0)) + np.float32(rng.uniform(0, 6.3))
        )
        centre = np.float32(tumour_c[a] + offset) + np.float32(rng.uniform(-0.15, 0.15)) * t + bend
        dist2 = dist2 + (grids[a] - centre) ** 2
    radius = np.float32(rng.uniform(1.5, 4.5))
    return _ramp(radius - np.sqrt(dist2), 1.0)
