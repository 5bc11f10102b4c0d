"""A fake ablation sweep on disk: a tiny cache (labels only), run folders and trials.csv.

The arms differ in a planted way: ``full`` predicts from the true survival time with
little noise, ``no_jitter`` with more noise, ``no_venous`` from noise only. Metrics in
each run's ``metrics.json`` are computed from its predictions with scikit-survival and
scikit-learn, exactly as a real run would report them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import matplotlib.image
import numpy as np
import pandas as pd
import yaml
from sklearn.metrics import f1_score, roc_auc_score
from sksurv.metrics import concordance_index_censored

from hcc_exp.sweeps.folder import SweepFolder
from hcc_exp.sweeps.spec import SweepSpec

SPLITS = ("train", "internal", "external")
NOISE_SD = {"full": 0.25, "no_jitter": 0.9, "no_venous": None}
"""Risk = -log(time) standardised + noise * N(0, 1); None = noise only (no signal)."""
ORACLE_SHARE = {"full": 0.9, "no_jitter": 0.7, "no_venous": 0.4}


def write_label_cache(root: Path, n_patients: int = 60, seed: int = 0) -> tuple[Path, pd.DataFrame]:
    """A cache folder holding only ``manifest.json`` and ``labels.csv`` (enough for PreprocessedCohort.open)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_patients):
        os_time = int(rng.integers(60, 2500))
        os_event = int(rng.random() < 0.6)
        rfs_time = int(max(1, os_time - rng.integers(0, 400)))
        rfs_event = int(os_event or rng.random() < 0.4)
        rows.append(
            {
                "patient_id": f"P{i:03d}",
                "institution": "I",
                "split": SPLITS[i % 3],
                "os_time_days": os_time,
                "os_event": os_event,
                "rfs_time_days": rfs_time,
                "rfs_event": rfs_event,
                "mvi": int(rng.random() < 0.45),
            }
        )
    labels = pd.DataFrame(rows)
    key = "fakeparams-fakeinput"
    cache = root / key
    cache.mkdir(parents=True)
    labels.to_csv(cache / "labels.csv", index=False)
    manifest = {"cache_key": key, "phases": ["arterial", "venous", "delayed"], "shape_zyx": [8, 16, 16], "patients": {}}
    (cache / "manifest.json").write_text(json.dumps(manifest))
    return cache, labels


def _risk(time: np.ndarray, noise_sd: float | None, rng: np.random.Generator) -> np.ndarray:
    signal = -np.log(time)
    signal = (signal - signal.mean()) / signal.std()
    if noise_sd is None:
        return rng.normal(size=time.size)
    return signal + noise_sd * rng.normal(size=time.size)


def _mvi_prob(mvi: np.ndarray, noise_sd: float | None, rng: np.random.Generator) -> np.ndarray:
    logit = (2.0 * mvi - 1.0) * (0.0 if noise_sd is None else 1.5 / (0.5 + noise_sd)) + rng.normal(size=mvi.size)
    return 1.0 / (1.0 + np.exp(-logit))


def run_metrics(predictions: pd.DataFrame, labels: pd.DataFrame) -> dict[str, float]:
    """``<split>/<task>/<metric>`` from predictions, with the reference libraries."""
    merged = predictions.merge(labels, on=["patient_id", "split"])
    metrics: dict[str, float] = {}
    for split in SPLITS:
        part = merged[merged["split"] == split]
        for task in ("os", "rfs"):
            metrics[f"{split}/{task}/c_index"] = float(
                concordance_index_censored(
                    part[f"{task}_event"].astype(bool).to_numpy(), part[f"{task}_time_days"].to_numpy(float),
                    part[f"{task}_risk"].to_numpy(float),
                )[0]
            )  # fmt: skip
        predicted = (part["mvi_prob"] >= 0.5).astype(int)
        metrics[f"{split}/mvi/f1"] = float(f1_score(part["mvi"], predicted, zero_division=0))
        metrics[f"{split}/mvi/auc"] = float(roc_auc_score(part["mvi"], part["mvi_prob"]))
    return metrics


@dataclass
class FakeSweep:
    root: Path
    cache_dir: Path
    labels: pd.DataFrame
    metrics: dict[tuple[str, int], dict[str, float]] = field(default_factory=dict)
    predictions: dict[tuple[str, int], pd.DataFrame] = field(default_factory=dict)
    trials: pd.DataFrame | None = None


