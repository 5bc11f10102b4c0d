"""A run's ``predictions.csv`` joined with the cohort's labels, checked patient by patient."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hcc_exp.errors import RunFolderError
from hcc_exp.vocabulary import (
    ENDPOINTS,
    MVI_LABEL,
    MVI_PROBABILITY,
    PATIENT_ID,
    SPLIT,
    SPLITS,
    event_column,
    risk_column,
    time_column,
)

SCORE_COLUMNS: tuple[str, ...] = (*(risk_column(e) for e in ENDPOINTS), MVI_PROBABILITY)
PREDICTION_COLUMNS: tuple[str, ...] = (PATIENT_ID, SPLIT, *SCORE_COLUMNS)
LABEL_COLUMNS: tuple[str, ...] = (
    PATIENT_ID,
    SPLIT,
    *(time_column(e) for e in ENDPOINTS),
    *(event_column(e) for e in ENDPOINTS),
    MVI_LABEL,
)


def merge_predictions(
    predictions: pd.DataFrame, labels: pd.DataFrame, source: str = "predictions"
) -> pd.DataFrame:
    """Join predictions with labels on ``patient_id`` (one row per predicted patient).

    Raises:
        RunFolderError: a column is missing, a patient is duplicated, unknown to the labels,
            in a different split there, or has a missing / non-finite prediction.
    """
    missing = [c for c in PREDICTION_COLUMNS if c not in predictions.columns]
    if missing:
        raise RunFolderError(f"{source}: missing column(s) {missing}; expected {list(PREDICTION_COLUMNS)}")
    missing = [c for c in LABEL_COLUMNS if c not in labels.columns]
    if missing:
        raise RunFolderError(f"labels: missing column(s) {missing}")
    preds = predictions.copy()
    preds[PATIENT_ID] = preds[PATIENT_ID].astype(str)
    labs = labels.copy()
    labs[PATIENT_ID] = labs[PATIENT_ID].astype(str)
    duplicated = preds[PATIENT_ID][preds[PATIENT_ID].duplicated()].tolist()
    if duplicated:
        raise RunFolderError(f"{source}: patient(s) {duplicated[:5]} appear more than once")
    unknown = sorted(set(preds[PATIENT_ID]) - set(labs[PATIENT_ID]))
    if unknown:
        raise RunFolderError(f"{source}: patient(s) {unknown[:5]} are not in the labels")
    for column in SCORE_COLUMNS:
        values = pd.to_numeric(preds[column], errors="coerce")
        bad = preds[PATIENT_ID][~np.isfinite(values.to_numpy(dtype=float))].tolist()
        if bad:
            raise RunFolderError(
                f"{source}: column '{column}' is missing or not a finite number for patient(s) {bad[:5]}"
            )
        preds[column] = values.astype(float)
    merged = preds.merge(labs.drop(columns=[SPLIT]), on=PATIENT_ID, how="left", validate="one_to_one")
    label_split = labs.set_index(PATIENT_ID)[SPLIT].astype(str)
    moved = merged[PATIENT_ID][
        merged[SPLIT].astype(str).to_numpy() != label_split.loc[merged[PATIENT_ID]].to_numpy()
    ]
    if len(moved):
        raise RunFolderError(
            f"{source}: patient(s) {moved.tolist()[:5]} have a different split than in the labels"
        )
    unknown_split = sorted(set(merged[SPLIT].astype(str)) - set(SPLITS))
    if unknown_split:
        raise RunFolderError(f"{source}: unknown split(s) {unknown_split}; expected {list(SPLITS)}")
    return merged
