"""Tiny hand-made cohorts for tests: a few patients, small volumes, spheres for liver and tumour.

Use :func:`write_tiny_cohort` to get a valid cohort in seconds, then break one
file or cell to exercise a validation error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hcc_exp.config import PHASES
from hcc_exp.data.contract import COHORT_CSV, IMAGES_DIR
from hcc_exp.data.io import image_from_array, write_nifti


def sphere(shape_zyx: tuple[int, int, int], centre_zyx_vox, radius_mm: float, spacing_zyx_mm) -> np.ndarray:
    """Binary ball (uint8) of ``radius_mm`` around ``centre_zyx_vox`` on a grid of ``spacing_zyx_mm``."""
    grids = np.meshgrid(*[np.arange(n) for n in shape_zyx], indexing="ij")
    dist2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre_zyx_vox, spacing_zyx_mm, strict=True))
    return (dist2 <= radius_mm**2).astype(np.uint8)


def tiny_clinical_table(n_patients: int, seed: int = 0) -> pd.DataFrame:
    """A valid cohort.csv table with events in every split."""
    rng = np.random.default_rng(seed)
    splits = ["train", "internal", "external"]
    rows = []
    for i in range(n_patients):
        os_time = int(rng.integers(200, 2000))
        os_event = int(i % 2 == 0)
        rfs_time = int(os_time - rng.integers(0, 150)) if os_event else int(rng.integers(100, os_time + 1))
        rfs_event = 1 if os_event else int(i % 3 == 0)
        rows.append(
            {
                "patient_id": f"P{i:03d}",
                "institution": "I" if i % 3 == 0 else ("II" if i % 3 == 1 else "VI"),
                "split": splits[i % 3],
                "os_time_days": os_time,
                "os_event": os_event,
                "rfs_time_days": max(rfs_time, 1),
                "rfs_event": rfs_event,
                "mvi": int(i % 2),
                "bclc": "A",
                "tnm": "II",
                "afp_ng_ml": float(rng.uniform(1, 400)),
                "tumour_size_mm": float(rng.uniform(10, 60)),
                "age": int(rng.integers(35, 80)),
                "sex": "M" if i % 2 else "F",
            }
        )
    return pd.DataFrame(rows)


def write_tiny_cohort(
    root: Path,
    n_patients: int = 6,
    shape_zyx: tuple[int, int, int] = (12, 32, 32),
    spacing_zyx_mm: tuple[float, float, float] = (2.5, 0.8, 0.8),
    seed: int = 0,
    per_phase_liver: bool = False,
) -> Path:
    """Write a valid cohort of ``n_patients`` with a spherical liver and tumour per patient.

    Returns:
        The cohort folder ``root``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    table = tiny_clinical_table(n_patients, seed)
    spacing_xyz = tuple(reversed(spacing_zyx_mm))
    centre = tuple(n / 2 for n in shape_zyx)
    liver = sphere(shape_zyx, centre, radius_mm=11.0, spacing_zyx_mm=spacing_zyx_mm)
    tumour = sphere(shape_zyx, centre, radius_mm=4.0, spacing_zyx_mm=spacing_zyx_mm)
    for pid in table["patient_id"]:
        folder = root / IMAGES_DIR / pid
        folder.mkdir(parents=True, exist_ok=True)
        for k, phase in enumerate(PHASES):
            ct = rng.normal(40, 15, size=shape_zyx) - 90.0 * (1 - liver.astype(float))
            ct += 60 * liver + (30 + 20 * k) * tumour
            ct[:, 0, :] = -1000.0  # air in front of the body: real CT spans air to contrast (check's CT rule)
            write_nifti(image_from_array(ct.astype(np.int16), spacing_xyz), folder / f"{phase}.nii.gz")
            write_nifti(image_from_array(tumour, spacing_xyz), folder / f"{phase}_tumour.nii.gz")
            if per_phase_liver:
                write_nifti(image_from_array(liver, spacing_xyz), folder / f"{phase}_liver.nii.gz")
        if not per_phase_liver:
            write_nifti(image_from_array(liver, spacing_xyz), folder / "liver.nii.gz")
    table.to_csv(root / COHORT_CSV, index=False)
    return root


def edit_cohort_csv(root: Path, patient_id: str, **values) -> None:
    """Set cells of one patient's row in ``root/cohort.csv`` (values written as given, e.g. ``-5`` or ``"abc"``)."""
    path = Path(root) / COHORT_CSV
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    rows = table["patient_id"] == patient_id
    if not rows.any():
        raise KeyError(f"no row for patient {patient_id} in {path}")
    for column, value in values.items():
        table.loc[rows, column] = "" if value is None else str(value)
    table.to_csv(path, index=False)
