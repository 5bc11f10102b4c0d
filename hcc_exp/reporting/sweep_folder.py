"""Reading a finished (or half-finished) sweep folder: trials, run folders, labels.

The sweep folder's layout (``sweep.yaml``, ``trials.csv``, ``runs/<trial>/``) is
:class:`hcc_exp.sweeps.folder.SweepFolder`; ``sweep.yaml`` is read strictly through
the sweep schema.

Only IO lives here; the statistics are in :mod:`hcc_exp.reporting.stats` and the
table in :mod:`hcc_exp.reporting.tables`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from hcc_exp.data.cache import PreprocessedCohort
from hcc_exp.errors import HccExpError, RunFolderError, SweepError
from hcc_exp.evaluation.evaluate import run_oracle
from hcc_exp.evaluation.oracle import oracle_shares
from hcc_exp.run_folder import EVALUATION_DIR, META_JSON, METRICS_JSON, RunFolder, iter_run_folders
from hcc_exp.sweeps import folder as sweep_layout
from hcc_exp.sweeps.spec import SweepSpec

TRIAL_STATES: tuple[str, ...] = ("COMPLETE", "FAIL", "PRUNED", "RUNNING", "WAITING")
DEFAULT_OBJECTIVE = "internal/os/c_index"

Direction = Literal["maximize", "minimize"]


@dataclass(frozen=True)
class SweepObjective:
    """The metric a sweep optimises (``sweep.yaml``), used to pick each arm's best run."""

    metric: str
    direction: Direction = "maximize"

    def better(self, a: float, b: float) -> bool:
        """Whether value ``a`` beats ``b`` (nan never wins)."""
        if math.isnan(a):
            return False
        if math.isnan(b):
            return True
        return a > b if self.direction == "maximize" else a < b


@dataclass(frozen=True)
class RunRecord:
    """One completed trial with a readable run folder.

    Attributes:
        trial: Optuna trial number (None when the run was found without trials.csv).
        arm: ablation arm name.
        seed: training seed.
        run_dir: the run folder.
        value: the objective value (trials.csv ``value``, else the objective metric).
        metrics: ``metrics.json`` keys, completed by ``evaluation/metrics.json`` keys it lacks.
        meta: ``meta.json``.
    """

    trial: int | None
    arm: str
    seed: int
    run_dir: Path
    value: float
    metrics: dict[str, float]
    meta: dict[str, Any]

    @property
    def cache_dir(self) -> Path | None:
        value = self.meta.get("cache_dir")
        return None if value in (None, "") else Path(value)

    def evaluation_images(self) -> list[Path]:
        """PNG figures under ``evaluation/``, sorted by relative path."""
        folder = self.run_dir / EVALUATION_DIR
        return sorted(folder.rglob("*.png")) if folder.is_dir() else []


