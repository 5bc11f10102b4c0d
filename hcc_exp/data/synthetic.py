"""The embedded synthetic cohort: triphasic liver CT with a known generative model.

``hcc-exp synth`` writes a complete cohort in the folder contract of
:mod:`hcc_exp.data.contract` (``cohort.csv``, ``images/<pid>/``) plus an
``oracle.csv`` that holds what a real cohort never has: the latent factors of
every patient and the true linear predictors of OS, RFS and MVI. The oracle's
C-index / AUC is the ceiling any model can reach on the cohort, so evaluation
can report what share of it a model recovers.

Generative model (per patient, latent factors standardised unless stated):

* ``tumour_radius_mm`` (8-30 mm, log-normal), its z-score ``size_z``;
* ``heterogeneity``: intratumoural blob texture (about 9 mm blobs, 3-25 HU), expressed
  with weight 1.0 in the portal venous phase and 0.4 in the arterial and delayed
  phases, which also carry outcome-free texture of their own;
* ``capsule_integrity`` in (0, 1): fraction and strength of the delayed-phase
  enhancing capsule;
* ``peritumoral``: margin irregularity, a patchy arterial peritumoral enhancement
  halo and satellite nodules in the 2.5-8 mm band outside the tumour;
* ``cirrhosis``: nodular texture of the background liver and lower parenchymal
  enhancement.

Outcomes: ``mvi ~ Bernoulli(logistic(mvi_logit))`` driven mainly by
``peritumoral`` (MVI lives in the margin). Death and relapse times follow Cox models
with Weibull baselines of one shape, so RFS = min(relapse, death) is itself a
Cox model whose linear predictor is :func:`rfs_linear_predictor`. OS is driven
mainly by ``heterogeneity`` (portal-phase signal), tumour size and cirrhosis
(background liver). Administrative censoring (recruitment 2017-2022, follow-up
to at most 2,934 days) and loss to follow-up censor both endpoints at the same
time, so ``rfs_time_days <= os_time_days`` and a death implies an RFS event.

Institutions I-VI differ in in-plane spacing, slice thickness (1.25-5 mm),
noise, contrast gain and calibration offset (domain shift); as in the paper,
institution I is the training split, II-V internal validation, VI external test.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter

from hcc_exp.config import PHASES
from hcc_exp.data.contract import (
    BCLC_STAGES,
    COHORT_CSV,
    IMAGES_DIR,
    ORACLE_CSV,
    REQUIRED_COLUMNS,
    SPLITS,
    TNM_STAGES,
)
from hcc_exp.data.io import image_from_array, staged_folder, write_nifti
from hcc_exp.errors import CohortError, ConfigError, MissingColumnError, MissingFileError
from hcc_exp.progress import patient_progress

SYNTHETIC_VERSION = 2
"""Bumped whenever the generator changes the bytes written for a given seed."""

MIN_PATIENTS = 6
"""Every split needs at least two patients."""

SPLIT_PROPORTIONS: dict[str, float] = {"train": 192 / 388, "internal": 116 / 388, "external": 80 / 388}
"""The paper's cohort: 192 training (I), 116 internal (II-V), 80 external (VI) patients."""

INTERNAL_INSTITUTIONS: tuple[str, ...] = ("II", "III", "IV", "V")

MIN_FOV_MM = 104.0
"""Smallest edge of the cubic field of view centred on the tumour: a 96 mm crop box centred
on the tumour's centroid fits with a few mm to spare for resampling."""

TUMOUR_MARGIN_MM = 20.0
"""The field of view holds the tumour's largest radius plus this margin on every side (+4 mm)."""

MAX_FOLLOW_UP_DAYS = 2934.0
MIN_ADMIN_FOLLOW_UP_DAYS = 600.0
DROPOUT_MEAN_DAYS = 1700.0
WEIBULL_SHAPE = 1.1
DEATH_SCALE_DAYS = 2500.0
RELAPSE_SCALE_DAYS = 1200.0

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


