"""The state of a sweep study: trial records (``trials.csv``), the counts that decide whether work remains.

:func:`cell_status` adds the per arm x seed view of ``hcc-exp sweep-status``.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from hcc_exp.sweeps.folder import SweepFolder
from hcc_exp.sweeps.spec import ResolvedSweep


@dataclass
class TrialRecord:
    """One row of ``trials.csv``."""

    number: int
    arm: str | None
    seed: int | None
    state: str
    value: float | None
    run_dir: str | None
    duration_s: float | None
    params: dict[str, Any] = field(default_factory=dict)
    retry_of: int | None = None
    error: str | None = None


def trial_records(study: optuna.Study) -> list[TrialRecord]:
    records = []
    for t in study.get_trials(deepcopy=False):
        duration = None
        if t.datetime_start and t.datetime_complete:
            duration = round((t.datetime_complete - t.datetime_start).total_seconds(), 3)
        records.append(
            TrialRecord(
                number=t.number,
                arm=t.user_attrs.get("arm"),
                seed=t.user_attrs.get("seed"),
                state=t.state.name,
                value=t.value if t.state == TrialState.COMPLETE else None,
                run_dir=t.user_attrs.get("run_dir"),
                duration_s=duration,
                params={k: v for k, v in t.params.items() if k not in {"arm", "seed"}},
                retry_of=t.system_attrs.get("failed_trial"),
                error=t.user_attrs.get("error") or t.user_attrs.get("failure"),
            )
        )
    return records


def write_trials_csv(records: list[TrialRecord], folder: SweepFolder) -> Path:
    """``trials.csv`` of the sweep folder (columns: :data:`hcc_exp.sweeps.folder.TRIALS_COLUMNS`)."""
    return folder.write_trials(records)


@dataclass
class SweepStatus:
    """Counts that decide whether work remains.

    Attributes:
        expected: grid cells, or the trial budget of a search.
        done: cells with a COMPLETE trial (grid), or finished trials not being retried (search).
        waiting, running: trials in those states.
        budget_left: search trials still to be created.
    """

    expected: int
    done: int
    waiting: int
    running: int
    budget_left: int

    @property
    def work_left(self) -> bool:
        return self.waiting > 0 or self.budget_left > 0

    @property
    def finished(self) -> bool:
        return not self.work_left and self.running == 0


def sweep_status(study: optuna.Study, resolved: ResolvedSweep) -> SweepStatus:
    trials = study.get_trials(deepcopy=False)
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    if resolved.spec.method == "grid":
        cells = {c.key for c in resolved.cells()}
        complete = {
            (t.user_attrs.get("arm"), t.user_attrs.get("seed")) for t in trials if t.state == TrialState.COMPLETE
        }
        return SweepStatus(len(cells), len(cells & complete), waiting, running, 0)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    originals = [t for t in trials if "failed_trial" not in t.system_attrs]
    done = sum(t.state.is_finished() and t.number not in retried for t in trials)
    budget = resolved.spec.trials or 0
    return SweepStatus(budget, done, waiting, running, max(0, budget - len(originals)))


@dataclass
class SweepSummary:
    """Outcome of :func:`run_sweep`.

    Attributes:
        name: sweep name.
        sweep_dir: the sweep folder.
        backend: ``optuna`` or ``wandb``.
        method: grid / random / bayes.
        metric, goal: the objective.
        storage: where the study lives (password masked).
        expected: grid cells (arm x seed) or the trial budget.
        finished: cells COMPLETE (grid) or trials finished and not being retried (search).
        trials: every trial of the study (all machines), oldest first.
        cells: (arm, seed) of a grid, in spec order.
        trials_csv: the written ``trials.csv`` (None for the W&B backend).
        wandb_sweep_id: the W&B sweep id (W&B backend only).
    """

    name: str
    sweep_dir: Path
    backend: str
    method: str
    metric: str
    goal: str
    storage: str
    expected: int
    trials: list[TrialRecord] = field(default_factory=list)
    cells: list[tuple[str, int]] = field(default_factory=list)
    finished: int = 0
    trials_csv: Path | None = None
    wandb_sweep_id: str | None = None

    @property
    def state_counts(self) -> dict[str, int]:
        return dict(Counter(t.state for t in self.trials))

    @property
    def missing(self) -> list[tuple[str, int]]:
        """Grid cells without a COMPLETE trial."""
        done = {(t.arm, t.seed) for t in self.trials if t.state == "COMPLETE"}
        return [c for c in self.cells if c not in done]

    @property
    def complete(self) -> bool:
        """Every arm x seed COMPLETE (grid), or the whole trial budget finished (search)."""
        if self.backend != "optuna":
            return True
        if self.method == "grid":
            return not self.missing
        return self.finished >= self.expected

    @property
    def best(self) -> TrialRecord | None:
        scored = [t for t in self.trials if t.state == "COMPLETE" and t.value is not None and math.isfinite(t.value)]
        if not scored:
            return None
        pick = max if self.goal == "maximize" else min
        return pick(scored, key=lambda t: t.value)

    def to_rich_table(self) -> Any:
        """A Rich table: one row per arm (grid) or the best trials (search)."""
        from rich.table import Table

        counts = ", ".join(f"{k.lower()} {v}" for k, v in sorted(self.state_counts.items()))
        table = Table(
            title=f"Sweep {self.name} ({self.backend}, {self.method}) - {counts or 'no trials'}",
            caption=f"{self.sweep_dir}  storage: {self.storage}",
        )
        complete = [t for t in self.trials if t.state == "COMPLETE" and t.value is not None]
        if self.method == "grid":
            for column in ("arm", "seeds complete", f"{self.metric} mean", "min", "max"):
                table.add_column(column)
            arms = list(dict.fromkeys(arm for arm, _ in self.cells))
            for arm in arms:
                values = [t.value for t in complete if t.arm == arm]
                seeds = sum(1 for c in self.cells if c[0] == arm)
                row = [arm, f"{len(values)}/{seeds}"]
                row += (
                    [f"{sum(values) / len(values):.4f}", f"{min(values):.4f}", f"{max(values):.4f}"]
                    if values
                    else ["-", "-", "-"]
                )
                table.add_row(*row)
        else:
            for column in ("trial", "state", self.metric, "params"):
                table.add_column(column)
            ranked = sorted(complete, key=lambda t: t.value, reverse=self.goal == "maximize")[:10]
            for t in ranked:
                params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items())
                table.add_row(str(t.number), t.state, f"{t.value:.4f}", params)
        return table

    def __str__(self) -> str:
        states = ", ".join(f"{k}={v}" for k, v in sorted(self.state_counts.items()))
        return f"sweep {self.name}: {states}; complete={self.complete}; folder {self.sweep_dir}"


# --------------------------------------------------------------------------- per cell (hcc-exp sweep-status)
@dataclass
class CellState:
    """One arm x seed (grid) or one sampled trial (search), across its attempts.

    Attributes:
        state: ``complete``, ``running``, ``waiting``, ``failed``, ``pruned`` or ``missing``
            (a grid cell not queued yet).
        trial: the deciding attempt's trial number.
        retries: failed attempts before it (worker died, error, preemption).
        preemptions: of those, preemptions (resumed from a checkpoint when one existed).
        where: host and pid (and Slurm job) of a running attempt.
        slurm_job, slurm_state: the Slurm array task running it and its state.
        duration_s: of the complete attempt, or the running one so far.
    """

    arm: str
    seed: int | None
    state: str
    trial: int | None = None
    retries: int = 0
    preemptions: int = 0
    value: float | None = None
    duration_s: float | None = None
    where: str | None = None
    slurm_job: str | None = None
    slurm_state: str | None = None
    error: str | None = None


_STATE_ORDER = ("COMPLETE", "RUNNING", "WAITING", "PRUNED", "FAIL")


def cell_states(study: optuna.Study, resolved: ResolvedSweep, slurm_states: dict[str, str] | None = None) -> list[CellState]:
    """Per arm and seed, the state of the sweep (grid cells in spec order; search trials by number)."""
    import datetime as _dt

    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    slurm_states = slurm_states or {}
    if resolved.spec.method == "grid":
        groups: dict[Any, list] = {c.key: [] for c in resolved.cells()}
        for t in trials:
            key = (t.user_attrs.get("arm"), t.user_attrs.get("seed"))
            groups.setdefault(key, []).append(t)
    else:
        groups = {}
        for t in trials:
            first = t.system_attrs.get("failed_trial", t.number)
            groups.setdefault(first, []).append(t)
    now = _dt.datetime.now()
    cells: list[CellState] = []
    for key, attempts in groups.items():
        arm, seed = key if isinstance(key, tuple) else (attempts[0].user_attrs.get("arm", "search"), attempts[0].user_attrs.get("seed"))
        if not attempts:
            cells.append(CellState(str(arm), seed, "missing"))
            continue
        deciding = next((t for s in _STATE_ORDER for t in reversed(attempts) if t.state.name == s), attempts[-1])
        failures = [t for t in attempts if t.state == TrialState.FAIL]
        cell = CellState(
            arm=str(arm), seed=seed, state="failed" if deciding.state == TrialState.FAIL else deciding.state.name.lower(),
            trial=deciding.number, retries=len(failures) if deciding.state != TrialState.FAIL else len(failures) - 1,
            preemptions=max([int(t.user_attrs.get("preemptions", 0)) for t in attempts] or [0]),
            value=deciding.value if deciding.state == TrialState.COMPLETE else None,
        )  # fmt: skip
        if deciding.datetime_start is not None:
            end = deciding.datetime_complete or (now if deciding.state == TrialState.RUNNING else None)
            cell.duration_s = None if end is None else round((end - deciding.datetime_start).total_seconds(), 1)
        worker = deciding.user_attrs.get("worker")
        if isinstance(worker, dict) and worker.get("trial") == deciding.number and deciding.state == TrialState.RUNNING:
            cell.where = f"{worker.get('host')}:{worker.get('pid')}"
            cell.slurm_job = worker.get("slurm_job")
            cell.slurm_state = slurm_states.get(cell.slurm_job or "")
        if deciding.state == TrialState.FAIL:
            cell.error = deciding.user_attrs.get("error") or deciding.user_attrs.get("failure")
        cells.append(cell)
    return cells


@dataclass
class SweepStatusReport:
    """``hcc-exp sweep-status``: every cell, the Slurm submissions and their task states."""

    name: str
    sweep_dir: Path
    storage: str
    cells: list[CellState]
    launches: list[dict[str, Any]] = field(default_factory=list)
    slurm_states: dict[str, str] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(c.state for c in self.cells))

    def to_json(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {
            "sweep": self.name,
            "sweep_dir": str(self.sweep_dir),
            "storage": self.storage,
            "counts": self.counts,
            "cells": [asdict(c) for c in self.cells],
            "slurm": [
                {"job_id": launch.get("job_id"), "tasks": {t: self.slurm_states.get(t) for t in launch.get("tasks", [])}}
                for launch in self.launches
            ],
        }

    def to_rich_table(self) -> Any:
        from rich.table import Table

        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        caption = f"{self.sweep_dir}  storage: {self.storage}"
        for launch in self.launches:
            tasks = ", ".join(f"{t} {self.slurm_states.get(t, '?')}" for t in launch.get("tasks", []))
            caption += f"\nSlurm job {launch.get('job_id')}: {tasks}"
        table = Table(title=f"Sweep {self.name} - {counts or 'no cells'}", caption=caption)
        for column in ("arm", "seed", "state", "where", "retries", "value", "duration", "trial"):
            table.add_column(column)
        for c in self.cells:
            where = c.where or ""
            if c.slurm_job:
                where += f" (Slurm {c.slurm_job}{' ' + c.slurm_state if c.slurm_state else ''})"
            retries = str(c.retries) + (f" ({c.preemptions} preempted)" if c.preemptions else "")
            value = "" if c.value is None or not math.isfinite(c.value) else f"{c.value:.4f}"
            duration = "" if c.duration_s is None else f"{c.duration_s:.0f} s"
            state = c.state if not c.error else f"{c.state}: {c.error[:60]}"
            table.add_row(c.arm, "" if c.seed is None else str(c.seed), state, where, retries, value, duration,
                          "" if c.trial is None else str(c.trial))  # fmt: skip
        return table