@dataclass
class SweepFolder:
    """A sweep folder as read from disk.

    Attributes:
        root: ``runs/<sweep name>``.
        name: the sweep's name (``sweep.yaml: name``, else the folder name).
        spec: the validated ``sweep.yaml`` (None if absent).
        objective: metric and direction used to rank runs.
        trials: trials.csv with ``state`` upper-cased and ``seed`` as nullable int.
        runs: completed trials whose run folder has metrics, one per (arm, seed).
        notes: problems worth showing in a report (skipped runs, duplicates).
    """

    root: Path
    name: str
    spec: SweepSpec | None
    objective: SweepObjective
    trials: pd.DataFrame
    runs: list[RunRecord]
    notes: list[str] = field(default_factory=list)

    def arms(self, reference_arm: str) -> list[str]:
        """Arm names, the reference first, then in order of first trial."""
        seen: list[str] = []
        for arm in list(self.trials["arm"]) + [r.arm for r in self.runs]:
            if isinstance(arm, str) and arm not in seen:
                seen.append(arm)
        return ([reference_arm] if reference_arm in seen else []) + [a for a in seen if a != reference_arm]

    def trial_counts(self, reference_arm: str) -> pd.DataFrame:
        """Per arm: seeds used plus trials per state and in total (rows in :meth:`arms` order)."""
        rows = []
        for arm in self.arms(reference_arm):
            of_arm = self.trials[self.trials["arm"] == arm]
            row: dict[str, Any] = {"arm": arm, "seeds_used": sum(r.arm == arm for r in self.runs)}
            for state in TRIAL_STATES:
                row[state.lower()] = int((of_arm["state"] == state).sum())
            row["total"] = int(len(of_arm))
            durations = pd.to_numeric(of_arm.get("duration_s", pd.Series(dtype=float)), errors="coerce")
            row["duration_s"] = float(durations.sum()) if durations.notna().any() else math.nan
            rows.append(row)
        return pd.DataFrame(rows)

    def best_runs(self) -> dict[str, RunRecord]:
        """Each arm's best completed run by the objective (ties: lowest trial number)."""
        best: dict[str, RunRecord] = {}
        for run in sorted(self.runs, key=lambda r: (r.trial is None, r.trial or 0)):
            current = best.get(run.arm)
            if current is None or self.objective.better(run.value, current.value):
                best[run.arm] = run
        return best


# --------------------------------------------------------------------------- readers
def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def read_run_metrics(run_dir: Path) -> dict[str, float]:
    """``metrics.json`` of a run, plus the ``evaluation/metrics.json`` keys it lacks.

    Training metrics win on shared keys so seeds evaluated and not yet evaluated
    are compared on the same numbers.

    Raises:
        RunFolderError: ``metrics.json`` is missing or unreadable.
    """
    run = RunFolder(run_dir)
    metrics = {k: _as_float(v) for k, v in run.read_metrics().items()}
    for key, value in (run.read_evaluation_metrics() or {}).items():
        if not isinstance(value, dict | list):
            metrics.setdefault(key, _as_float(value))
    return metrics


def read_predictions(run_dir: Path) -> pd.DataFrame:
    """``predictions.csv`` (patient_id as str).

    Raises:
        RunFolderError: the file is missing or lacks a column.
    """
    return RunFolder(run_dir).read_predictions()


def read_labels(cache_dir: Path) -> pd.DataFrame:
    """The cohort labels of a run (``labels.csv`` of its preprocessed cache)."""
    return PreprocessedCohort.open(cache_dir).labels


def read_objective(spec: SweepSpec | None) -> SweepObjective:
    """Objective metric and direction of a sweep (``metric: {name, goal}``); without a spec,
    maximising ``internal/os/c_index``."""
    if spec is None:
        return SweepObjective(DEFAULT_OBJECTIVE, "maximize")
    return SweepObjective(spec.metric.name, spec.metric.goal)


def _is_run_dir(candidate: Path) -> bool:
    return (candidate / METRICS_JSON).is_file() or (candidate / META_JSON).is_file()


def _trials_from_run_folders(layout: sweep_layout.SweepFolder) -> pd.DataFrame:
    rows = []
    for run in iter_run_folders(layout.runs_dir):
        meta = run.read_meta()
        run_dir = run.root
        rows.append(
            {
                "number": meta.get("trial", meta.get("number")),
                "arm": meta.get("arm"),
                "seed": meta.get("seed"),
                "state": "COMPLETE" if (run_dir / METRICS_JSON).is_file() else "FAIL",
                "value": math.nan,
                "run_dir": str(run_dir),
                "duration_s": math.nan,
            }
        )
    return pd.DataFrame(rows, columns=["number", "arm", "seed", "state", "value", "run_dir", "duration_s"])


