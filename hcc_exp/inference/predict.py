"""``hcc-exp predict``: risk, risk group, 1- and 2-year survival and MVI probability for new patients.

A prediction needs three things from a trained run:

* the network and the exact preprocessing recipe it was trained with (both stored in the
  checkpoint's ``hyper_parameters["config"]``);
* a :class:`~hcc_exp.evaluation.risk_model.RiskModel` (``RUN_DIR/checkpoints/risk_model.json``): the training split's
  median OS and RFS risk (the high / low risk cut, as in the evaluation's Kaplan-Meier
  stratification) and the Breslow baseline cumulative hazards of both Cox heads fitted on
  the training split's predictions, which turn a log-risk into ``S(t | x)``. Training
  writes it; when it is missing it is fitted here from ``RUN_DIR/predictions.csv`` and the
  cache's labels, and written;
* a patient folder in the cohort contract's per-patient layout (``<phase>.nii.gz`` or a
  DICOM folder ``<phase>/``, ``<phase>_tumour.nii.gz``, ``liver.nii.gz`` or
  ``<phase>_liver.nii.gz``), checked with the same rules and named errors as
  ``hcc-exp check`` plus a modality check (:class:`NotComputedTomographyError`).

The patient goes through the checkpoint's preprocessing, the network and the risk model.
Explanations are not this package's business: an ``explain`` function (``hcc-exp predict`` passes
:func:`hcc_exp.interpretability.cam.write_patient_cams`, one Grad-CAM overlay PNG per head)
receives the network and the preprocessed arrays and writes beside ``prediction.json``.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from hcc_exp.config import PHASES, ExperimentConfig
from hcc_exp.data.contract import COHORT_CSV, IMAGES_DIR, PatientFiles, read_cohort_table
from hcc_exp.data.io import atomic_path
from hcc_exp.data.patient_checks import check_patient_files  # the per-patient rules of `hcc-exp check`
from hcc_exp.data.volume_checks import (  # noqa: F401  (re-exported: the not-CT rule of `check`)
    CT_MAX_AT_LEAST_HU,
    CT_MIN_AT_MOST_HU,
    modality_problem,
)
from hcc_exp.errors import (
    CohortError,
    CohortPredictionError,
    MissingFileError,
    NotComputedTomographyError,  # noqa: F401  (re-exported: predict's not-CT refusal)
    PreprocessError,
    RunFolderError,
)
from hcc_exp.evaluation.risk_model import RiskModel, fit_risk_model
from hcc_exp.inference.checkpoint import TrainedNetwork, load_trained_network
from hcc_exp.progress import patient_progress
from hcc_exp.run_folder import PREDICTION_COLUMNS, RunFolder, check_output_folder, make_output_folder
from hcc_exp.vocabulary import ENDPOINTS

COHORT_PREDICTIONS_CSV = "predictions.csv"
"""``predict --cohort``'s table in its output folder (one row per patient)."""
PREDICTION_JSON = "prediction.json"
"""``predict PATIENT``'s result in its output folder."""

Explainer = Callable[[TrainedNetwork, np.ndarray, np.ndarray, str, Path], dict[str, Path]]
"""``explain(trained, image (P, D, H, W), masks (P, R, D, H, W), patient_id, out_dir) -> {key: file}``:
writes explanations of one prediction into ``out_dir``; each key becomes ``<key>_png`` in the result."""


# --------------------------------------------------------------------------- patient folder
@contextmanager
def _as_cohort(patient_dir: Path):
    """A throw-away cohort root whose ``images/<patient_id>`` links to ``patient_dir``."""
    with tempfile.TemporaryDirectory(prefix="hcc-predict-") as tmp:
        root = Path(tmp)
        (root / IMAGES_DIR).mkdir()
        link = root / IMAGES_DIR / patient_dir.name
        link.symlink_to(patient_dir.resolve(), target_is_directory=True)
        yield root, link


def _relocate(path: Path | str | None, link: Path, patient_dir: Path) -> Path | None:
    if path is None:
        return None
    path = Path(path)
    try:
        return patient_dir / path.relative_to(link)
    except ValueError:
        return path