# --------------------------------------------------------------------------- institutions
@dataclass(frozen=True)
class InstitutionProfile:
    """Acquisition of one institution (the domain shift between splits).

    Attributes:
        name: roman numeral I-VI.
        split: the split its patients belong to.
        in_plane_mm: nominal in-plane pixel spacing (mm); patients vary by +-0.03 mm.
        slice_mm: slice thickness = spacing along z (mm).
        noise_hu: standard deviation of the Gaussian image noise (HU).
        contrast_gain: multiplier of every contrast enhancement (injection protocol).
        offset_hu: calibration offset of soft tissue (HU).
    """

    name: str
    split: str
    in_plane_mm: float
    slice_mm: float
    noise_hu: float
    contrast_gain: float
    offset_hu: float


INSTITUTIONS: dict[str, InstitutionProfile] = {
    p.name: p
    for p in (
        InstitutionProfile("I", "train", 0.86, 3.0, 11.0, 1.00, 0.0),
        InstitutionProfile("II", "internal", 0.74, 1.25, 16.0, 0.95, 6.0),
        InstitutionProfile("III", "internal", 0.80, 2.5, 11.0, 1.06, -5.0),
        InstitutionProfile("IV", "internal", 0.87, 5.0, 7.0, 0.92, 10.0),
        InstitutionProfile("V", "internal", 0.76, 2.0, 13.0, 1.08, -8.0),
        InstitutionProfile("VI", "external", 0.84, 2.0, 14.0, 0.88, 12.0),
    )
}


def split_sizes(patients: int) -> dict[str, int]:
    """Patients per split in the paper's 192/116/80 proportions, at least 2 each.

    Raises:
        ConfigError: fewer than :data:`MIN_PATIENTS` patients.
    """
    if patients < MIN_PATIENTS:
        raise ConfigError(f"synthetic cohort needs at least {MIN_PATIENTS} patients (2 per split), got {patients}")
    raw = {s: patients * p for s, p in SPLIT_PROPORTIONS.items()}
    sizes = {s: int(math.floor(v)) for s, v in raw.items()}
    # Largest remainder first, ties in split order.
    for s in sorted(SPLITS, key=lambda s: (-(raw[s] - sizes[s]), SPLITS.index(s)))[: patients - sum(sizes.values())]:
        sizes[s] += 1
    for s in SPLITS:
        while sizes[s] < 2:
            donor = max(SPLITS, key=lambda d: sizes[d])
            sizes[donor] -= 1
            sizes[s] += 1
    return sizes


def assign_institutions(patients: int) -> list[InstitutionProfile]:
    """Institution of each patient index: training first (I), internal (II-V in turn), external (VI)."""
    sizes = split_sizes(patients)
    out = [INSTITUTIONS["I"]] * sizes["train"]
    out += [INSTITUTIONS[INTERNAL_INSTITUTIONS[j % len(INTERNAL_INSTITUTIONS)]] for j in range(sizes["internal"])]
    out += [INSTITUTIONS["VI"]] * sizes["external"]
    return out


# --------------------------------------------------------------------------- latent model
@dataclass(frozen=True)
class PatientLatents:
    """The latent factors of one patient (see the module docstring).

    Attributes:
        tumour_radius_mm: mean radius of the main tumour (mm), 8-30.
        heterogeneity: intratumoural texture factor, N(0, 1).
        capsule_integrity: capsule coverage and strength, in (0, 1).
        peritumoral: margin irregularity / halo / satellite factor, N(0, 1).
        cirrhosis: background liver factor, N(0, 1).
        n_satellites: satellite nodules around the tumour, Poisson(:attr:`satellite_rate`).
        age_years: age at surgery.
        sex: "F" or "M".
    """

    tumour_radius_mm: float
    heterogeneity: float
    capsule_integrity: float
    peritumoral: float
    cirrhosis: float
    n_satellites: int
    age_years: int
    sex: str

    @property
    def size_z(self) -> float:
        return (math.log(self.tumour_radius_mm) - math.log(16.0)) / 0.35

    @property
    def age_z(self) -> float:
        return (self.age_years - 56.0) / 10.0

    @property
    def heterogeneity_amplitude_hu(self) -> float:
        """Texture amplitude (SD in HU) in the portal venous phase; 3-25 HU."""
        return 3.0 + 22.0 * _sigmoid(1.3 * self.heterogeneity)

    @property
    def cirrhosis_amplitude_hu(self) -> float:
        return 2.0 + 12.0 * _sigmoid(1.5 * self.cirrhosis)

    @property
    def halo_amplitude_hu(self) -> float:
        """Arterial peritumoral enhancement (HU) in the 0-5 mm band outside the tumour."""
        return 30.0 * _sigmoid(2.0 * (self.peritumoral - 0.3))

    @property
    def margin_irregularity(self) -> float:
        """Relative amplitude of high-frequency bumps on the tumour surface."""
        return 0.02 + 0.12 * _sigmoid(2.0 * self.peritumoral)

    @property
    def satellite_rate(self) -> float:
        """Poisson mean of the number of satellite nodules."""
        return satellite_rate(self.peritumoral)


