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

The model lives in :mod:`hcc_exp.data.synthetic_model`, the rendering of the volumes in
:mod:`hcc_exp.data.synthetic_images`; this module draws a cohort and writes it.

Institutions I-VI differ in in-plane spacing, slice thickness (1.25-5 mm),
noise, contrast gain and calibration offset (domain shift); as in the paper,
institution I is the training split, II-V internal validation, VI external test.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hcc_exp.config import PHASES
from hcc_exp.data.contract import (
    COHORT_CSV,
    IMAGES_DIR,
    ORACLE_CSV,
    REQUIRED_COLUMNS,
    SPLITS,
)
from hcc_exp.data.io import image_from_array, staged_folder, write_nifti
from hcc_exp.data.synthetic_images import (  # noqa: F401  (re-exported)
    MIN_FOV_MM,
    SyntheticVolumes,
    synthesize_volumes,
)
from hcc_exp.data.synthetic_model import (  # noqa: F401  (re-exported: the generator's model and constants)
    DEATH_SCALE_DAYS,
    INSTITUTIONS,
    MAX_FOLLOW_UP_DAYS,
    MIN_PATIENTS,
    RELAPSE_SCALE_DAYS,
    WEIBULL_SHAPE,
    InstitutionProfile,
    LinearPredictors,
    Outcomes,
    PatientLatents,
    assign_institutions,
    linear_predictors,
    rfs_linear_predictor,
    sample_clinical,
    sample_latents,
    sample_outcomes,
    split_sizes,
)
from hcc_exp.progress import patient_progress

SYNTHETIC_VERSION = 2
"""Bumped whenever the generator changes the bytes written for a given seed."""


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


# --------------------------------------------------------------------------- summary and oracle.csv columns
@dataclass
class SyntheticSummary:
    """What ``write_synthetic_cohort`` wrote.

    Attributes:
        cohort_dir: the cohort folder.
        patients, seed, version: the generator inputs.
        n_per_split: patients per split.
        os_event_rate, rfs_event_rate, mvi_rate: per split, fractions in [0, 1].
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
        seconds=time.perf_counter() - started,
    )