def resolve_patient_folder(patient_dir: Path | str, phases: Sequence[str]) -> tuple[PatientFiles, list[CohortError]]:
    """Resolve and check one patient folder with the cohort contract's rules.

    Args:
        patient_dir: the folder; its name is the patient id.
        phases: the phases the model needs.

    Returns:
        The resolved files (paths inside ``patient_dir``) and every problem found, in the
        order ``hcc-exp check`` reports them, followed by modality problems.
    """
    patient_dir = Path(patient_dir)
    pid = patient_dir.name
    if not patient_dir.is_dir():
        raise MissingFileError("patient folder does not exist", patient_id=pid, path=patient_dir)
    phases = tuple(phases)
    errors: list[CohortError] = []
    with _as_cohort(patient_dir) as (root, link):
        check_patient_files(root, pid, phases, errors)
        linked = PatientFiles.resolve(root, pid, phases)

    def move(paths: dict[str, Path | None]) -> dict[str, Path | None]:
        return {k: _relocate(v, link, patient_dir) for k, v in paths.items()}

    files = replace(
        linked,
        folder=patient_dir,
        images=move(linked.images),
        tumour_masks=move(linked.tumour_masks),
        liver_masks=move(linked.liver_masks),
    )
    errors = [
        type(e)(e.message, patient_id=e.patient_id, path=_relocate(e.path, link, patient_dir), column=e.column)
        for e in errors
    ]
    # check_patient_files applies the not-CT rule too (hcc_exp.data.volume_checks.ct_problem): one definition.
    return files, errors


def raise_first_problem(errors: list[CohortError]) -> None:
    """Raise the first problem as its own named class, its message listing the others (nothing if none)."""
    if not errors:
        return
    first = errors[0]
    message = first.message
    if len(errors) > 1:
        others = "; ".join(f"{type(e).__name__}: {e.describe()}" for e in errors[1:])
        message = f"{message} (and {len(errors) - 1} more problem(s): {others})"
    raise type(first)(message, patient_id=first.patient_id, path=first.path, column=first.column)


# --------------------------------------------------------------------------- risk model
def ensure_risk_model(run: RunFolder, config: ExperimentConfig) -> RiskModel:
    """The run's risk model: ``checkpoints/risk_model.json``, or, for runs older than it, fitted
    from the run's ``predictions.csv`` and its cache's labels (with the one fitting path,
    :func:`~hcc_exp.evaluation.risk_model.fit_risk_model`) and written there."""
    if run.risk_model_json.is_file():
        return RiskModel.load(run.risk_model_json)
    if not run.predictions_csv.is_file():
        raise RunFolderError(f"{run.root} has neither {run.risk_model_json.name} nor {run.predictions_csv.name}")
    predictions = run.read_predictions(PREDICTION_COLUMNS)
    model = fit_risk_model(predictions, run.open_cache().labels, config.evaluation.horizons_days)
    model.save(run.risk_model_json)
    return model


