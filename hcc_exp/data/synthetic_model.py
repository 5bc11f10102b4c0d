"""The generative model of the synthetic cohort: institutions, latent factors, risk scores, outcomes, clinical data.

The known answer behind :mod:`hcc_exp.data.synthetic`: every patient's latent factors
(tumour size, heterogeneity, capsule integrity, peritumoral invasion, cirrhosis), the
true linear predictors of OS, relapse, RFS and MVI, and the outcomes and clinical
variables drawn from them. No volumes here (:mod:`hcc_exp.data.synthetic_images`
renders them); everything is cheap, so oracle checks can draw thousands of patients.

>>> split_sizes(388)
{'train': 192, 'internal': 116, 'external': 80}
>>> round(rfs_linear_predictor(0.0, 0.0), 4)    # log(1 + (1200 / 2500) ** 1.1): relapse plus death hazards
0.3688
>>> round(rfs_linear_predictor(-50.0, 0.0), 6)  # no death hazard: RFS is relapse
0.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hcc_exp.data.contract import BCLC_STAGES, SPLITS, TNM_STAGES
from hcc_exp.errors import ConfigError

MIN_PATIENTS = 6
"""Every split needs at least two patients."""

SPLIT_PROPORTIONS: dict[str, float] = {"train": 192 / 388, "internal": 116 / 388, "external": 80 / 388}
"""The paper's cohort: 192 training (I), 116 internal (II-V), 80 external (VI) patients."""

INTERNAL_INSTITUTIONS: tuple[str, ...] = ("II", "III", "IV", "V")

MAX_FOLLOW_UP_DAYS = 2934.0
MIN_ADMIN_FOLLOW_UP_DAYS = 600.0
DROPOUT_MEAN_DAYS = 1700.0
WEIBULL_SHAPE = 1.1
DEATH_SCALE_DAYS = 2500.0
RELAPSE_SCALE_DAYS = 1200.0


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