def satellite_rate(peritumoral: float) -> float:
    """Poisson mean of the number of satellite nodules (0.5 at peritumoral = 0, 2.2 at +1)."""
    return 3.0 * _sigmoid(2.5 * (peritumoral - 0.6))


@dataclass(frozen=True)
class LinearPredictors:
    """True risk scores of one patient (log hazard ratios, MVI log-odds)."""

    os: float
    relapse: float
    rfs: float
    mvi_logit: float

    @property
    def mvi_probability(self) -> float:
        return _sigmoid(self.mvi_logit)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def sample_latents(rng: np.random.Generator) -> PatientLatents:
    """Draw one patient's latent factors."""
    radius = float(np.clip(math.exp(rng.normal(math.log(16.0), 0.35)), 8.0, 30.0))
    heterogeneity = float(rng.normal())
    capsule_integrity = _sigmoid(float(rng.normal(0.4, 1.2)))
    peritumoral = float(rng.normal())
    return PatientLatents(
        tumour_radius_mm=radius,
        heterogeneity=heterogeneity,
        capsule_integrity=capsule_integrity,
        peritumoral=peritumoral,
        cirrhosis=float(rng.normal()),
        n_satellites=int(rng.poisson(satellite_rate(peritumoral))),
        age_years=int(np.clip(round(rng.normal(56.0, 10.0)), 25, 85)),
        sex="M" if rng.random() < 0.82 else "F",
    )


def rfs_linear_predictor(os_lp: float, relapse_lp: float) -> float:
    """Log hazard of RFS = min(relapse, death) when both share the Weibull shape.

    With cumulative hazards ``(t / scale_k) ** shape * exp(lp_k)`` the minimum has the
    summed hazard, again proportional in t, so this is the RFS Cox linear predictor.
    """
    return math.log(
        math.exp(relapse_lp) / RELAPSE_SCALE_DAYS**WEIBULL_SHAPE + math.exp(os_lp) / DEATH_SCALE_DAYS**WEIBULL_SHAPE
    ) + WEIBULL_SHAPE * math.log(RELAPSE_SCALE_DAYS)


def linear_predictors(latents: PatientLatents) -> LinearPredictors:
    """The planted Cox / logistic model."""
    z = latents
    os_lp = 1.2 * z.heterogeneity + 0.5 * z.size_z + 0.55 * z.cirrhosis + 0.3 * z.peritumoral + 0.15 * z.age_z
    relapse_lp = (
        1.0 * z.peritumoral
        + 0.35 * z.size_z
        + 0.4 * z.heterogeneity
        + 0.3 * z.cirrhosis
        + 1.2 * (0.5 - z.capsule_integrity)
    )
    mvi_logit = -0.6 + 2.5 * z.peritumoral + 0.4 * z.size_z + 1.0 * (0.5 - z.capsule_integrity)
    return LinearPredictors(os_lp, relapse_lp, rfs_linear_predictor(os_lp, relapse_lp), mvi_logit)


