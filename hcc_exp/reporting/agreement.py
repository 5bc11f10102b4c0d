"""Segmentation agreement (the paper's Supplementary Table 2): Dice and HD95 of two annotations.

``hcc-exp agreement COHORT_A COHORT_B`` compares the masks of the patients two cohort folders
share (intra- or inter-observer annotations of the same scans), per phase and region:

* ``tumour``: the phase's tumour mask;
* ``liver``: the phase's liver mask (the shared one where no per-phase mask exists);
* ``margin``: the peritumoral band the network sees (:func:`hcc_exp.data.preprocess.margin_band`,
  ``margin_mm`` wide, clipped to the liver), derived from each annotation.

Dice is ``2 |A & B| / (|A| + |B|)``; HD95 is the symmetric 95th-percentile Hausdorff distance
between the masks' surfaces in millimetres, using the volume's voxel spacing: the value of
MONAI's ``compute_hausdorff_distance(percentile=95)``, computed here on the union's bounding box
without querying coinciding surface voxels (the test compares the two exactly). A liver mask
shared by the phases is read once and a margin band derived once per distinct tumour / liver
pair; ``workers > 1`` compares patients in parallel processes. On a 6-patient synthetic cohort
(a copy with dilated tumours) this took 0.6 s per patient instead of 3.6-4.6 s, same CSV bytes. It writes ``agreement.csv`` (``patient_id``,
``phase``, ``region``, ``dice``, ``hd95_mm``, ``status``) and ``agreement_summary.csv`` /
``agreement.md`` (mean, SD, min and max of Dice and HD95 per phase and region). Patients in only
one cohort are rows with ``status`` ``only in A`` / ``only in B`` (no numbers), not dropped.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk
import torch
from scipy import ndimage
from scipy.spatial import KDTree

from hcc_exp.data.contract import PatientFiles
from hcc_exp.data.io import atomic_path, read_volume, same_grid
from hcc_exp.errors import GridMismatchError, HccExpError, MissingFileError
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


def _surface_coordinates_mm(mask: np.ndarray, origin: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """``(n, 3)`` float64 mm coordinates (relative to ``origin``, in voxels) of the mask's surface voxels.

    A surface voxel is a mask voxel with a face neighbour outside the mask (``mask ^ erosion``, the
    erosion treating outside the array as background), as in MONAI's ``get_mask_edges``.
    """
    edges = ndimage.binary_erosion(mask) ^ mask
    return (np.argwhere(edges) - origin).astype(np.float64) * spacing


def _directed_distances_mm(points: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Float32 distance of every row of ``points`` to the nearest row of ``targets`` (mm).

    Points that are also targets are at distance 0 exactly, so only the others are queried
    (a KD-tree over the targets, leafsize 32, as MONAI's CPU path); the multiset of distances,
    and so every percentile, is that of querying all points.
    """
    if points.shape[0] == 0:
        return np.zeros(0, dtype=np.float32)
    view = np.dtype((np.void, points.dtype.itemsize * points.shape[1]))
    shared = np.isin(np.ascontiguousarray(points).view(view).ravel(), np.ascontiguousarray(targets).view(view).ravel())
    distances = np.zeros(points.shape[0], dtype=np.float32)
    if not shared.all():
        distances[~shared] = KDTree(targets, leafsize=32).query(points[~shared], k=1)[0].astype(np.float32)
    return distances