def write_fake_sweep(
    root: Path,
    arms: dict[str, tuple[int, ...]] | None = None,
    *,
    failed: dict[str, int] | None = None,
    pruned: dict[str, int] | None = None,
    n_patients: int = 60,
    evaluated_arms: tuple[str, ...] = ("full", "no_jitter", "no_venous"),
) -> FakeSweep:
    """Write ``root/sweep.yaml``, ``root/trials.csv`` and ``root/runs/<n>/`` run folders.

    Args:
        arms: arm -> seeds completed (default: 3 arms x seeds 0, 1, 2).
        failed, pruned: arm -> number of FAIL / PRUNED trials (no run folder with metrics).
        evaluated_arms: arms whose runs get ``evaluation/metrics.json`` (oracle share) and a PNG.
    """
    arms = arms or {"full": (0, 1, 2), "no_jitter": (0, 1, 2), "no_venous": (0, 1, 2)}
    failed = {"no_jitter": 1} if failed is None else failed
    pruned = {"no_venous": 1} if pruned is None else pruned
    cache_dir, labels = write_label_cache(root.parent / f"{root.name}-cache", n_patients)
    sweep = FakeSweep(root, cache_dir, labels)
    root.mkdir(parents=True)
    layout = SweepFolder(root)
    spec = SweepSpec(
        name=root.name, method="grid", metric={"name": "internal/os/c_index", "goal": "maximize"}, base=None,
        arms=[{"name": arm} for arm in arms], seeds=sorted({s for seeds in arms.values() for s in seeds}),
    )  # fmt: skip
    layout.write_spec(spec, {}, source="tests/reporting/fake_sweep.py")
    trials = []
    number = 0
    time_os = labels["os_time_days"].to_numpy(float)
    time_rfs = labels["rfs_time_days"].to_numpy(float)
    for arm, seeds in arms.items():
        for seed in seeds:
            rng = np.random.default_rng([seed, list(NOISE_SD).index(arm) if arm in NOISE_SD else 99])
            noise = NOISE_SD.get(arm, 0.5)
            predictions = pd.DataFrame(
                {
                    "patient_id": labels["patient_id"],
                    "split": labels["split"],
                    "os_risk": _risk(time_os, noise, rng),
                    "rfs_risk": _risk(time_rfs, noise, rng),
                    "mvi_prob": _mvi_prob(labels["mvi"].to_numpy(float), noise, rng),
                }
            )
            metrics = run_metrics(predictions, labels)
            run_dir = layout.runs_dir / str(number)
            (run_dir / "evaluation").mkdir(parents=True)
            predictions.to_csv(run_dir / "predictions.csv", index=False)
            (run_dir / "metrics.json").write_text(json.dumps(metrics))
            meta = {
                "run_id": f"{root.name}-{number}",
                "arm": arm,
                "seed": seed,
                "sweep": root.name,
                "cohort_dir": str(root.parent / "cohort"),
                "cache_dir": str(cache_dir),
            }
            (run_dir / "meta.json").write_text(json.dumps(meta))
            (run_dir / "config.yaml").write_text(yaml.safe_dump({"seed": seed}))
            if arm in evaluated_arms:
                evaluation = {f"{s}/os/oracle_share": ORACLE_SHARE.get(arm, 0.5) + 0.01 * seed for s in SPLITS}
                evaluation["internal/os/c_index"] = -1.0  # must not override the training metric
                (run_dir / "evaluation" / "metrics.json").write_text(json.dumps(evaluation))
                image = np.linspace(0, 1, 16 * 24 * 3).reshape(16, 24, 3)
                (run_dir / "evaluation" / "external").mkdir()
                matplotlib.image.imsave(run_dir / "evaluation" / "external" / "km_os.png", image)
            sweep.metrics[(arm, seed)] = metrics
            sweep.predictions[(arm, seed)] = predictions
            trials.append(
                {
                    "number": number, "arm": arm, "seed": seed, "state": "COMPLETE",
                    "value": metrics["internal/os/c_index"], "run_dir": str(run_dir), "duration_s": 60.0 + seed,
                }
            )  # fmt: skip
            number += 1
        for state, how_many in (("FAIL", failed.get(arm, 0)), ("PRUNED", pruned.get(arm, 0))):
            for k in range(how_many):
                run_dir = layout.runs_dir / str(number)
                run_dir.mkdir(parents=True)
                trials.append(
                    {
                        "number": number, "arm": arm, "seed": 100 + k, "state": state,
                        "value": np.nan, "run_dir": str(run_dir), "duration_s": 5.0,
                    }
                )  # fmt: skip
                number += 1
    sweep.trials = pd.DataFrame(trials)
    layout.write_trials(SimpleNamespace(retry_of=None, error=None, params={}, **row) for row in trials)
    return sweep
