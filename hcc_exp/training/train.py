"""``train(config) -> TrainResult``: the one training entry point.

The CLI (``hcc-exp train``), the DVC ``train`` stage and every sweep trial call this
function. It validates and preprocesses the cohort when needed (both are cached
no-ops otherwise), trains with Lightning, and writes a run folder (layout:
:mod:`hcc_exp.run_folder`)::

    runs/<run_id>/config.yaml, meta.json, metrics.json, predictions.csv,
                  checkpoints/best.ckpt, checkpoints/risk_model.json, logs/metrics.csv

The run is written in a hidden staging folder beside the target and moved into place only
when complete (:class:`~hcc_exp.run_folder.StagedRunFolder`): a failed run leaves no
half-written run folder. Checkpoints are written atomically (:class:`AtomicCheckpointIO`)
and hold no machine path.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import secrets
import time
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from sklearn.metrics import roc_auc_score

import hcc_exp
from hcc_exp.config import ExperimentConfig
from hcc_exp.data import contract, patient_checks, table_checks, validate, volume_checks
from hcc_exp.data.cache import PreprocessedCohort
from hcc_exp.data.contract import COHORT_CSV
from hcc_exp.data.datamodule import HccDataModule
from hcc_exp.data.io import atomic_path
from hcc_exp.data.preprocess import hash_cohort_inputs, preprocess_cohort
from hcc_exp.data.validate import require_valid
from hcc_exp.errors import MissingFileError, RunFolderError
from hcc_exp.evaluation.risk_model import fit_risk_model
from hcc_exp.processes import retain_freed_memory
from hcc_exp.run_folder import BEST_CHECKPOINT, RunFolder, StagedRunFolder
from hcc_exp.tracking import Tracker, data_version, git_state, make_tracker
from hcc_exp.tracking.callback import TrackingCallback
from hcc_exp.training.module import MultiTaskModule, concat_outputs, epoch_metrics
from hcc_exp.vocabulary import SPLITS

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
    cohort_dir = Path(config.data.cohort_dir)
    if not cohort_dir.is_dir():
        raise MissingFileError("cohort folder does not exist (config key data.cohort_dir)", path=cohort_dir)
    if not (cohort_dir / COHORT_CSV).is_file():
        require_valid(cohort_dir, progress=progress)  # raises, naming what is missing
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
    digest = hashlib.blake2b(digest_size=8)
    for module in (contract, patient_checks, table_checks, validate, volume_checks):
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

    The run's files are written in a staging folder beside ``run_dir`` and moved into place
    at the end; a failure (bad cohort, crash, interruption) leaves no run folder behind (an
    existing ``run_dir``, e.g. ``runs/demo`` of an earlier run, stays as it was).

    Args:
        config: the experiment (model, losses, augmentation, trainer, data paths).
        run_dir: run folder; default ``<tracking.runs_dir>/<new run id>``.
        tracker: where metrics go besides the run folder; default from ``config.tracking``.
        callbacks: extra Lightning callbacks (e.g. Optuna pruning).
        cohort: an already opened cache (skips validation and preprocessing).
        progress: show Rich progress bars.
        group, job_type, tags: tracking metadata (a sweep passes its name and arm).
        resume_from: a Lightning checkpoint of this run to continue from (epochs, optimizer and
            callbacks resume where it stopped: a preempted sweep trial).

    Raises:
        OutputFolderError: ``run_dir`` is a file or cannot be written (before any work).
        CohortError, CohortValidationError: the cohort folder is missing or invalid.
    """
    started = time.perf_counter()
    _quiet_lightning(verbose=progress)
    retain_freed_memory()  # the step's activation buffers stay mapped between steps (1.3x per step on CPU)
    target = Path(run_dir) if run_dir is not None else config.tracking.runs_dir / new_run_id()
    with StagedRunFolder(target) as staged:
        pl.seed_everything(config.seed, workers=True, verbose=False)
        cohort = cohort if cohort is not None else prepare_cohort(config, progress=progress)
        stage = staged.stage
        stage.write_text(stage.config_yaml, config.to_yaml())
        repo_root = Path.cwd()
        git = git_state(repo_root)
        meta = {
            "run_id": Path(os.path.abspath(target)).name,
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
        stage.write_json(stage.meta_json, meta)

        tracker = tracker if tracker is not None else make_tracker(config.tracking)
        # The tracker writes in the final folder (its W&B files must not move while W&B runs);
        # the run's own files stay staged until the run is complete.
        tracker.start(
            run_id=meta["run_id"],
            run_dir=target,
            config=config.to_flat_dict(),
            group=group,
            job_type=job_type,
            tags=list(tags or []) + [f"cache:{cohort.cache_key}"],
        )
        exit_code = 1
        try:
            result = _fit_and_predict(config, cohort, stage, tracker, callbacks or [], progress, resume_from)
            result.seconds = time.perf_counter() - started
            meta.update(
                finished=datetime.now(UTC).isoformat(timespec="seconds"),
                seconds=round(result.seconds, 2),
                best_epoch=result.best_epoch,
                epochs_trained=result.epochs_trained,
            )
            stage.write_json(stage.meta_json, meta)
            run = staged.publish()
            result.run_dir = run.root
            tracker.log_summary(result.metrics)
            tracker.log_checkpoint(
                run.best_checkpoint,
                name=f"model-{meta['run_id']}",
                metadata={"best_epoch": result.best_epoch, "cache_key": cohort.cache_key},
            )
            exit_code = 0
            return result
        finally:
            tracker.finish(exit_code=exit_code)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written atomically and without machine paths.

    * Atomic: serialised in memory, written to a temporary file beside the target and renamed
      (:func:`~hcc_exp.data.io.atomic_path`): a full disk or a kill leaves the previous
      ``best.ckpt`` (or none), never a truncated one.
    * Portable: ``ModelCheckpoint``'s state (its ``dirpath``, ``best_model_path`` and
      ``best_k_models`` are absolute paths, here of the staging folder) is dropped; nothing
      reads it (runs are not resumed from ``best.ckpt``; prediction, Grad-CAM and evaluation
      need the weights and ``hyper_parameters`` only). ``checkpoints/`` is a DVC output.
    * ``torch.load(best.ckpt, weights_only=True)`` keeps working: the payload is unchanged
      otherwise, and serialising through a buffer keeps the archive's internal folder name
      ``archive`` (torch.save names it after the file, which here would be a random temp name).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        payload = portable_checkpoint(checkpoint)
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        with atomic_path(Path(path)) as tmp:
            with open(tmp, "wb") as handle:
                handle.write(buffer.getbuffer())
                handle.flush()
                os.fsync(handle.fileno())


