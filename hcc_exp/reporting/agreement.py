"""Segmentation agreement (the paper's Supplementary Table 2): Dice and HD95 of two annotations.

``hcc-exp agreement COHORT_A COHORT_B`` compares the masks of the patients two cohort folders
share (intra- or inter-observer annotations of the same scans), per phase and region:

* ``tumour``: the phase's tumour mask;
* ``liver``: the phase's liver mask (the shared one where no per-phase mask exists);
* ``margin``: the peritumoral band the network sees (:func:`hcc_exp.data.preprocess.margin_band`,
  ``margin_mm`` wide, clipped to the liver), derived from each annotation.

Dice is ``2 |A & B| / (|A| + |B|)``; HD95 is MONAI's symmetric 95th-percentile Hausdorff
distance between the masks' surfaces (``compute_hausdorff_distance(percentile=95)``) in
millimetres, using the volume's voxel spacing. It writes ``agreement.csv`` (``patient_id``,
``phase``, ``region``, ``dice``, ``hd95_mm``, ``status``) and ``agreement_summary.csv`` /
``agreement.md`` (mean, SD, min and max of Dice and HD95 per phase and region). Patients in only
one cohort are rows with ``status`` ``only in A`` / ``only in B`` (no numbers), not dropped.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from hcc_exp.data.contract import PatientFiles
from hcc_exp.data.io import atomic_path, read_volume, same_grid
from hcc_exp.errors import GridMismatchError, MissingFileError
from hcc_exp.progress import patient_progress
from hcc_exp.vocabulary import PATIENT_ID, PHASES

AGREEMENT_COLUMNS: tuple[str, ...] = (PATIENT_ID, "phase", "region", "dice", "hd95_mm", "status")
AGREEMENT_REGIONS: tuple[str, ...] = ("tumour", "margin", "liver")
DEFAULT_MARGIN_MM = 4.0
"""The default ``preprocess.margin_mm`` (paper: 2 mm inside + 2 mm outside the boundary)."""


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two binary masks; NaN when both are empty.

    >>> dice(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0]))
    0.5
    """
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    total = int(a.sum() + b.sum())
    return math.nan if total == 0 else 2.0 * float((a & b).sum()) / total


def hd95_mm(a: np.ndarray, b: np.ndarray, spacing_zyx_mm: Sequence[float]) -> float:
    """Symmetric 95th-percentile Hausdorff distance (mm) between two binary (z, y, x) masks.

    MONAI's ``compute_hausdorff_distance`` on the masks' surface voxels with the physical
    spacing; NaN when either mask is empty.
    """
    from monai.metrics import compute_hausdorff_distance

    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    if not a.any() or not b.any():
        return math.nan
    import torch

    # Only the union's bounding box (+1 voxel so surfaces on its edge stay surfaces) matters;
    # cropping keeps MONAI's distance transforms small for a tumour in a large field of view.
    nz = np.argwhere(a | b)
    box = tuple(slice(max(lo - 1, 0), hi + 2) for lo, hi in zip(nz.min(axis=0), nz.max(axis=0), strict=True))
    a, b = a[box], b[box]

    pred = torch.from_numpy(a[None, None].astype(np.float32))
    ref = torch.from_numpy(b[None, None].astype(np.float32))
    with warnings.catch_warnings():  # MONAI 1.5+ warns about its own internal get_mask_edges argument
        warnings.simplefilter("ignore", FutureWarning)
        value = compute_hausdorff_distance(
            pred, ref, include_background=True, percentile=95, spacing=[float(s) for s in spacing_zyx_mm]
        )
    return float(value.reshape(-1)[0])


def _masks(files: PatientFiles, phase: str, margin_mm: float) -> tuple[dict[str, sitk.Image], sitk.Image]:
    """Region masks of one patient and phase (tumour, margin, liver) and the tumour image (geometry)."""
    from hcc_exp.data.preprocess import margin_band

    tumour_path, liver_path = files.tumour_masks.get(phase), files.liver_masks.get(phase)
    if tumour_path is None:
        raise MissingFileError("tumour mask missing", patient_id=files.patient_id, path=files.expected_name("tumour", phase))
    if liver_path is None:
        raise MissingFileError("liver mask missing", patient_id=files.patient_id, path=files.expected_name("liver", phase))
    tumour = read_volume(tumour_path, patient_id=files.patient_id)
    liver = read_volume(liver_path, patient_id=files.patient_id)
    if same_grid(tumour, liver):
        raise GridMismatchError(
            f"liver mask not on the {phase} tumour mask's grid: {'; '.join(same_grid(tumour, liver))}",
            patient_id=files.patient_id,
            path=liver_path,
        )
    tumour = sitk.Cast(tumour > 0, sitk.sitkUInt8)
    liver = sitk.Cast(liver > 0, sitk.sitkUInt8)
    return {"tumour": tumour, "margin": margin_band(tumour, liver, margin_mm), "liver": liver}, tumour


def patient_agreement(
    files_a: PatientFiles, files_b: PatientFiles, phases: Sequence[str] = PHASES, margin_mm: float = DEFAULT_MARGIN_MM
) -> list[dict]:
    """Rows of ``agreement.csv`` for one patient present in both cohorts.

    Raises:
        GridMismatchError: the two annotations of a phase are not on the same grid.
    """
    rows = []
    for phase in phases:
        masks_a, ref_a = _masks(files_a, phase, margin_mm)
        masks_b, ref_b = _masks(files_b, phase, margin_mm)
        issues = same_grid(ref_a, ref_b)
        if issues:
            raise GridMismatchError(
                f"the two {phase} annotations are on different grids: {'; '.join(issues)}",
                patient_id=files_a.patient_id,
                path=files_b.tumour_masks[phase],
            )
        spacing_zyx = tuple(reversed(ref_a.GetSpacing()))
        for region in AGREEMENT_REGIONS:
            a = sitk.GetArrayViewFromImage(masks_a[region])
            b = sitk.GetArrayViewFromImage(masks_b[region])
            value = dice(a, b)
            status = "ok" if math.isfinite(value) else "both masks empty"
            hd = hd95_mm(a, b, spacing_zyx)
            if math.isfinite(value) and not math.isfinite(hd):
                status = "one mask empty"
            rows.append(
                {PATIENT_ID: files_a.patient_id, "phase": phase, "region": region, "dice": value, "hd95_mm": hd,
                 "status": status}
            )
    return rows


