"""``hcc-exp cam``: Grad-CAM overlays and region shares of a trained run (the IO of the interpretability layer).

The pieces live in single-purpose modules: :mod:`~hcc_exp.interpretability.gradcam` (the maps),
:mod:`~hcc_exp.interpretability.regions` (region statistics, :func:`cam_region_table`),
:mod:`~hcc_exp.interpretability.overlay` (the PNG figures) and
:mod:`~hcc_exp.interpretability.region_report` (Supplementary Table 3D as Markdown / JSON).

:func:`run_cams` writes, under ``RUN_DIR/cam/``::

    <patient_id>/<head>.png     3 phases x (axial, coronal, sagittal) through the tumour centroid
    <patient_id>/cams.npz       raw maps, one (P, D, H, W) float32 array per head
    regions.csv                 one row per patient, head, phase and region (energy, hit rate, volume)
    regions_summary.csv         means over patients per split, head, phase (and "all") and region
    regions.md                  the Supplementary Table 3D layout (phases pooled)
    region_shares.json          the summary as nested JSON, with definitions
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from hcc_exp.config import ExperimentConfig
from hcc_exp.data.cache import PreprocessedCohort
from hcc_exp.errors import ConfigError, UnknownPatientError
from hcc_exp.inference.checkpoint import (
    TrainedNetwork,
    cache_spacing_zyx_mm,
    load_trained_network,
)
from hcc_exp.interpretability.gradcam import HEAD_TITLES, HEADS, grad_cams, patient_cams
from hcc_exp.interpretability.overlay import display_window, plot_cam_overlay
from hcc_exp.interpretability.region_report import region_shares_json, render_region_markdown
from hcc_exp.interpretability.regions import (
    ANALYSIS_REGIONS,
    PARTITION,
    REGION_TITLES,
    RING_MM,
    STAT_COLUMNS,
    TOP_FRACTION,
    aggregate_region_statistics,
    cam_region_table,
)
from hcc_exp.progress import patient_progress
from hcc_exp.run_folder import RunFolder
from hcc_exp.vocabulary import SPLIT_TITLES, SPLITS

__all__ = [
    "HEADS",
    "HEAD_TITLES",
    "UnknownPatientError",
    "cam_region_table",
    "display_window",
    "grad_cams",
    "patient_cams",
    "plot_cam_overlay",
    "region_shares_json",
    "render_region_markdown",
    "run_cams",
    "select_patients",
    "write_patient_cams",
]


def select_patients(cohort: PreprocessedCohort, patient_ids: Sequence[str] | None, max_patients: int) -> list[str]:
    known = cohort.patient_ids()
    if patient_ids:
        for pid in patient_ids:
            if str(pid) not in known:
                raise UnknownPatientError(f"not in the preprocessed cache {cohort.root}", patient_id=str(pid))
        return list(dict.fromkeys(str(pid) for pid in patient_ids))
    if max_patients < 1:
        raise ConfigError(f"max_patients must be >= 1, got {max_patients}")
    chosen: list[str] = []
    for split in SPLITS:
        chosen.extend(cohort.patient_ids(split)[:max_patients])
    return chosen


def _phase_index(cohort: PreprocessedCohort, config: ExperimentConfig) -> list[int]:
    missing = [p for p in config.phases if p not in cohort.phases]
    if missing:
        raise ConfigError(f"phases {missing} of the model are not in the cache {cohort.root} ({list(cohort.phases)})")
    return [cohort.phases.index(p) for p in config.phases]


def write_patient_cams(
    trained: TrainedNetwork, image: np.ndarray, masks: np.ndarray, patient_id: str, out_dir: Path
) -> dict[str, Path]:
    """One Grad-CAM overlay per head of a predicted patient, ``out_dir/cam_<head>.png``.

    The :data:`hcc_exp.inference.predict.Explainer` of ``hcc-exp predict``: ``image (P, D, H, W)``
    and ``masks (P, R, D, H, W)`` are the preprocessed arrays the network saw.

    Returns:
        ``{"cam_<head>": png}`` per head.
    """
    config = trained.config
    cams = patient_cams(trained.network, image, masks)
    written = {}
    for head in HEADS:
        written[f"cam_{head}"] = plot_cam_overlay(
            image,
            cams[head],
            masks,
            config.phases,
            tuple(config.preprocess.spacing_mm),
            Path(out_dir) / f"cam_{head}.png",
            title=f"Patient {patient_id}: Grad-CAM of the {HEAD_TITLES[head]} head",
        )
    return written


def run_cams(run_dir: Path | str, patient_ids: Sequence[str] | None = None, max_patients: int = 4) -> Path:
    """Grad-CAM overlays and region shares of a trained run.

    Args:
        run_dir: run folder (``checkpoints/best.ckpt``, ``meta.json`` with the cache).
        patient_ids: patients to explain; default the first ``max_patients`` of each split.
        max_patients: patients per split when none are named.

    Returns:
        The ``RUN_DIR/cam`` folder.

    Raises:
        RunFolderError: missing checkpoint, meta.json or cache.
        UnknownPatientError: a named patient is not in the cache.
    """
    run = RunFolder(Path(run_dir))
    trained = load_trained_network(run.best_checkpoint)
    config, network = trained.config, trained.network
    cohort = run.open_cache()
    phase_index = _phase_index(cohort, config)
    spacing = cache_spacing_zyx_mm(cohort, config)
    chosen = select_patients(cohort, patient_ids, max_patients)
    split_of = dict(zip(cohort.labels["patient_id"].astype(str), cohort.labels["split"].astype(str), strict=True))
    out_dir = run.cam_dir
    out_dir.mkdir(parents=True, exist_ok=True)

    frames = []
    with patient_progress("Grad-CAM") as bar:
        task = bar.add_task("patients", total=len(chosen))
        for pid in chosen:
            image, masks = cohort.load(pid)
            image = np.asarray(image[phase_index], dtype=np.float32)
            masks = np.asarray(masks[phase_index])
            cams = patient_cams(network, image, masks)
            patient_dir = out_dir / pid
            patient_dir.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(patient_dir / "cams.npz", **cams)
            for head, maps in cams.items():
                plot_cam_overlay(
                    image,
                    maps,
                    masks,
                    config.phases,
                    spacing,
                    patient_dir / f"{head}.png",
                    title=f"Patient {pid} ({SPLIT_TITLES.get(split_of[pid], split_of[pid])}): "
                    f"Grad-CAM of the {HEAD_TITLES[head]} head",
                )
            table = cam_region_table(cams, masks, config.phases, spacing)
            table.insert(0, "split", split_of[pid])
            table.insert(0, "patient_id", pid)
            frames.append(table)
            bar.advance(task)

    per_map = pd.concat(frames, ignore_index=True)
    per_map.to_csv(out_dir / "regions.csv", index=False, float_format="%.6g")
    summary = aggregate_region_statistics(per_map)
    summary.to_csv(out_dir / "regions_summary.csv", index=False, float_format="%.6g")
    layer = network.target_layer_name
    (out_dir / "regions.md").write_text(
        render_region_markdown(summary, target_layer=layer, top_fraction=TOP_FRACTION, ring_mm=RING_MM)
    , encoding="utf-8")
    payload = region_shares_json(
        summary,
        checkpoint=str(trained.checkpoint),
        target_layer=layer,
        top_fraction=TOP_FRACTION,
        ring_mm=RING_MM,
        spacing_zyx_mm=list(spacing),
        partition=list(PARTITION),
        regions={r: REGION_TITLES[r] for r in ANALYSIS_REGIONS},
        statistics=list(STAT_COLUMNS),
        patients={s: [p for p in chosen if split_of[p] == s] for s in SPLITS},
    )
    (out_dir / "region_shares.json").write_text(json.dumps(payload, indent=2, allow_nan=False), encoding="utf-8")
    return out_dir