@dataclass(frozen=True)
class Outcomes:
    """Observed outcomes (days from surgery) and the uncensored times behind them."""

    os_time_days: int
    os_event: int
    rfs_time_days: int
    rfs_event: int
    mvi: int
    death_time_days: float
    relapse_time_days: float
    censor_time_days: float


def _weibull_time(rng: np.random.Generator, scale_days: float, lp: float) -> float:
    # Inverse transform: S(t) = exp(-(t/scale)^k exp(lp)) = U.
    return scale_days * (rng.exponential() / math.exp(lp)) ** (1.0 / WEIBULL_SHAPE)


def sample_outcomes(lp: LinearPredictors, rng: np.random.Generator) -> Outcomes:
    """Draw MVI, death, relapse and censoring times of one patient."""
    mvi = int(rng.random() < lp.mvi_probability)
    death = _weibull_time(rng, DEATH_SCALE_DAYS, lp.os)
    relapse = _weibull_time(rng, RELAPSE_SCALE_DAYS, lp.relapse)
    admin = rng.uniform(MIN_ADMIN_FOLLOW_UP_DAYS, MAX_FOLLOW_UP_DAYS)
    censor = min(admin, rng.exponential(DROPOUT_MEAN_DAYS))
    first = min(death, relapse)
    # ceil is monotone, so RFS <= OS survives the rounding to whole days.
    os_time = max(1, math.ceil(min(death, censor)))
    rfs_time = max(1, math.ceil(min(first, censor)))
    return Outcomes(
        os_time_days=os_time,
        os_event=int(death <= censor),
        rfs_time_days=rfs_time,
        rfs_event=int(first <= censor),
        mvi=mvi,
        death_time_days=death,
        relapse_time_days=relapse,
        censor_time_days=censor,
    )


def _ordinal(score: float, cuts: tuple[float, ...], labels: tuple[str, ...]) -> str:
    return labels[int(np.searchsorted(np.asarray(cuts), score))]


def sample_clinical(latents: PatientLatents, lp: LinearPredictors, rng: np.random.Generator) -> dict[str, object]:
    """Clinical variables, tied to the latent risk more loosely than the image.

    Returns:
        ``bclc``, ``tnm``, ``afp_ng_ml``, ``tumour_size_mm`` (maximum diameter measured
        with error), ``age``, ``sex``.
    """
    z = latents
    multifocal = float(z.n_satellites > 0)
    bclc_score = 0.5 * z.size_z + 0.4 * z.peritumoral + 0.3 * z.cirrhosis + 0.4 * multifocal + rng.normal(0, 0.8)
    tnm_score = 0.6 * z.size_z + 0.6 * z.peritumoral + 0.5 * multifocal + rng.normal(0, 0.7)
    log10_afp = 1.3 + 0.25 * lp.os + 0.2 * z.peritumoral + rng.normal(0, 0.9)
    diameter = 2.0 * z.tumour_radius_mm * (1.05 + 0.5 * z.margin_irregularity) + rng.normal(0, 2.5)
    return {
        # Cut points give about 8 / 57 / 22 / 12 / 1 % BCLC 0-D and 40 / 33 / 20 / 7 % TNM I-IV
        # (a resected cohort).
        "bclc": _ordinal(bclc_score, (-1.38, 0.6, 1.46, 2.7), BCLC_STAGES),
        "tnm": _ordinal(tnm_score, (-0.09, 0.96, 1.98), TNM_STAGES),
        "afp_ng_ml": round(10 ** float(np.clip(log10_afp, 0.0, 5.0)), 2),
        "tumour_size_mm": round(max(diameter, 5.0), 1),
        "age": z.age_years,
        "sex": z.sex,
    }


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


# --------------------------------------------------------------------------- one patient
@dataclass(frozen=True)
class SyntheticPatient:
    """Everything drawn for one patient except the volumes."""

    patient_id: str
    institution: InstitutionProfile
    latents: PatientLatents
    lp: LinearPredictors
    outcomes: Outcomes
    clinical: dict[str, object]


def _stream(seed: int, index: int, *key: int) -> np.random.Generator:
    # Child streams keyed by patient index: patient k's draws do not depend on the cohort size.
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index, *key)))


