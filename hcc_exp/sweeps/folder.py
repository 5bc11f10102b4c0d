"""The sweep folder: the one place that names its files and reads its ``sweep.yaml``.

::

    <runs root>/<sweep name>/
      sweep.yaml                    the resolved spec (base path absolute, overrides merged)
      base_params.yaml              the base config the trials started from
      optuna.journal                the study (default journal storage; absent with PostgreSQL)
      optuna.journal.heartbeats/    per-trial heartbeat files of running trials (journal storage)
      optuna.journal.enqueue.lock   serialises "look at the queue, then enqueue" between supervisors
      trials.csv                    number, arm, seed, state, value, run_dir, duration_s, retry_of, error, params.*
      logs/worker-<i>.log           output of local worker processes
      runs/<number>-<arm>-s<seed>/  one run folder per trial (:mod:`hcc_exp.run_folder` owns its files)
      wandb/                        offline W&B runs, group = sweep name
      resume/<number>-<arm>-s<seed>/  last.ckpt + best.ckpt of a preempted trial until its retry completes
      slurm/                        submitit's folder: <job id>_<task>_log.out / .err, pickles
      launch.json                   Slurm submissions: job ids, array size, settings, task log paths

The run folder's own files belong to the run-folder module; this module only knows
where the trial run folders sit. ``sweep.yaml`` is read strictly through
:func:`hcc_exp.sweeps.spec.parse_sweep_spec` (the schema the sweep was started with).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from hcc_exp.data.io import atomic_path
from hcc_exp.errors import ConfigError, SweepError
from hcc_exp.sweeps.spec import ResolvedSweep, SweepSpec, parse_sweep_spec
from hcc_exp.tracking import safe_name

SWEEP_YAML = "sweep.yaml"
BASE_PARAMS = "base_params.yaml"
JOURNAL_FILE = "optuna.journal"
HEARTBEATS_SUFFIX = ".heartbeats"
ENQUEUE_LOCK_SUFFIX = ".enqueue.lock"  # not "<journal>.lock": Optuna's JournalFileSymlinkLock uses that name
TRIALS_CSV = "trials.csv"
LOGS_DIR = "logs"
RUNS_DIR = "runs"
WANDB_DIR = "wandb"
SLURM_DIR = "slurm"
RESUME_DIR = "resume"
LAUNCH_JSON = "launch.json"
TRIALS_COLUMNS: tuple[str, ...] = (
    "number", "arm", "seed", "state", "value", "run_dir", "duration_s", "retry_of", "error",
)  # fmt: skip
"""Fixed columns of ``trials.csv``; sampled parameters follow as ``params.<key>``."""
REQUIRED_TRIALS_COLUMNS: tuple[str, ...] = ("number", "arm", "seed", "state")


def journal_heartbeat_dir(journal: Path | str) -> Path:
    """Per-trial heartbeat files of a journal storage: next to the journal, so every machine sees them."""
    return Path(str(journal) + HEARTBEATS_SUFFIX)


def journal_enqueue_lock(journal: Path | str) -> Path:
    return Path(str(journal) + ENQUEUE_LOCK_SUFFIX)


def trial_run_name(number: int, arm: str, seed: int) -> str:
    """``0003-no_venous-s1``: trial number first so the folders sort in trial order.

    >>> trial_run_name(3, "no venous", 1)
    '0003-no-venous-s1'
    """
    return f"{int(number):04d}-{safe_name(arm, 60)}-s{int(seed)}"


@dataclass(frozen=True)
class SweepFolder:
    """Paths of one sweep folder and the reading / writing of its sweep-level files.

    Attributes:
        root: ``<runs root>/<sweep name>``.
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def for_sweep(cls, resolved: ResolvedSweep, runs_root: Path | None = None) -> SweepFolder:
        """``<runs root>/<sweep name>``; the runs root defaults to the base config's ``tracking.runs_dir``."""
        root = Path(runs_root) if runs_root is not None else resolved.config_for({}, None).tracking.runs_dir
        return cls(root / resolved.spec.name)

    # ------------------------------------------------------------------ paths
    @property
    def sweep_yaml(self) -> Path:
        return self.root / SWEEP_YAML

    @property
    def base_params(self) -> Path:
        return self.root / BASE_PARAMS

    @property
    def journal(self) -> Path:
        """The default journal storage (``storage: null``)."""
        return self.root / JOURNAL_FILE

    @property
    def trials_csv(self) -> Path:
        return self.root / TRIALS_CSV

    @property
    def logs_dir(self) -> Path:
        return self.root / LOGS_DIR

    @property
    def runs_dir(self) -> Path:
        return self.root / RUNS_DIR

    @property
    def wandb_dir(self) -> Path:
        """Parent of ``wandb/`` (W&B appends that name itself): the sweep folder."""
        return self.root

    @property
    def slurm_dir(self) -> Path:
        return self.root / SLURM_DIR

    @property
    def launch_json(self) -> Path:
        return self.root / LAUNCH_JSON

    def resume_dir(self, run_name: str) -> Path:
        """Checkpoints a preempted trial resumes from (outside its run folder, which is only written when complete)."""
        return self.root / RESUME_DIR / run_name

    def worker_log(self, index: int) -> Path:
        return self.logs_dir / f"worker-{int(index)}.log"

    def trial_run_dir(self, number: int, arm: str, seed: int) -> Path:
        return self.runs_dir / trial_run_name(number, arm, seed)

    def relative(self, path: Path) -> str:
        """A path inside the folder as recorded in the study and ``trials.csv`` (relative, portable)."""
        return str(Path(path).relative_to(self.root))

    def find_run_dir(self, recorded: Any, number: Any, is_run_dir: Callable[[Path], bool]) -> Path | None:
        """The run folder of a trial from its recorded ``run_dir`` (relative or absolute) or its number.

        Tries the recorded path (relative to this folder, then to the cwd), then
        ``runs/<name of the recorded path>`` (a folder moved to another machine), then
        ``runs/<number>``; the first for which ``is_run_dir`` holds wins.
        """
        candidates: list[Path] = []
        if isinstance(recorded, str) and recorded.strip():
            given = Path(recorded)
            candidates += [given] if given.is_absolute() else [self.root / given, Path.cwd() / given]
            candidates.append(self.runs_dir / given.name)
        if number is not None and not pd.isna(number):
            candidates.append(self.runs_dir / str(int(number)))
        return next((c for c in candidates if is_run_dir(c)), None)

    # ------------------------------------------------------------------ sweep.yaml / base params
    def write_spec(self, spec: SweepSpec, base_config: dict[str, Any], *, source: str) -> None:
        """Write ``sweep.yaml`` (with a header naming ``source``), ``base_params.yaml`` and ``runs/``."""
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        header = f"# Resolved copy of {source} (overrides merged); written by hcc-exp sweep.\n"
        with atomic_path(self.sweep_yaml) as tmp:
            tmp.write_text(header + spec.to_yaml(), encoding="utf-8")
        with atomic_path(self.base_params) as tmp:
            tmp.write_text(yaml.safe_dump(base_config, sort_keys=False), encoding="utf-8")

    def write_resolved(self, resolved: ResolvedSweep) -> None:
        """The resolved sweep as run: its base params path made absolute."""
        spec = resolved.spec
        if resolved.base_path is not None:
            spec = spec.model_copy(update={"base": str(resolved.base_path)})
        self.write_spec(spec, resolved.base_config, source=resolved.source)

    def has_spec(self) -> bool:
        return self.sweep_yaml.is_file()

    def read_spec(self) -> SweepSpec:
        """``sweep.yaml``, validated by the sweep schema.

        Raises:
            SweepError: the file is missing, not YAML, or not a valid sweep spec (named).
        """
        path = self.sweep_yaml
        if not path.is_file():
            raise SweepError(f"{self.root} has no {SWEEP_YAML}: not a sweep folder")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise SweepError(f"{path}: not valid YAML: {exc}") from exc
        try:
            return parse_sweep_spec(raw, source=str(path))
        except ConfigError as exc:
            raise SweepError(str(exc)) from exc

    # ------------------------------------------------------------------ trials.csv
    def write_trials(self, records: Iterable[Any]) -> Path:
        """Write ``trials.csv`` atomically from records with the :data:`TRIALS_COLUMNS` attributes and ``params``."""
        records = list(records)
        param_keys = sorted({k for r in records for k in (getattr(r, "params", None) or {})})
        with atomic_path(self.trials_csv) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow([*TRIALS_COLUMNS, *(f"params.{k}" for k in param_keys)])
            for r in records:
                params = getattr(r, "params", None) or {}
                writer.writerow([getattr(r, c) for c in TRIALS_COLUMNS] + [params.get(k) for k in param_keys])
        return self.trials_csv

    def read_trials(self) -> pd.DataFrame:
        """``trials.csv`` as written (``arm`` and ``run_dir`` as text).

        Raises:
            SweepError: the file is missing or lacks a required column.
        """
        path = self.trials_csv
        if not path.is_file():
            raise SweepError(f"sweep folder {self.root} has no {TRIALS_CSV}")
        frame = pd.read_csv(path, dtype={"arm": str, "run_dir": str})
        missing = [c for c in REQUIRED_TRIALS_COLUMNS if c not in frame.columns]
        if missing:
            raise SweepError(f"{path}: missing column(s) {missing}")
        return frame

    # ------------------------------------------------------------------ launch.json
    def write_launch(self, record: dict[str, Any]) -> Path:
        """Append one Slurm submission to ``launch.json`` (a list, oldest first)."""
        launches = self.read_launches()
        launches.append(record)
        with atomic_path(self.launch_json) as tmp:
            tmp.write_text(json.dumps(launches, indent=2, default=str), encoding="utf-8")
        return self.launch_json

    def read_launches(self) -> list[dict[str, Any]]:
        """The Slurm submissions of this sweep (empty when it never ran on Slurm)."""
        if not self.launch_json.is_file():
            return []
        try:
            data = json.loads(self.launch_json.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise SweepError(f"{self.launch_json}: cannot read: {exc}") from exc
        if not isinstance(data, list):
            raise SweepError(f"{self.launch_json}: expected a JSON list of submissions")
        return data
