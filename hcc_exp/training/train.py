"""``train(config) -> TrainResult``: the one training entry point.

The CLI (``hcc-exp train``), the DVC ``train`` stage and every sweep trial call this
function. It validates and preprocesses the cohort when needed (both are cached
no-ops otherwise), trains with Lightning, and writes a run folder::

    runs/<run_id>/config.yaml, meta.json, metrics.json, predictions.csv,
                  checkpoints/best.ckpt, logs/metrics.csv
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger
from sklearn.metrics import roc_auc_score

import hcc_exp
from hcc_exp.config import ExperimentConfig
from hcc_exp.data.cache import PreprocessedCohort
from hcc_exp.data.datamodule import HccDataModule
from hcc_exp.errors import RunFolderError
from hcc_exp.interpretability.risk_model import RISK_MODEL_JSON, fit_risk_model
from hcc_exp.tracking import Tracker, TrackingCallback, data_version, git_state, make_tracker
from hcc_exp.training.module import MultiTaskModule, concat_outputs, epoch_metrics

SPLITS = ("train", "internal", "external")
PREDICTIONS_CSV = "predictions.csv"
METRICS_JSON = "metrics.json"
META_JSON = "meta.json"
CONFIG_YAML = "config.yaml"
BEST_CHECKPOINT = Path("checkpoints") / "best.ckpt"
MONITOR = "val/loss"


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes:
        run_dir: the run folder.
        metrics: flat metrics (``"<split>/<task>/<metric>"``, ``"best_epoch"``, ...).
        best_epoch: epoch (0-based) of the best checkpoint by validation loss.
        epochs_trained: epochs actually run (early stopping may end sooner).
        seconds: wall time of the fit.
    """

    run_dir: Path
    metrics: dict[str, float]
    best_epoch: int
    epochs_trained: int
    seconds: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def validation_memo_dir() -> Path:
    """Where passed validations are remembered: ``$HCC_EXP_CACHE_DIR/validated``, by default
    ``$XDG_CACHE_HOME/hcc-exp/validated`` (``~/.cache/hcc-exp/validated``).

    Outside the cohort and the preprocessed cache on purpose: both are DVC-tracked, and a
    marker inside them would change their hash and re-run the pipeline.
    """
    root = os.environ.get("HCC_EXP_CACHE_DIR")
    if not root:
        root = str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hcc-exp")
    return Path(root) / "validated"


def prepare_cohort(config: ExperimentConfig, *, progress: bool = True) -> PreprocessedCohort:
    """Validate the cohort and return its preprocessed cache (building it if missing).

    Validation reads every volume (about a minute for the 388-patient default), so a
    passed validation is remembered in :func:`validation_memo_dir`, keyed by the hash of
    the cohort's bytes and of the validator's source: a sweep validates once, and any
    change to a file, or to the rules, validates again.
    """
    from hcc_exp.data.io import atomic_path
    from hcc_exp.data.preprocess import hash_cohort_inputs, preprocess_cohort
    from hcc_exp.data.validate import require_valid

    input_hash = hash_cohort_inputs(config.data.cohort_dir)
    marker = validation_memo_dir() / f"{input_hash[:32]}-{_validator_hash()}"
    if not marker.is_file():
        require_valid(config.data.cohort_dir, progress=progress)
        with atomic_path(marker) as tmp:
            tmp.write_text(json.dumps({"cohort_dir": str(Path(config.data.cohort_dir).resolve())}) + "\n", encoding="utf-8")
    return preprocess_cohort(
        config.data.cohort_dir, config.data.cache_dir, config.preprocess, progress=progress, input_hash=input_hash
    )


def _validator_hash() -> str:
    import hashlib

    from hcc_exp.data import contract, validate

    digest = hashlib.blake2b(digest_size=8)
    for module in (contract, validate):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()


def train(
    config: ExperimentConfig,
    *,
    run_dir: Path | None = None,
    tracker: Tracker | None = None,
    callbacks: list[Callback] | None = None,
    cohort: PreprocessedCohort | None = None,
    progress: bool = True,
    group: str | None = None,
    job_type: str = "train",
    tags: list[str] | None = None,
    resume_from: Path | None = None,
) -> TrainResult:
    """Train the multi-task model described by ``config`` and write its run folder.

    Args:
        config: the experiment (model, losses, augmentation, trainer, data paths).
        run_dir: run folder; default ``<tracking.runs_dir>/<new run id>``.
        tracker: where metrics go besides the run folder; default from ``config.tracking``.
        callbacks: extra Lightning callbacks (e.g. Optuna pruning).
        cohort: an already opened cache (skips validation and preprocessing).
        progress: show Rich progress bars.
        group, job_type, tags: tracking metadata (a sweep passes its name and arm).
        resume_from: a checkpoint of this run (``checkpoints/last.ckpt``) to continue from:
            epochs, optimizer and callbacks resume where it stopped (a preempted sweep trial).
    """
    started = time.perf_counter()
    _quiet_lightning(verbose=progress)
    pl.seed_everything(config.seed, workers=True, verbose=False)
    cohort = cohort if cohort is not None else prepare_cohort(config, progress=progress)
    run_dir = Path(run_dir) if run_dir is not None else config.tracking.runs_dir / new_run_id()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_YAML).write_text(config.to_yaml(), encoding="utf-8")
    repo_root = Path.cwd()
    git = git_state(repo_root)
    meta = {
        "run_id": run_dir.name,
        "hcc_exp_version": hcc_exp.__version__,
        "git_commit": git.get("commit"),
        "git_dirty": git.get("dirty"),
        "data_version": data_version(repo_root),
        "cohort_dir": str(Path(config.data.cohort_dir).resolve()),
        "cache_dir": str(cohort.root.resolve()),
        "cache_key": cohort.cache_key,
        "input_hash": cohort.manifest.get("input_hash"),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "group": group,
        "job_type": job_type,
        "tags": list(tags or []),
    }
    _write_json(run_dir / META_JSON, meta)

    tracker = tracker if tracker is not None else make_tracker(config.tracking)
    tracker.start(
        run_id=run_dir.name,
        run_dir=run_dir,
        config=config.to_flat_dict(),
        group=group,
        job_type=job_type,
        tags=list(tags or []) + [f"cache:{cohort.cache_key}"],
    )
    exit_code = 1
    try:
        result = _fit_and_predict(config, cohort, run_dir, tracker, callbacks or [], progress, resume_from)
        result.seconds = time.perf_counter() - started
        meta.update(
            finished=datetime.now(UTC).isoformat(timespec="seconds"),
            seconds=round(result.seconds, 2),
            best_epoch=result.best_epoch,
            epochs_trained=result.epochs_trained,
        )
        _write_json(run_dir / META_JSON, meta)
        tracker.log_summary(result.metrics)
        tracker.log_checkpoint(
            run_dir / BEST_CHECKPOINT,
            name=f"model-{run_dir.name}",
            metadata={"best_epoch": result.best_epoch, "cache_key": cohort.cache_key},
        )
        exit_code = 0
        return result
    finally:
        tracker.finish(exit_code=exit_code)