# --------------------------------------------------------------------------- prediction
@dataclass
class Predictor:
    """A trained network with its risk model, ready to predict patient folders.

    Attributes:
        trained: network, config (preprocessing recipe) and checkpoint path.
        risk_model: cuts and Breslow baselines of the training split.
    """

    trained: TrainedNetwork
    risk_model: RiskModel

    @classmethod
    def from_checkpoint(cls, checkpoint: Path | str) -> Predictor:
        """Load ``RUN_DIR/checkpoints/best.ckpt`` and the run's risk model (fitted and written if missing)."""
        trained = load_trained_network(checkpoint)
        return cls(trained, ensure_risk_model(RunFolder.of_checkpoint(checkpoint), trained.config))

    @property
    def config(self) -> ExperimentConfig:
        return self.trained.config

    @property
    def input_phases(self) -> tuple[str, ...]:
        """Phases a patient folder must hold: the model's phases plus the reference phase.

        Training caches hold every phase and centre the crop on the reference (portal)
        phase's tumour; preprocessing the same phases here puts the crop where training
        put it, also for a model that uses fewer phases.
        """
        from hcc_exp.data.preprocess import REFERENCE_PHASE

        return tuple(p for p in PHASES if p in self.config.phases or p == REFERENCE_PHASE)

    def preprocess(self, files: PatientFiles) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """Arrays of one checked patient with the checkpoint's recipe, for the model's phases.

        Returns:
            ``image (P, D, H, W)`` float32 in [0, 1], ``masks (P, R, D, H, W)`` uint8
            (P = ``len(config.phases)``) and the preprocessing ``info`` (geometry, voxel counts).

        Raises:
            PatientPreprocessError: e.g. the tumour vanishes on the resampled grid.
        """
        from hcc_exp.data.preprocess import preprocess_patient

        phases = self.input_phases
        image, masks, info = preprocess_patient(files, self.config.preprocess, phases)
        keep = [phases.index(p) for p in self.config.phases]
        return np.asarray(image[keep], dtype=np.float32), np.asarray(masks[keep]), info

    @torch.no_grad()
    def network_outputs(self, image: np.ndarray, masks: np.ndarray) -> dict[str, float]:
        """``os_risk``, ``rfs_risk`` (log relative hazards) and ``mvi_probability`` of one patient."""
        network = self.trained.network.eval()
        image_t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
        masks_t = torch.from_numpy(np.ascontiguousarray(masks, dtype=np.float32))[None]
        out = network(image_t, masks_t)
        return {
            "os_risk": float(out.os_risk[0]),
            "rfs_risk": float(out.rfs_risk[0]),
            "mvi_probability": float(torch.softmax(out.mvi_logits.float(), dim=1)[0, 1]),
        }

    def summarise(self, outputs: dict[str, float]) -> dict[str, Any]:
        """Network outputs plus risk groups and survival at each horizon (flat keys)."""
        result: dict[str, Any] = {}
        notes = []
        for name in ENDPOINTS:
            endpoint = self.risk_model.endpoint(name)
            risk = outputs[f"{name}_risk"]
            result[f"{name}_risk"] = risk
            result[f"{name}_risk_cutoff"] = endpoint.cutoff
            result[f"{name}_risk_group"] = str(endpoint.risk_group([risk])[0])
            survival = endpoint.survival([risk], self.risk_model.horizons_days)[0]
            for horizon, value in zip(self.risk_model.horizons_days, survival, strict=True):
                result[f"{name}_survival_{horizon}d"] = float(value)
                if not np.isfinite(value):
                    notes.append(
                        f"{name.upper()} survival at {horizon} d not estimable: "
                        + (endpoint.reason or f"beyond the training follow-up ({endpoint.baseline.max_time:g} d)")
                    )
        result["mvi_probability"] = outputs["mvi_probability"]
        result["notes"] = notes
        return result

    def predict(
        self, patient_dir: Path | str, out_dir: Path | str | None, *, explain: Explainer | None = None
    ) -> dict[str, Any]:
        """Check, preprocess and predict one patient folder.

        With ``out_dir``, write ``<out_dir>/prediction.json`` (atomically) and whatever ``explain``
        writes there (e.g. one Grad-CAM overlay per head); without, write nothing.

        Raises:
            CohortError: the first problem found (its message lists any others), e.g.
                :class:`MissingFileError`, :class:`GridMismatchError`,
                :class:`UnreadableVolumeError`, :class:`NotComputedTomographyError`.
            PatientPreprocessError: the checked files cannot be preprocessed.
            OutputFolderError: ``out_dir`` is a file or cannot be written.
        """
        patient_dir = Path(patient_dir)
        if out_dir is not None:
            check_output_folder(out_dir, "prediction folder")
        files, errors = resolve_patient_folder(patient_dir, self.input_phases)
        raise_first_problem(errors)
        image, masks, info = self.preprocess(files)
        result: dict[str, Any] = {"patient_id": files.patient_id}
        result.update(self.summarise(self.network_outputs(image, masks)))
        for phase in self.config.phases:
            inside = info.get("voxels", {}).get(phase, {}).get("tumour_fraction_in_crop")
            if inside is not None and inside < 1.0:
                result["notes"].append(
                    f"{phase}: only {inside:.0%} of the tumour lies inside the "
                    f"{'x'.join(str(n) for n in self.config.preprocess.crop_size_vox)} voxel crop the model sees"
                )
        result["horizons_days"] = list(self.risk_model.horizons_days)
        result["checkpoint"] = str(self.trained.checkpoint)
        if out_dir is None:
            return _json_ready(result)
        out_dir = make_output_folder(out_dir, "prediction folder")
        if explain is not None:
            for key, path in explain(self.trained, image, masks, files.patient_id, out_dir).items():
                result[f"{key}_png"] = str(path)
        ready = _json_ready(result)
        with atomic_path(out_dir / PREDICTION_JSON) as tmp:
            tmp.write_text(json.dumps(ready, indent=2, allow_nan=False), encoding="utf-8")
        return ready


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _default_patient_out(patient_dir: Path) -> Path:
    # Inside a cohort (COHORT/images/<id>) write beside the cohort, never into images/,
    # where a new folder would read as a patient.
    if patient_dir.parent.name == IMAGES_DIR:
        cohort = patient_dir.parent.parent
        return cohort.parent / f"{cohort.name}-predictions" / patient_dir.name
    return patient_dir.parent / f"{patient_dir.name}-prediction"