def read_sweep(sweep_dir: Path | str) -> SweepFolder:
    """Read ``sweep.yaml``, ``trials.csv`` and every completed trial's run folder.

    A completed trial whose run folder cannot be read is skipped with a note; when
    an arm has several completed trials for one seed the latest trial is kept (so
    the seeds stay paired). Without ``trials.csv`` the run folders' ``meta.json``
    (``arm``, ``seed``) stand in.

    Raises:
        SweepError: the folder does not exist, or trials.csv lacks a column.
    """
    root = Path(sweep_dir)
    if not root.is_dir():
        raise SweepError(f"sweep folder {root} does not exist")
    layout = sweep_layout.SweepFolder(root)
    spec = layout.read_spec() if layout.has_spec() else None
    objective = read_objective(spec)
    notes: list[str] = []

    if layout.trials_csv.is_file():
        trials = layout.read_trials()
    else:
        trials = _trials_from_run_folders(layout)
        if trials.empty:
            raise SweepError(
                f"sweep folder {root} has neither {sweep_layout.TRIALS_CSV} nor run folders with {META_JSON}"
            )
        notes.append(f"{sweep_layout.TRIALS_CSV} absent: trials were reconstructed from run folders")
    trials = trials.copy()
    trials["state"] = trials["state"].astype(str).str.upper().str.replace("TRIALSTATE.", "", regex=False)
    trials["seed"] = pd.to_numeric(trials["seed"], errors="coerce").astype("Int64")
    for column in ("value", "duration_s"):
        trials[column] = pd.to_numeric(trials[column], errors="coerce") if column in trials else math.nan
    if "run_dir" not in trials:
        trials["run_dir"] = None
    trials = trials.sort_values("number", kind="stable").reset_index(drop=True)

    by_key: dict[tuple[str, int], RunRecord] = {}
    oracles: dict[tuple[str, str], dict[str, float] | None] = {}
    for row in trials[trials["state"] == "COMPLETE"].itertuples(index=False):
        label = f"trial {row.number} (arm {row.arm}, seed {row.seed})"
        run_dir = layout.find_run_dir(row.run_dir, row.number, _is_run_dir)
        if run_dir is None:
            notes.append(f"{label}: run folder {row.run_dir!r} not found; skipped")
            continue
        try:
            metrics = read_run_metrics(run_dir)
            meta = RunFolder(run_dir).read_meta() if (run_dir / META_JSON).is_file() else {}
        except RunFolderError as exc:
            notes.append(f"{label}: {exc}; skipped")
            continue
        arm = row.arm if isinstance(row.arm, str) else meta.get("arm")
        seed = row.seed if not pd.isna(row.seed) else meta.get("seed")
        if arm is None or seed is None:
            notes.append(f"{label}: arm or seed unknown; skipped")
            continue
        value = _as_float(row.value)
        if math.isnan(value):
            value = metrics.get(objective.metric, math.nan)
        if not any(key.endswith("/oracle_share") for key in metrics):
            # A trial that was not evaluated: its oracle share from the cohort's oracle.csv.
            cohort = (str(meta.get("cohort_dir")), str(meta.get("cache_dir")))
            if cohort not in oracles:
                try:
                    oracles[cohort] = run_oracle(run_dir, meta)
                except HccExpError as exc:
                    oracles[cohort] = None
                    notes.append(f"{label}: oracle not read: {exc}")
            if oracles[cohort]:
                shares = oracle_shares(metrics, oracles[cohort])
                metrics = {**metrics, **{k: v for k, v in shares.items() if isinstance(v, float)}}
        record = RunRecord(
            trial=None if pd.isna(row.number) else int(row.number),
            arm=str(arm),
            seed=int(seed),
            run_dir=run_dir,
            value=value,
            metrics=metrics,
            meta=meta,
        )
        key = (record.arm, record.seed)
        if key in by_key:
            notes.append(
                f"arm {record.arm} seed {record.seed}: several completed trials; "
                f"kept trial {record.trial}, dropped trial {by_key[key].trial}"
            )
        by_key[key] = record
    name = spec.name if spec is not None else root.name
    return SweepFolder(root, name, spec, objective, trials, list(by_key.values()), notes)