def portable_checkpoint(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """``checkpoint`` without the callback states that hold absolute paths (``ModelCheckpoint``'s)."""
    callbacks = checkpoint.get("callbacks")
    if not isinstance(callbacks, dict):
        return checkpoint
    kept = {key: state for key, state in callbacks.items() if not str(key).startswith("ModelCheckpoint")}
    return {**checkpoint, "callbacks": kept}


def _fit_and_predict(
    config: ExperimentConfig,
    cohort: PreprocessedCohort,
    run: RunFolder,
    tracker: Tracker,
    extra_callbacks: list[Callback],
    progress: bool,
    resume_from: Path | None = None,
) -> TrainResult:
    datamodule = HccDataModule(cohort, config)
    module = MultiTaskModule.from_config(config)
    checkpoint = ModelCheckpoint(
        dirpath=run.checkpoints_dir,
        filename=BEST_CHECKPOINT.stem,
        monitor=config.trainer.monitor,
        mode=config.trainer.monitor_mode,
        save_top_k=1,
        enable_version_counter=False,
    )
    callbacks: list[Callback] = [
        checkpoint,
        EarlyStopping(
            monitor=config.trainer.monitor,
            mode=config.trainer.monitor_mode,
            patience=config.trainer.patience,
            check_finite=False,
        ),
        TrackingCallback(tracker),
        *extra_callbacks,
    ]
    if progress:
        callbacks.append(RichProgressBar(leave=False))
    trainer = pl.Trainer(
        default_root_dir=run.root,
        max_epochs=config.trainer.max_epochs,
        accelerator=config.trainer.accelerator,
        devices=1,
        precision=config.trainer.precision,
        deterministic=True,
        logger=CSVLogger(save_dir=run.root, name=run.logs_dir.name, version="", flush_logs_every_n_steps=10),
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=progress,
        enable_model_summary=False,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        reload_dataloaders_every_n_epochs=1,
        limit_train_batches=config.trainer.limit_train_batches,
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
    if not checkpoint.best_model_path:
        raise RunFolderError(f"training for {run.root} produced no checkpoint (no validation epoch ran)")
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
    run.write_csv(run.predictions_csv, predictions, float_format="%.8g")
    # Risk-group cut-offs and Breslow baselines travel with the checkpoint for `hcc-exp predict`.
    fit_risk_model(predictions, cohort.labels, config.evaluation.horizons_days).save(run.risk_model_json)
    epochs_trained = int(trainer.current_epoch)
    metrics.update(
        best_epoch=float(best_epoch),
        epochs_trained=float(epochs_trained),
        **{
            config.trainer.monitor: float(checkpoint.best_model_score)
            if checkpoint.best_model_score is not None
            else float("nan")
        },
    )
    run.write_json(run.metrics_json, metrics)
    return TrainResult(run_dir=run.root, metrics=metrics, best_epoch=best_epoch, epochs_trained=epochs_trained)


def _quiet_lightning(verbose: bool) -> None:
    """Silence Lightning's start-up chatter (tips, device banners) and a torch-pytree deprecation."""
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    level = logging.INFO if verbose else logging.WARNING
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(level)


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device) for key, value in batch.items()}