def predict_patient(
    checkpoint: Path | str,
    patient_dir: Path | str,
    out_dir: Path | str | None = None,
    *,
    explain: Explainer | None = None,
) -> dict[str, Any]:
    """Predict one patient folder with a trained run.

    Args:
        checkpoint: ``RUN_DIR/checkpoints/best.ckpt``.
        patient_dir: the patient's folder (3 phases + tumour and liver masks; NIfTI or DICOM).
        out_dir: where ``prediction.json`` (and ``explain``'s files, e.g. ``cam_<head>.png``) go;
            default beside the input (``<patient>-prediction/``, or
            ``<cohort>-predictions/<patient>/`` for a folder inside a cohort's ``images/``).
        explain: writes explanations beside ``prediction.json`` (:data:`Explainer`).

    Returns:
        Flat JSON-ready dict: ``patient_id``, ``os_risk``, ``rfs_risk`` (log relative hazards),
        ``os_risk_group`` / ``rfs_risk_group`` (``high`` / ``low``) and their cut-offs,
        ``os_survival_<h>d`` / ``rfs_survival_<h>d`` (Breslow S(t | x) at each horizon, null
        where not estimable, see ``notes``), ``mvi_probability``, ``cam_<head>_png``,
        ``horizons_days``, ``checkpoint``, ``notes``.
    """
    patient_dir = Path(patient_dir)
    out = Path(out_dir) if out_dir is not None else _default_patient_out(patient_dir)
    check_output_folder(out, "prediction folder")
    return Predictor.from_checkpoint(checkpoint).predict(patient_dir, out, explain=explain)


def _cohort_patient_ids(cohort_dir: Path) -> list[str]:
    images = cohort_dir / IMAGES_DIR
    if not images.is_dir():
        raise MissingFileError(f"cohort has no {IMAGES_DIR}/ folder", path=images)
    folders = sorted(p.name for p in images.iterdir() if p.is_dir() and not p.name.startswith("."))
    csv = cohort_dir / COHORT_CSV
    if csv.is_file():
        listed = read_cohort_table(csv)["patient_id"].dropna().tolist()  # as `check` reads it: `NA` is a patient
        return list(dict.fromkeys([*listed, *folders]))
    return folders


def predict_cohort(
    checkpoint: Path | str,
    cohort_dir: Path | str,
    out_dir: Path | str | None = None,
    *,
    explain: Explainer | None = None,
) -> Path:
    """Predict every patient of a cohort folder into one CSV.

    Patients are those of ``cohort.csv`` (in its order) and any further folder under
    ``images/``; outcomes are not needed. A patient whose files fail the checks or the
    preprocessing gets a row with ``error`` (the exception's name) and ``error_message``
    instead of predictions, and the call then raises :class:`CohortPredictionError` naming
    them (``hcc-exp predict --cohort`` exits 2) once the whole table is written.

    Args:
        checkpoint: ``RUN_DIR/checkpoints/best.ckpt``.
        cohort_dir: a folder with ``images/<patient_id>/`` (``cohort.csv`` optional).
        out_dir: default ``<cohort>-predictions/`` beside the cohort.
        explain: with it, also write each patient's ``prediction.json`` and explanations under
            ``out_dir/<patient_id>/``.

    Returns:
        The ``predictions.csv`` written in ``out_dir`` (when every patient was predicted).

    Raises:
        CohortPredictionError: some patients failed (the table is written, with their errors).
        OutputFolderError: ``out_dir`` is a file or cannot be written (before any prediction).
    """
    cohort_dir = Path(cohort_dir)
    out = Path(out_dir) if out_dir is not None else cohort_dir.parent / f"{cohort_dir.name}-predictions"
    check_output_folder(out, "prediction folder")
    patient_ids = _cohort_patient_ids(cohort_dir)
    predictor = Predictor.from_checkpoint(checkpoint)
    rows = []
    failures: dict[str, str] = {}
    with patient_progress("predicting") as bar:
        task = bar.add_task("patients", total=len(patient_ids))
        for pid in patient_ids:
            try:
                row = predictor.predict(
                    cohort_dir / IMAGES_DIR / pid, out / pid if explain is not None else None, explain=explain
                )
                row["notes"] = " | ".join(row["notes"])
                row.update(error="", error_message="")
            except (CohortError, PreprocessError) as exc:
                row = {"patient_id": pid, "error": type(exc).__name__, "error_message": str(exc)}
                failures[pid] = f"{type(exc).__name__}: {exc}"
            row.pop("horizons_days", None)
            row.pop("checkpoint", None)
            rows.append(row)
            bar.advance(task)
    make_output_folder(out, "prediction folder")
    path = out / COHORT_PREDICTIONS_CSV
    with atomic_path(path) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False, float_format="%.6g")
    if failures:
        raise CohortPredictionError(path, failures, len(patient_ids))
    return path