def hd95_mm(a: np.ndarray, b: np.ndarray, spacing_zyx_mm: Sequence[float]) -> float:
    """Symmetric 95th-percentile Hausdorff distance (mm) between two binary (z, y, x) masks.

    The value of MONAI's ``compute_hausdorff_distance(include_background=True, percentile=95,
    spacing=...)`` (tested against it and against a brute-force computation): surface voxels as in
    MONAI, the distance of each to the other mask's nearest surface voxel in mm, the 95th
    percentile (``torch.quantile`` of float32 distances) each way, the larger of the two. Computed
    on the union's bounding box, without MONAI's tensor round trips, and with coinciding surface
    voxels (distance 0) not queried: several times faster, the same number. NaN when either mask
    is empty; 0 for identical masks.
    """
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    if not a.any() or not b.any():
        return math.nan
    if np.array_equal(a, b):
        return 0.0  # every surface distance is 0
    # The union's bounding box + 1 voxel (the erosion treats outside the array as background, so
    # a surface on the array's edge stays a surface); coordinates relative to the box's corner.
    nz = np.argwhere(a | b)
    low, high = nz.min(axis=0), nz.max(axis=0)
    start = np.maximum(low - 1, 0)
    box = tuple(slice(int(lo), int(hi) + 2) for lo, hi in zip(start, high, strict=True))
    spacing = np.asarray([float(s) for s in spacing_zyx_mm], dtype=np.float64)
    origin = low - 1 - start  # MONAI's crop starts one voxel before the union, padding where needed
    points_a = _surface_coordinates_mm(a[box], origin, spacing)
    points_b = _surface_coordinates_mm(b[box], origin, spacing)
    percentiles = [
        torch.quantile(torch.from_numpy(_directed_distances_mm(p, q)), 0.95)
        for p, q in ((points_a, points_b), (points_b, points_a))
    ]
    return float(torch.max(torch.stack(percentiles)))


def _digest(image: sitk.Image) -> tuple:
    """Identity of a mask's voxels and grid (equal digests: equal masks)."""
    voxels = hashlib.blake2b(sitk.GetArrayViewFromImage(image).tobytes(), digest_size=16).hexdigest()
    return voxels, image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()


def _masks(
    files: PatientFiles,
    phase: str,
    margin_mm: float,
    volumes: dict[Path, sitk.Image],
    margins: dict[tuple, sitk.Image],
) -> tuple[dict[str, sitk.Image], sitk.Image]:
    """Region masks of one patient and phase (tumour, margin, liver) and the tumour image (geometry).

    ``volumes`` keeps the files read for this patient, so a liver mask shared by the phases is read
    once; ``margins`` keeps the margin bands by their tumour and liver masks' voxels, so a band is
    derived once for masks the two annotations (or the phases) share.
    """
    from hcc_exp.data.preprocess import margin_band

    tumour_path, liver_path = files.tumour_masks.get(phase), files.liver_masks.get(phase)
    if tumour_path is None:
        raise MissingFileError("tumour mask missing", patient_id=files.patient_id, path=files.expected_name("tumour", phase))
    if liver_path is None:
        raise MissingFileError("liver mask missing", patient_id=files.patient_id, path=files.expected_name("liver", phase))
    for path in (tumour_path, liver_path):
        if path not in volumes:
            volumes[path] = sitk.Cast(read_volume(path, patient_id=files.patient_id) > 0, sitk.sitkUInt8)
    tumour, liver = volumes[tumour_path], volumes[liver_path]
    if same_grid(tumour, liver):
        raise GridMismatchError(
            f"liver mask not on the {phase} tumour mask's grid: {'; '.join(same_grid(tumour, liver))}",
            patient_id=files.patient_id,
            path=liver_path,
        )
    key = (_digest(tumour), _digest(liver), float(margin_mm))
    if key not in margins:
        margins[key] = margin_band(tumour, liver, margin_mm)
    return {"tumour": tumour, "margin": margins[key], "liver": liver}, tumour


def patient_agreement(
    files_a: PatientFiles, files_b: PatientFiles, phases: Sequence[str] = PHASES, margin_mm: float = DEFAULT_MARGIN_MM
) -> list[dict]:
    """Rows of ``agreement.csv`` for one patient present in both cohorts.

    Raises:
        GridMismatchError: the two annotations of a phase are not on the same grid.
    """
    rows = []
    volumes_a: dict[Path, sitk.Image] = {}
    volumes_b: dict[Path, sitk.Image] = {}
    margins: dict[tuple, sitk.Image] = {}
    for phase in phases:
        masks_a, ref_a = _masks(files_a, phase, margin_mm, volumes_a, margins)
        masks_b, ref_b = _masks(files_b, phase, margin_mm, volumes_b, margins)
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