_LATENT_STREAM, _IMAGE_STREAM, _OUTCOME_STREAM, _CLINICAL_STREAM = 0, 1, 2, 3
_MAX_OUTCOME_ATTEMPTS = 200


def _split_is_estimable(outcomes: list[Outcomes]) -> bool:
    """At least one comparable pair for OS and RFS, and both MVI classes."""
    mvi = {o.mvi for o in outcomes}
    if mvi != {0, 1}:
        return False
    for time_attr, event_attr in (("os_time_days", "os_event"), ("rfs_time_days", "rfs_event")):
        times = np.array([getattr(o, time_attr) for o in outcomes])
        events = np.array([getattr(o, event_attr) for o in outcomes], dtype=bool)
        if not (times[events][:, None] < times[None, :]).any():
            return False
    return True


def sample_cohort(patients: int, seed: int) -> list[SyntheticPatient]:
    """Latents, risk scores, outcomes and clinical variables of every patient (no volumes; fast).

    Outcomes of a split are redrawn (new outcome streams, same latents) until the split
    has a comparable pair for OS and RFS and both MVI classes, which only matters for
    cohorts of a few patients.
    """
    institutions = assign_institutions(patients)
    latents = [sample_latents(_stream(seed, k, _LATENT_STREAM)) for k in range(patients)]
    lps = [linear_predictors(z) for z in latents]
    outcomes: list[Outcomes | None] = [None] * patients
    for split in SPLITS:
        members = [k for k, inst in enumerate(institutions) if inst.split == split]
        for attempt in range(_MAX_OUTCOME_ATTEMPTS):
            drawn = [sample_outcomes(lps[k], _stream(seed, k, _OUTCOME_STREAM, attempt)) for k in members]
            if _split_is_estimable(drawn):
                break
        for k, o in zip(members, drawn, strict=True):
            outcomes[k] = o
    return [
        SyntheticPatient(
            patient_id=f"SYN{k + 1:04d}",
            institution=institutions[k],
            latents=latents[k],
            lp=lps[k],
            outcomes=outcomes[k],  # type: ignore[arg-type]
            clinical=sample_clinical(latents[k], lps[k], _stream(seed, k, _CLINICAL_STREAM)),
        )
        for k in range(patients)
    ]


# --------------------------------------------------------------------------- summary and oracle
@dataclass
class SyntheticSummary:
    """What ``write_synthetic_cohort`` wrote.

    Attributes:
        cohort_dir: the cohort folder.
        patients, seed, version: the generator inputs.
        n_per_split: patients per split.
        os_event_rate, rfs_event_rate, mvi_rate: per split, fractions in [0, 1].
        oracle: flat ``"<split>/<task>/<metric>"`` metrics of the true linear predictors,
            e.g. ``"external/os/c_index"``, ``"internal/mvi/auc"`` (see :func:`oracle_metrics`).
        seconds: wall time of the generation.
    """

    cohort_dir: Path
    patients: int
    seed: int
    version: int
    n_per_split: dict[str, int]
    os_event_rate: dict[str, float]
    rfs_event_rate: dict[str, float]
    mvi_rate: dict[str, float]
    oracle: dict[str, float]
    seconds: float

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["cohort_dir"] = str(self.cohort_dir)
        return out


ORACLE_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "institution",
    "split",
    "tumour_radius_mm",
    "heterogeneity",
    "capsule_integrity",
    "peritumoral",
    "margin_irregularity",
    "n_satellites",
    "cirrhosis",
    "os_linear_predictor",
    "relapse_linear_predictor",
    "rfs_linear_predictor",
    "mvi_logit",
    "mvi_probability",
    "death_time_days",
    "relapse_time_days",
    "censor_time_days",
    *(f"heterogeneity_hu_{p}" for p in PHASES),
    *(f"nuisance_hu_{p}" for p in PHASES),
    *(f"halo_hu_{p}" for p in PHASES),
    "cirrhosis_hu",
)
"""Columns of ``oracle.csv`` (kept out of ``cohort.csv`` so no model can read them)."""


