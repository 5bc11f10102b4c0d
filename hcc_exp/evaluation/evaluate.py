"""``hcc-exp evaluate RUN_DIR``: every statistic the paper reports, for every split and task.

:func:`evaluate_predictions` takes a predictions table and the labels, computes
(with the pure modules of this package) and writes into ``out_dir``::

    metrics.json        flat "<split>/<task>/<metric>" floats (only statistics that could be computed)
    reasons.json        "<split>/<task>/<metric>" -> why it could not be computed
    tables/             table_a_mvi, table_b_survival, table_4_baselines (.csv and .md),
                        calibration_<os|rfs>.csv, reliability_mvi.csv, dca_<os|rfs|mvi>.csv
    figures/            km_<os|rfs>.png, roc_<os|rfs|mvi>.png, calibration_<os|rfs>.png,
                        reliability_mvi.png, dca_<os|rfs|mvi>.png

:func:`evaluate_run` reads a run folder (``predictions.csv``, ``meta.json``), the
labels from the preprocessed cache and, for synthetic cohorts, the oracle, and
writes ``RUN_DIR/evaluation/``.

Conventions: ``os_risk`` / ``rfs_risk`` are Cox linear predictors (log relative
hazard, higher = worse); everything fitted (Youden threshold, median risk cut,
Breslow baseline hazard, IPCW censoring distribution) is fitted on the training
split and applied unchanged to the others.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import yaml

from hcc_exp.config import EvaluationConfig, build_config
from hcc_exp.data.cache import PreprocessedCohort
from hcc_exp.data.contract import ORACLE_CSV
from hcc_exp.data.io import staged_folder
from hcc_exp.errors import ConfigError, RunFolderError
from hcc_exp.evaluation import plots
from hcc_exp.evaluation.common import NotEstimable
from hcc_exp.evaluation.decision_curves import BINARY_THRESHOLDS, SURVIVAL_THRESHOLDS
from hcc_exp.evaluation.endpoint import EndpointArtefacts, evaluate_endpoint
from hcc_exp.evaluation.extended import write_extended
from hcc_exp.evaluation.mvi import MviArtefacts, evaluate_mvi
from hcc_exp.evaluation.oracle import oracle_metrics, oracle_shares
from hcc_exp.evaluation.predictions import LABEL_COLUMNS, PREDICTION_COLUMNS, merge_predictions
from hcc_exp.evaluation.record import MetricRecord
from hcc_exp.evaluation.risk_model import RiskModel
from hcc_exp.evaluation.tables import write_tables
from hcc_exp.progress import patient_progress
from hcc_exp.run_folder import (
    EVALUATION_DIR,
    EVALUATION_FIGURES_DIR,
    EVALUATION_REASONS_JSON,
    EVALUATION_TABLES_DIR,
    METRICS_JSON,
    RunFolder,
    resolve_recorded_path,
)
from hcc_exp.vocabulary import ENDPOINT_TITLES, ENDPOINTS

__all__ = [
    "EVALUATION_DIR",
    "LABEL_COLUMNS",
    "PREDICTION_COLUMNS",
    "evaluate_predictions",
    "evaluate_run",
    "merge_predictions",
    "run_oracle",
]



def _add_oracle(record: MetricRecord, oracle: dict[str, float]) -> None:
    """The oracle's own metrics and the model's share of them (not estimable with a reason)."""
    for key, value in oracle.items():
        record.put(key, value)
    for key, share in oracle_shares(record.metrics, oracle).items():
        if isinstance(share, NotEstimable):
            record.miss(key, share.reason)
        else:
            record.put(key, share)


# --------------------------------------------------------------------------- entry points
def evaluate_predictions(
    predictions: pd.DataFrame,
    labels: pd.DataFrame,
    cfg: EvaluationConfig,
    out_dir: Path,
    oracle: dict[str, float] | None = None,
    *,
    dca_thresholds: tuple[float, ...] | None = None,
    figures: bool = True,
    progress: Callable[[str], None] | None = None,
    extend: Callable[[Path], dict[str, float | str]] | None = None,
) -> dict[str, float | str]:
    """Compute and write every table, figure and metric of the paper's evaluation.

    Args:
        predictions: ``patient_id, split, os_risk, rfs_risk, mvi_prob`` (one row per patient).
        labels: ``labels.csv`` rows (outcomes and clinical columns).
        cfg: horizons, bootstrap resamples, KM truncation, seed.
        out_dir: folder written: ``metrics.json``, ``reasons.json``, ``tables/``, ``figures/``. It is
            built in a staging folder beside it and replaces ``out_dir`` (and whatever was in it)
            only when complete; a failure leaves ``out_dir`` as it was.
        oracle: optional ``"<split>/<task>/oracle_c_index"`` / ``"<split>/mvi/oracle_auc"``
            values (:func:`oracle_metrics`); adds ``oracle_share = (model - 0.5) / (oracle - 0.5)``.
        dca_thresholds: threshold probabilities of every decision curve; default
            :data:`SURVIVAL_THRESHOLDS` (0-0.95 by 0.05: survival DCA in dcurves costs lifelines
            Kaplan-Meier fits per threshold) and :data:`BINARY_THRESHOLDS` (0-0.99 by 0.01) for MVI.
        figures: write the PNGs (False: numbers and tables only, e.g. for many sweep runs).
        progress: optional callback told the name of each step as it starts.
        extend: optional step given the staging folder once ``metrics.json`` / ``reasons.json`` are
            in it (the extended statistics of :func:`~hcc_exp.evaluation.extended.write_extended`),
            so its files are published with the rest, or not at all; returns its keys.

    Returns:
        Every metric key: a float where computed, else the string ``"not estimable: <reason>"``.
    """
    out_dir = Path(out_dir)
    step = progress or (lambda _name: None)
    data = merge_predictions(predictions, labels)
    record = MetricRecord()
    horizons = [float(h) for h in cfg.horizons_days]

    survival: dict[str, EndpointArtefacts] = {}
    for endpoint in ENDPOINTS:
        step(f"{endpoint.upper()} statistics")
        survival[endpoint] = evaluate_endpoint(data, endpoint, cfg, record, dca_thresholds or SURVIVAL_THRESHOLDS)
    step("MVI statistics")
    mvi = evaluate_mvi(data, record, dca_thresholds or BINARY_THRESHOLDS)
    if oracle:
        _add_oracle(record, oracle)

    # Written into a staging folder that replaces out_dir only when complete (issue 13 item 4).
    with staged_folder(out_dir) as stage:
        step("tables")
        (stage / EVALUATION_TABLES_DIR).mkdir()
        write_tables(record, survival, mvi, horizons, stage / EVALUATION_TABLES_DIR)
        if figures:
            step("figures")
            _write_figures(survival, mvi, cfg, stage / EVALUATION_FIGURES_DIR)
        for name, values in ((METRICS_JSON, record.metrics), (EVALUATION_REASONS_JSON, record.reasons)):
            (stage / name).write_text(json.dumps(dict(sorted(values.items())), indent=1), encoding="utf-8")
        extra = extend(stage) if extend is not None else {}
    result: dict[str, float | str] = {k: f"not estimable: {v}" for k, v in record.reasons.items()}
    result.update(record.metrics)
    return {**dict(sorted(result.items())), **extra}


def _write_figures(
    survival: dict[str, EndpointArtefacts], mvi: MviArtefacts, cfg: EvaluationConfig, figures_dir: Path
) -> None:
    for endpoint in ENDPOINTS:
        art = survival[endpoint]
        title = ENDPOINT_TITLES[endpoint]
        plots.plot_kaplan_meier(art.km, endpoint, figures_dir / f"km_{endpoint}.png", cfg.km_truncate_days)
        plots.plot_time_dependent_roc(art.roc, endpoint, figures_dir / f"roc_{endpoint}.png")
        plots.plot_survival_calibration(art.calibration, endpoint, figures_dir / f"calibration_{endpoint}.png")
        plots.plot_decision_curves(
            art.dca, f"{title}: decision curves (event by horizon)", figures_dir / f"dca_{endpoint}.png"
        )
    plots.plot_binary_roc(mvi.roc, figures_dir / "roc_mvi.png")
    plots.plot_reliability(mvi.reliability, figures_dir / "reliability_mvi.png")
    plots.plot_decision_curves(mvi.dca, "Microvascular invasion: decision curves", figures_dir / "dca_mvi.png")


def _run_config(run_dir: Path) -> EvaluationConfig:
    config_path = RunFolder(run_dir).config_yaml
    if not config_path.is_file():
        return EvaluationConfig()
    try:
        raw = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
        return build_config(raw, source=str(config_path)).evaluation
    except (yaml.YAMLError, ConfigError) as exc:
        raise RunFolderError(f"{config_path}: cannot read the run's config: {exc}") from exc


def run_oracle(run_dir: Path, meta: dict) -> dict[str, float] | None:
    """:func:`~hcc_exp.evaluation.oracle.oracle_metrics` of a run's cohort, or None when it has no
    ``oracle.csv`` (a real cohort).

    Args:
        run_dir: the run folder (relative paths in ``meta`` are resolved from it).
        meta: its ``meta.json`` (``cohort_dir``, ``cache_dir``).
    """
    if not meta.get("cohort_dir") or not meta.get("cache_dir"):
        return None
    oracle_path = resolve_recorded_path(str(meta["cohort_dir"]), run_dir) / ORACLE_CSV
    if not oracle_path.is_file():
        return None
    labels = PreprocessedCohort.open(resolve_recorded_path(str(meta["cache_dir"]), run_dir)).labels
    return oracle_metrics(pd.read_csv(oracle_path, dtype={"patient_id": str}), labels)


def evaluate_run(
    run_dir: Path,
    cfg: EvaluationConfig | None = None,
    *,
    dca_thresholds: tuple[float, ...] | None = None,
    show_progress: bool = True,
) -> dict[str, float | str]:
    """Evaluate a run folder and write ``RUN_DIR/evaluation/``.

    Args:
        run_dir: a run folder with ``predictions.csv`` and ``meta.json`` (``cache_dir``,
            optionally ``cohort_dir`` holding ``oracle.csv``).
        cfg: evaluation settings; default: the ``evaluation`` section of ``RUN_DIR/config.yaml``
            (or the defaults when the run has none).
        dca_thresholds: as :func:`evaluate_predictions`.
        show_progress: show a Rich spinner with the current step.

    Returns:
        As :func:`evaluate_predictions`.

    Raises:
        RunFolderError: a file is missing or malformed (named in the message).
    """
    run_dir = Path(run_dir)
    run = RunFolder(run_dir)
    run.require(run.meta_json, run.predictions_csv)
    meta = run.read_meta()
    cfg = cfg or _run_config(run_dir)
    cache = run.open_cache()
    labels = cache.labels
    predictions = run.read_predictions()
    oracle = run_oracle(run_dir, meta)
    out_dir = run.evaluation_dir
    # Subgroup / calibration-slope / Brier statistics, radiomics and combined baselines (extended.py).
    risk_model = RiskModel.load(run.risk_model_json) if run.risk_model_json.is_file() else None
    if not show_progress:
        return evaluate_predictions(
            predictions, labels, cfg, out_dir, oracle, dca_thresholds=dca_thresholds,
            extend=lambda stage: write_extended(stage, predictions, labels, cache, risk_model, cfg),
        )  # fmt: skip
    with patient_progress("evaluate:") as bar:  # the package's one bar style, one step per statistic group
        task = bar.add_task("loading", total=len(ENDPOINTS) + 4)  # endpoints, MVI, tables, figures, extended
        return evaluate_predictions(
            predictions,
            labels,
            cfg,
            out_dir,
            oracle,
            dca_thresholds=dca_thresholds,
            progress=lambda name: bar.update(task, description=name, advance=1),
            extend=lambda stage: write_extended(
                stage, predictions, labels, cache, risk_model, cfg, progress=lambda name: bar.update(task, description=name)
            ),
        )
