"""The records a TRIPOD+AI report reads from one run folder (absent pieces are None / empty).

``config.yaml`` / ``meta.json`` (preprocessing, model, training, code commit, data version),
``checkpoints/best.ckpt`` (parameter count), ``metrics.json`` and ``evaluation/``, the cache's
``labels.csv`` (and Table 1 built from it), an agreement folder if given, and the sweep spec when
the run belongs to a sweep (``runs/<sweep>/runs/<trial>``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from hcc_exp.errors import RunFolderError


@dataclass
class RunRecords:
    """Everything the report reads from one run folder (absent pieces are None / empty)."""

    run_dir: Path
    config: dict[str, Any]
    meta: dict[str, Any]
    metrics: dict[str, float]
    labels: pd.DataFrame | None
    predictions: pd.DataFrame | None
    table1: pd.DataFrame | None
    agreement: pd.DataFrame | None
    sweep_spec: dict[str, Any] | None
    n_parameters: int | None

    @property
    def evaluation(self) -> Path:
        return self.run_dir / "evaluation"

    def table(self, name: str) -> pd.DataFrame | None:
        path = self.evaluation / "tables" / f"{name}.csv"
        return pd.read_csv(path, keep_default_na=False) if path.is_file() else None

    def metric(self, key: str, digits: int = 3) -> str | None:
        value = self.metrics.get(key)
        return None if value is None else f"{value:.{digits}f}"


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except json.JSONDecodeError as exc:
        raise RunFolderError(f"{path}: not valid JSON: {exc}") from exc


def _count_parameters(checkpoint: Path) -> int | None:
    """Trainable parameters of the inference network restored from ``best.ckpt`` (None without one)."""
    if not checkpoint.is_file():
        return None
    from hcc_exp.inference.checkpoint import load_trained_network

    network = load_trained_network(checkpoint).network
    return int(sum(p.numel() for p in network.parameters() if p.requires_grad))


def read_run(run_dir: Path | str, agreement_dir: Path | str | None = None) -> RunRecords:
    """Collect a run folder's records for the report.

    Raises:
        RunFolderError: ``meta.json`` or ``config.yaml`` missing or malformed.
    """
    from hcc_exp.reporting.cohort_table import build_table1

    run_dir = Path(run_dir)
    for name in ("meta.json", "config.yaml"):
        if not (run_dir / name).is_file():
            raise RunFolderError(f"{run_dir} is not a run folder: {name} missing")
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise RunFolderError(f"{run_dir / 'config.yaml'}: not valid YAML: {exc}") from exc
    meta = _json(run_dir / "meta.json")
    metrics = {**_json(run_dir / "metrics.json"), **_json(run_dir / "evaluation" / "metrics.json")}
    metrics = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
    labels = None
    if meta.get("cache_dir"):
        from hcc_exp.run_folder import RunFolder

        try:
            labels = RunFolder(run_dir).open_cache().labels
        except RunFolderError:
            labels = None
    predictions_path = run_dir / "predictions.csv"
    predictions = pd.read_csv(predictions_path, dtype={"patient_id": str}) if predictions_path.is_file() else None
    agreement = None
    if agreement_dir is not None:
        path = Path(agreement_dir) / "agreement_summary.csv"
        if not path.is_file():
            raise RunFolderError(f"{path} missing: run `hcc-exp agreement` first")
        agreement = pd.read_csv(path)
    sweep_yaml = run_dir.parent.parent / "sweep.yaml"
    sweep_spec = yaml.safe_load(sweep_yaml.read_text(encoding="utf-8")) if sweep_yaml.is_file() else None
    return RunRecords(
        run_dir=run_dir,
        config=config,
        meta=meta,
        metrics=metrics,
        labels=labels,
        predictions=predictions,
        table1=build_table1(labels) if labels is not None else None,
        agreement=agreement,
        sweep_spec=sweep_spec,
        n_parameters=_count_parameters(run_dir / "checkpoints" / "best.ckpt"),
    )


def is_run_folder(path: Path | str) -> bool:
    """A run folder (meta.json + config.yaml) as opposed to a sweep folder (sweep.yaml / trials.csv)."""
    path = Path(path)
    return (path / "meta.json").is_file() and (path / "config.yaml").is_file() and not (path / "sweep.yaml").is_file()