def compute_oracle_metrics(table: pd.DataFrame) -> dict[str, float]:
    """Oracle metrics per split from outcomes + true scores (pure).

    Args:
        table: one row per patient with ``split``, ``os_time_days``, ``os_event``,
            ``rfs_time_days``, ``rfs_event``, ``mvi`` and ``os_linear_predictor``,
            ``rfs_linear_predictor``, ``mvi_probability``.

    Returns:
        ``"<split>/os/c_index"``, ``"<split>/rfs/c_index"`` (Harrell, scikit-survival) and
        ``"<split>/mvi/auc"`` (scikit-learn) for every split present; NaN where undefined.
    """
    from sklearn.metrics import roc_auc_score
    from sksurv.metrics import concordance_index_censored

    metrics: dict[str, float] = {}
    for split in SPLITS:
        rows = table[table["split"] == split]
        if rows.empty:
            continue
        for task in ("os", "rfs"):
            event = rows[f"{task}_event"].to_numpy().astype(bool)
            try:
                value = concordance_index_censored(
                    event, rows[f"{task}_time_days"].to_numpy(float), rows[f"{task}_linear_predictor"].to_numpy(float)
                )[0]
            except ValueError:  # no comparable pair
                value = math.nan
            metrics[f"{split}/{task}/c_index"] = float(value)
        mvi = rows["mvi"].to_numpy().astype(int)
        metrics[f"{split}/mvi/auc"] = (
            float(roc_auc_score(mvi, rows["mvi_probability"].to_numpy(float))) if len(set(mvi)) == 2 else math.nan
        )
    return metrics


def oracle_metrics(cohort_dir: Path) -> dict[str, float]:
    """Oracle C-index (OS, RFS) and MVI AUC per split of a synthetic cohort folder.

    Reads ``cohort.csv`` (observed outcomes) and ``oracle.csv`` (true scores).

    Raises:
        MissingFileError: either table is missing (a non-synthetic cohort has no oracle).
        MissingColumnError: a needed column is missing.
        CohortError: the two tables do not list the same patients.
    """
    cohort_dir = Path(cohort_dir)
    tables = {}
    for name in (COHORT_CSV, ORACLE_CSV):
        path = cohort_dir / name
        if not path.is_file():
            raise MissingFileError(f"{name} does not exist (only synthetic cohorts have an oracle)", path=path)
        tables[name] = pd.read_csv(path, dtype={"patient_id": str})
    needed = {
        COHORT_CSV: ("patient_id", "split", "os_time_days", "os_event", "rfs_time_days", "rfs_event", "mvi"),
        ORACLE_CSV: ("patient_id", "os_linear_predictor", "rfs_linear_predictor", "mvi_probability"),
    }
    for name, columns in needed.items():
        for col in columns:
            if col not in tables[name].columns:
                raise MissingColumnError("required column is missing", column=col, path=cohort_dir / name)
    cohort = tables[COHORT_CSV]
    oracle = tables[ORACLE_CSV][list(needed[ORACLE_CSV])]
    if set(cohort["patient_id"]) != set(oracle["patient_id"]):
        missing = sorted(set(cohort["patient_id"]) ^ set(oracle["patient_id"]))
        raise CohortError(f"cohort.csv and oracle.csv list different patients: {', '.join(missing[:5])}", path=cohort_dir)
    return compute_oracle_metrics(cohort.merge(oracle, on="patient_id", how="inner"))


# --------------------------------------------------------------------------- writing
_FLOAT_FORMAT = "%.6f"


def _cohort_row(p: SyntheticPatient) -> dict[str, object]:
    o = p.outcomes
    return {
        "patient_id": p.patient_id,
        "institution": p.institution.name,
        "split": p.institution.split,
        "os_time_days": o.os_time_days,
        "os_event": o.os_event,
        "rfs_time_days": o.rfs_time_days,
        "rfs_event": o.rfs_event,
        "mvi": o.mvi,
        **p.clinical,
    }


