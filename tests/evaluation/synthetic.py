"""Synthetic predictions + labels with a known signal, for the evaluation tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hcc_exp.vocabulary import SPLITS


def synthetic_predictions_and_labels(
    n_per_split: int = 30, seed: int = 0, signal: float = 1.2
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``(predictions, labels, oracle)`` for ``3 * n_per_split`` patients.

    A latent log-hazard ``x`` drives exponential OS/RFS times (median about 2 years), MVI
    (logistic) and, more weakly, the clinical stages; the model sees ``x`` plus noise, the
    oracle sees ``x`` itself. Censoring is uniform over 0.5-6 years.
    """
    rng = np.random.default_rng(seed)
    n = 3 * n_per_split
    x = rng.normal(size=n)
    os_event_time = rng.exponential(900.0 * np.exp(-signal * x))
    rfs_event_time = np.minimum(os_event_time, rng.exponential(500.0 * np.exp(-signal * x)))
    censor = rng.uniform(180.0, 2200.0, n)
    os_time = np.maximum(np.round(np.minimum(os_event_time, censor)), 1.0)
    rfs_time = np.minimum(np.maximum(np.round(np.minimum(rfs_event_time, censor)), 1.0), os_time)
    os_event = (os_event_time <= censor).astype(int)
    rfs_event = ((rfs_event_time <= censor) | (os_event == 1)).astype(int)
    mvi_p = 1.0 / (1.0 + np.exp(-(1.5 * x - 0.3)))
    mvi = (rng.uniform(size=n) < mvi_p).astype(int)
    stage = np.clip(np.round(1.5 + 0.6 * x + rng.normal(scale=1.0, size=n)), 0, 4).astype(int)
    ids = [f"P{i:03d}" for i in range(n)]
    split = np.repeat(SPLITS, n_per_split)
    labels = pd.DataFrame(
        {
            "patient_id": ids,
            "institution": np.where(split == "train", "I", np.where(split == "internal", "II", "VI")),
            "split": split,
            "os_time_days": os_time,
            "os_event": os_event,
            "rfs_time_days": rfs_time,
            "rfs_event": rfs_event,
            "mvi": mvi,
            "bclc": np.array(["0", "A", "B", "C", "D"])[stage],
            "tnm": np.array(["I", "I", "II", "III", "IV"])[stage],
            "afp_ng_ml": np.round(np.exp(3 + 0.5 * x + rng.normal(size=n)), 1),
            "tumour_size_mm": np.round(35 + 8 * x + rng.normal(scale=10, size=n), 1),
            "age": rng.integers(35, 80, n),
            "sex": rng.choice(["F", "M"], n),
        }
    )
    noisy = x + rng.normal(scale=0.6, size=n)
    predictions = pd.DataFrame(
        {
            "patient_id": ids,
            "split": split,
            "os_risk": signal * noisy,
            "rfs_risk": signal * (noisy + rng.normal(scale=0.3, size=n)),
            "mvi_prob": 1.0 / (1.0 + np.exp(-(1.5 * noisy - 0.3))),
        }
    )
    oracle = pd.DataFrame(
        {
            "patient_id": ids,
            "split": split,
            "os_linear_predictor": signal * x,
            "rfs_linear_predictor": signal * x,
            "mvi_probability": mvi_p,
        }
    )
    return predictions, labels, oracle