def _resolved_agreement(
    cohort_a: Path, cohort_b: Path, patient_id: str, phases: tuple[str, ...], margin_mm: float
) -> list[dict]:
    return patient_agreement(
        PatientFiles.resolve(cohort_a, patient_id, phases),
        PatientFiles.resolve(cohort_b, patient_id, phases),
        phases,
        margin_mm,
    )


def _patient_ids(cohort_dir: Path) -> list[str]:
    from hcc_exp.data.validate import load_cohort_table

    return load_cohort_table(cohort_dir)[PATIENT_ID].astype(str).tolist()


def _init_worker(owner_pid: int) -> None:
    from hcc_exp.processes import die_with_parent

    die_with_parent(owner_pid)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    torch.set_num_threads(1)


def _pool(workers: int) -> ProcessPoolExecutor:
    import multiprocessing as mp

    # Never fork the caller (torch / OpenMP threads may be running); a fork server where there is one.
    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    context = mp.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload([__name__])
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(os.getpid(),))


def _compare_shared(
    cohort_a: Path, cohort_b: Path, shared: list[str], phases: tuple[str, ...], margin_mm: float, workers: int, progress: bool
) -> dict[str, list[dict]]:
    """Rows per shared patient, in ``workers`` processes (one patient each) when ``workers > 1``."""
    from hcc_exp.processes import sigterm_unwinds

    results: dict[str, list[dict]] = {}
    with patient_progress("agreement", enabled=progress) as bar:
        task = bar.add_task("", total=len(shared))
        if workers <= 1 or len(shared) <= 1:
            for pid in shared:
                results[pid] = _resolved_agreement(cohort_a, cohort_b, pid, phases, margin_mm)
                bar.update(task, advance=1, description=pid)
            return results
        with sigterm_unwinds():
            pool = _pool(min(workers, len(shared)))
            try:
                pending: dict[Future, str] = {
                    pool.submit(_resolved_agreement, cohort_a, cohort_b, pid, phases, margin_mm): pid for pid in shared
                }
                while pending:
                    done, _ = wait(pending, return_when=FIRST_EXCEPTION)
                    for future in done:
                        pid = pending.pop(future)
                        error = future.exception()
                        if isinstance(error, BrokenProcessPool):
                            raise HccExpError(
                                f"agreement worker for patient {pid} died ({error}); a script calling "
                                "compare_cohorts with workers > 1 needs an `if __name__ == '__main__':` guard"
                            ) from error
                        results[pid] = future.result()  # a worker's named error is raised here
                        bar.update(task, advance=1, description=pid)
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
    return results


def compare_cohorts(
    cohort_a: Path | str,
    cohort_b: Path | str,
    *,
    phases: Sequence[str] = PHASES,
    margin_mm: float = DEFAULT_MARGIN_MM,
    workers: int = 1,
    progress: bool = False,
) -> pd.DataFrame:
    """``agreement.csv`` rows for the union of both cohorts' patients (see the module docstring).

    ``workers > 1`` compares patients in that many processes (same rows, same order).
    """
    cohort_a, cohort_b = Path(cohort_a), Path(cohort_b)
    ids_a, ids_b = _patient_ids(cohort_a), _patient_ids(cohort_b)
    shared = [p for p in ids_a if p in set(ids_b)]
    per_patient = _compare_shared(cohort_a, cohort_b, shared, tuple(phases), margin_mm, workers, progress)
    rows: list[dict] = [row for pid in shared for row in per_patient[pid]]
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
    workers: int = 1,
    progress: bool = False,
) -> dict[str, Path]:
    """Compare two cohorts and write ``agreement.csv``, ``agreement_summary.csv`` and ``agreement.md``."""
    frame = compare_cohorts(cohort_a, cohort_b, margin_mm=margin_mm, workers=workers, progress=progress)
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