def _oracle_row(p: SyntheticPatient, expression: dict[str, float]) -> dict[str, object]:
    z, o = p.latents, p.outcomes
    return {
        "patient_id": p.patient_id,
        "institution": p.institution.name,
        "split": p.institution.split,
        "tumour_radius_mm": z.tumour_radius_mm,
        "heterogeneity": z.heterogeneity,
        "capsule_integrity": z.capsule_integrity,
        "peritumoral": z.peritumoral,
        "margin_irregularity": z.margin_irregularity,
        "n_satellites": z.n_satellites,
        "cirrhosis": z.cirrhosis,
        "os_linear_predictor": p.lp.os,
        "relapse_linear_predictor": p.lp.relapse,
        "rfs_linear_predictor": p.lp.rfs,
        "mvi_logit": p.lp.mvi_logit,
        "mvi_probability": p.lp.mvi_probability,
        "death_time_days": o.death_time_days,
        "relapse_time_days": o.relapse_time_days,
        "censor_time_days": o.censor_time_days,
        **expression,
    }


def _write_patient_volumes(volumes: SyntheticVolumes, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)

    def write(array: np.ndarray, name: str) -> None:
        write_nifti(image_from_array(array, volumes.spacing_xyz_mm, volumes.origin_xyz_mm), folder / name)

    for phase in PHASES:
        write(volumes.phases[phase], f"{phase}.nii.gz")
        write(volumes.tumour, f"{phase}_tumour.nii.gz")
    write(volumes.liver, "liver.nii.gz")


def write_synthetic_cohort(out_dir: Path, patients: int = 64, seed: int = 7, *, progress: bool = True) -> SyntheticSummary:
    """Write the synthetic cohort (contract folder + ``oracle.csv``) to ``out_dir``.

    The cohort is built in a temporary sibling folder and renamed onto ``out_dir`` only
    when complete; an existing ``out_dir`` is replaced then. The same ``seed`` and
    :data:`SYNTHETIC_VERSION` give byte-identical files.

    Args:
        out_dir: the cohort folder to create (or replace).
        patients: number of patients (>= 6), split 192/116/80 like the paper.
        seed: root seed; patient k draws from child streams keyed by k.
        progress: show a Rich progress bar (one step per patient).

    Raises:
        ConfigError: fewer than 6 patients.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    cohort = sample_cohort(patients, seed)
    with staged_folder(out_dir) as tmp:
        cohort_rows, oracle_rows = [], []
        with patient_progress("synthesizing", enabled=progress) as bar:
            task = bar.add_task("", total=len(cohort))
            for k, patient in enumerate(cohort):
                volumes = synthesize_volumes(patient.latents, patient.institution, _stream(seed, k, _IMAGE_STREAM))
                _write_patient_volumes(volumes, tmp / IMAGES_DIR / patient.patient_id)
                cohort_rows.append(_cohort_row(patient))
                oracle_rows.append(_oracle_row(patient, volumes.expression))
                bar.update(task, advance=1, description=patient.patient_id)
        cohort_table = pd.DataFrame(cohort_rows, columns=list(REQUIRED_COLUMNS))
        oracle_table = pd.DataFrame(oracle_rows, columns=list(ORACLE_COLUMNS))
        cohort_table.to_csv(tmp / COHORT_CSV, index=False, float_format=_FLOAT_FORMAT, lineterminator="\n")
        oracle_table.to_csv(tmp / ORACLE_CSV, index=False, float_format=_FLOAT_FORMAT, lineterminator="\n")

    by_split = cohort_table.groupby("split")
    return SyntheticSummary(
        cohort_dir=out_dir,
        patients=patients,
        seed=seed,
        version=SYNTHETIC_VERSION,
        n_per_split={s: int(by_split.size()[s]) for s in SPLITS},
        os_event_rate={s: float(by_split["os_event"].mean()[s]) for s in SPLITS},
        rfs_event_rate={s: float(by_split["rfs_event"].mean()[s]) for s in SPLITS},
        mvi_rate={s: float(by_split["mvi"].mean()[s]) for s in SPLITS},
        oracle=oracle_metrics(out_dir),
        seconds=time.perf_counter() - started,
    )