def _fit_and_predict(
    config: ExperimentConfig,
    cohort: PreprocessedCohort,
    run_dir: Path,
    tracker: Tracker,
    extra_callbacks: list[Callback],
    progress: bool,
    resume_from: Path | None = None,
) -> TrainResult:
    datamodule = HccDataModule(cohort, config)
    module = MultiTaskModule(config.model_dump(mode="json"))
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / BEST_CHECKPOINT.parent,
        filename=BEST_CHECKPOINT.stem,
        monitor=MONITOR,
        mode="min",
        save_top_k=1,
        save_last=True,  # checkpoints/last.ckpt: what a preempted trial resumes from
        enable_version_counter=False,
    )
    callbacks: list[Callback] = [
        checkpoint,
        EarlyStopping(monitor=MONITOR, mode="min", patience=config.trainer.patience, check_finite=False),
        TrackingCallback(tracker),
        *extra_callbacks,
    ]
    if progress:
        callbacks.append(RichProgressBar(leave=False))
    trainer = pl.Trainer(
        default_root_dir=run_dir,
        max_epochs=config.trainer.max_epochs,
        accelerator=config.trainer.accelerator,
        devices=1,
        precision=config.trainer.precision,
        deterministic=True,
        logger=CSVLogger(save_dir=run_dir, name="logs", version="", flush_logs_every_n_steps=10),
        callbacks=callbacks,
        enable_progress_bar=progress,
        enable_model_summary=False,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        reload_dataloaders_every_n_epochs=1,
        limit_train_batches=config.trainer.limit_train_batches,
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
    if not checkpoint.best_model_path:
        raise RunFolderError(f"training in {run_dir} produced no checkpoint (no validation epoch ran)")
    best = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
    module.load_state_dict(best["state_dict"])
    module.eval()
    best_epoch = int(best["epoch"])

    frames = []
    metrics: dict[str, float] = {}
    for split in SPLITS:
        outputs = [module.predict_batch(_to_device(b, module.device)) for b in datamodule.split_loader(split)]
        if not outputs:
            continue
        out = concat_outputs(outputs)
        ids = [datamodule.datasets[split].patient_ids[i] for i in out["index"].tolist()]
        mvi_prob = torch.softmax(out["mvi_logits"], dim=1)[:, 1].cpu().numpy()
        frames.append(
            pd.DataFrame(
                {
                    "patient_id": ids,
                    "split": split,
                    "os_risk": out["os_risk"].cpu().numpy(),
                    "rfs_risk": out["rfs_risk"].cpu().numpy(),
                    "mvi_prob": mvi_prob,
                }
            )
        )
        split_metrics = epoch_metrics(out, config.loss.mvi_class_weights)
        truth = out["mvi"].cpu().numpy()
        split_metrics["mvi_auc"] = float(roc_auc_score(truth, mvi_prob)) if len(np.unique(truth)) == 2 else float("nan")
        for key, value in split_metrics.items():
            task, _, metric = key.partition("_")
            if task in {"os", "rfs", "mvi"}:
                metrics[f"{split}/{task}/{metric}"] = value
            else:
                metrics[f"{split}/{key}"] = value
    predictions = pd.concat(frames, ignore_index=True)
    predictions.to_csv(run_dir / PREDICTIONS_CSV, index=False, float_format="%.8g")
    # Risk-group cut-offs and Breslow baselines travel with the checkpoint for `hcc-exp predict`.
    fit_risk_model(predictions, cohort.labels, config.evaluation.horizons_days).save(run_dir / RISK_MODEL_JSON)
    epochs_trained = int(trainer.current_epoch)
    metrics.update(
        best_epoch=float(best_epoch),
        epochs_trained=float(epochs_trained),
        **{"val/loss": float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else float("nan")},
    )
    _write_json(run_dir / METRICS_JSON, metrics)
    return TrainResult(run_dir=run_dir, metrics=metrics, best_epoch=best_epoch, epochs_trained=epochs_trained)


def _quiet_lightning(verbose: bool) -> None:
    """Silence Lightning's start-up chatter (tips, device banners) and a torch-pytree deprecation."""
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    level = logging.INFO if verbose else logging.WARNING
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(level)


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device) for key, value in batch.items()}


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=_json_default, allow_nan=True), encoding="utf-8")
    tmp.replace(path)


def _json_default(value: object) -> object:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