def _patient_ids(cohort_dir: Path) -> list[str]:
    from hcc_exp.data.validate import load_cohort_table

    return load_cohort_table(cohort_dir)[PATIENT_ID].astype(str).tolist()


def compare_cohorts(
    cohort_a: Path | str,
    cohort_b: Path | str,
    *,
    phases: Sequence[str] = PHASES,
    margin_mm: float = DEFAULT_MARGIN_MM,
    progress: bool = False,
) -> pd.DataFrame:
    """``agreement.csv`` rows for the union of both cohorts' patients (see the module docstring)."""
    cohort_a, cohort_b = Path(cohort_a), Path(cohort_b)
    ids_a, ids_b = _patient_ids(cohort_a), _patient_ids(cohort_b)
    shared = [p for p in ids_a if p in set(ids_b)]
    rows: list[dict] = []
    with patient_progress("agreement", enabled=progress) as bar:
        task = bar.add_task("", total=len(shared))
        for pid in shared:
            rows += patient_agreement(
                PatientFiles.resolve(cohort_a, pid, tuple(phases)),
                PatientFiles.resolve(cohort_b, pid, tuple(phases)),
                phases,
                margin_mm,
            )
            bar.advance(task)
    for pid, where in [(p, "only in A") for p in ids_a if p not in set(ids_b)] + [
        (p, "only in B") for p in ids_b if p not in set(ids_a)
    ]:
        rows.append({PATIENT_ID: pid, "phase": "", "region": "", "dice": math.nan, "hd95_mm": math.nan, "status": where})
    return pd.DataFrame(rows, columns=list(AGREEMENT_COLUMNS))


def summarise_agreement(frame: pd.DataFrame) -> pd.DataFrame:
    """Per phase and region: n, mean / SD / min / max of Dice and mean / SD of HD95 (mm)."""
    ok = frame[frame["status"] == "ok"]
    rows = []
    for phase in [p for p in PHASES if p in set(ok["phase"])]:
        for region in AGREEMENT_REGIONS:
            cell = ok[(ok["phase"] == phase) & (ok["region"] == region)]
            if cell.empty:
                continue
            d, h = cell["dice"].to_numpy(float), cell["hd95_mm"].to_numpy(float)
            rows.append(
                {
                    "phase": phase,
                    "region": region,
                    "n": len(cell),
                    "dice_mean": d.mean(),
                    "dice_sd": d.std(ddof=1) if d.size > 1 else math.nan,
                    "dice_min": d.min(),
                    "dice_max": d.max(),
                    "hd95_mm_mean": h.mean(),
                    "hd95_mm_sd": h.std(ddof=1) if h.size > 1 else math.nan,
                }
            )
    return pd.DataFrame(rows)


def agreement_markdown(frame: pd.DataFrame, summary: pd.DataFrame) -> str:
    lines = [
        "## Supplementary Table 2. Segmentation agreement (Dice, HD95)",
        "",
        "| Phase | Region | n | Dice mean (SD) | Dice range | HD95 mm mean (SD) |",
        "|---|---|---|---|---|---|",
    ]
    for _, r in summary.iterrows():
        lines.append(
            f"| {r['phase']} | {r['region']} | {int(r['n'])} | {r['dice_mean']:.3f} ({r['dice_sd']:.3f}) | "
            f"{r['dice_min']:.3f}-{r['dice_max']:.3f} | {r['hd95_mm_mean']:.2f} ({r['hd95_mm_sd']:.2f}) |"
        )
    unmatched = frame[frame["status"].isin(["only in A", "only in B"])]
    lines.append("")
    if len(unmatched):
        lines.append(
            "Patients in only one cohort (not compared): "
            + ", ".join(f"{r[PATIENT_ID]} ({r['status']})" for _, r in unmatched.iterrows())
        )
    other = frame[~frame["status"].isin(["ok", "only in A", "only in B"])]
    if len(other):
        lines.append(f"Comparisons without a value: {len(other)} (see agreement.csv, column status).")
    lines.append("")
    return "\n".join(lines)


def write_agreement(
    cohort_a: Path | str,
    cohort_b: Path | str,
    out_dir: Path | str,
    *,
    margin_mm: float = DEFAULT_MARGIN_MM,
    progress: bool = False,
) -> dict[str, Path]:
    """Compare two cohorts and write ``agreement.csv``, ``agreement_summary.csv`` and ``agreement.md``."""
    frame = compare_cohorts(cohort_a, cohort_b, margin_mm=margin_mm, progress=progress)
    summary = summarise_agreement(frame)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "agreement.csv", "summary": out / "agreement_summary.csv", "md": out / "agreement.md"}
    with atomic_path(paths["csv"]) as tmp:
        frame.to_csv(tmp, index=False)
    with atomic_path(paths["summary"]) as tmp:
        summary.to_csv(tmp, index=False)
    with atomic_path(paths["md"]) as tmp:
        tmp.write_text(agreement_markdown(frame, summary), encoding="utf-8")
    return paths
