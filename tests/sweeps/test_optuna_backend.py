"""Optuna backend on journal storage: enqueue once, worker processes, dead-worker recovery, search + pruning."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from hcc_exp.errors import SweepError
from hcc_exp.sweeps.optuna_backend import WORKER_ATTR, enqueue_missing
from hcc_exp.sweeps.runner import prepare_sweep, run_sweep, sweep_storage, worker_command
from hcc_exp.sweeps.status import trial_records
from tests.sweeps.conftest import FAKE_TRAIN, write_spec
from tests.sweeps.fake_train import objective_value
from tests.tracking.conftest import wandb_offline_env  # noqa: F401 - fixture

CELLS = [("a", 0), ("a", 1), ("b", 0), ("b", 1)]


def _complete_cells(trials) -> Counter:
    return Counter((t.arm, t.seed) for t in trials if t.state == "COMPLETE")


def _trial_id(prepared, number: int) -> int:
    storage = prepared.storage
    return storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(prepared.study.study_name), number
    )


def test_enqueue_every_cell_once_and_only_missing_on_rerun(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "s.yaml")
    first = prepare_sweep(spec, runs_root=tmp_path / "runs")
    assert sorted(first.enqueued) == CELLS
    waiting = first.study.get_trials(states=(TrialState.WAITING,))
    assert sorted((t.user_attrs["arm"], t.user_attrs["seed"]) for t in waiting) == CELLS
    assert sorted((t.system_attrs["fixed_params"]["arm"], t.system_attrs["fixed_params"]["seed"]) for t in waiting) == CELLS

    again = prepare_sweep(spec, runs_root=tmp_path / "runs")
    assert again.enqueued == [] and len(again.study.get_trials()) == 4

    # One cell running, one complete, one failed (e.g. an exception): only the failed one is re-queued.
    storage = again.storage
    by_cell = {(t.user_attrs["arm"], t.user_attrs["seed"]): t.number for t in waiting}
    for cell, final in ((("a", 0), None), (("a", 1), TrialState.COMPLETE), (("b", 0), TrialState.FAIL)):
        trial_id = _trial_id(again, by_cell[cell])
        assert storage.set_trial_state_values(trial_id, state=TrialState.RUNNING)
        if final is not None:
            storage.set_trial_state_values(trial_id, state=final, values=[0.7] if final == TrialState.COMPLETE else None)
    assert enqueue_missing(again.study, again.resolved) == [("b", 0)]
    assert enqueue_missing(again.study, again.resolved) == []
    states = Counter(t.state.name for t in again.study.get_trials())
    assert states == {"RUNNING": 1, "COMPLETE": 1, "FAIL": 1, "WAITING": 2}


def test_in_process_sweep_writes_run_folders_and_trials_csv(tmp_path: Path, fake_env: Path) -> None:
    from hcc_exp.reporting.sweep_folder import read_sweep

    spec = write_spec(tmp_path / "s.yaml")
    summary = run_sweep(spec, workers=0, train_fn=FAKE_TRAIN, runs_root=tmp_path / "runs", progress=False)
    assert summary.complete and summary.missing == []
    assert _complete_cells(summary.trials) == Counter(dict.fromkeys(CELLS, 1))
    sweep_dir = tmp_path / "runs" / "grid"
    for t in summary.trials:
        run_dir = sweep_dir / t.run_dir
        assert run_dir.name == f"{t.number:04d}-{t.arm}-s{t.seed}"
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert t.value == pytest.approx(metrics["internal/os/c_index"])
        # The arm's settings and the seed reached train: 3d scores 0.02 above 2d (fake_train.objective_value).
        assert t.value == pytest.approx(0.8 + (0.02 if t.arm == "a" else 0.0) + 0.001 * t.seed)
    table = pd.read_csv(sweep_dir / "trials.csv")
    assert list(table.columns[:7]) == ["number", "arm", "seed", "state", "value", "run_dir", "duration_s"]
    assert (table["state"] == "COMPLETE").all() and (table["duration_s"] > 0).all()
    assert (sweep_dir / "sweep.yaml").is_file() and (sweep_dir / "optuna.journal").is_file()
    # The reporting side reads the folder: one run per arm x seed.
    folder = read_sweep(sweep_dir)
    assert sorted((r.arm, r.seed) for r in folder.runs) == CELLS and folder.notes == []
    assert folder.objective.metric == "internal/os/c_index"
    # The dashboard opens the same storage.
    target, storage = sweep_storage(sweep_dir)
    assert target.kind == "journal" and optuna.get_all_study_names(storage) == ["grid"]


def test_failed_arm_is_recorded_then_retried_by_a_rerun(tmp_path: Path, fake_env: Path, monkeypatch) -> None:
    spec = write_spec(tmp_path / "s.yaml")
    monkeypatch.setenv("FAKE_TRAIN_FAIL_ARM", "2d")
    first = run_sweep(spec, workers=0, train_fn=FAKE_TRAIN, runs_root=tmp_path / "runs", progress=False)
    assert not first.complete and sorted(first.missing) == [("b", 0), ("b", 1)]
    failed = [t for t in first.trials if t.state == "FAIL"]
    assert len(failed) == 2 and all("fake training diverged" in t.error for t in failed)

    monkeypatch.delenv("FAKE_TRAIN_FAIL_ARM")
    second = run_sweep(spec, workers=0, train_fn=FAKE_TRAIN, runs_root=tmp_path / "runs", progress=False)
    assert second.complete
    assert _complete_cells(second.trials) == Counter(dict.fromkeys(CELLS, 1))
    assert Counter(t.state for t in second.trials) == {"COMPLETE": 4, "FAIL": 2}


def test_two_worker_processes_share_the_study(tmp_path: Path, fake_env: Path, monkeypatch) -> None:
    # Each fake trial waits until two different processes have started one: proves concurrency.
    monkeypatch.setenv("FAKE_TRAIN_BARRIER", "2")
    spec = write_spec(tmp_path / "s.yaml", name="two")
    started = time.perf_counter()
    summary = run_sweep(spec, workers=2, train_fn=FAKE_TRAIN, runs_root=tmp_path / "runs", progress=False)
    elapsed = time.perf_counter() - started
    assert summary.complete
    assert Counter(t.state for t in summary.trials) == {"COMPLETE": 4}
    assert _complete_cells(summary.trials) == Counter(dict.fromkeys(CELLS, 1))
    calls = [json.loads(line) for line in fake_env.read_text().splitlines()]
    assert len(calls) == 4 and len({c["pid"] for c in calls}) == 2
    assert os.getpid() not in {c["pid"] for c in calls}  # trials ran in worker processes
    study = optuna.load_study(study_name="two", storage=sweep_storage(tmp_path / "runs" / "two")[1])
    assert {t.user_attrs[WORKER_ATTR]["pid"] for t in study.trials} == {c["pid"] for c in calls}
    assert elapsed < 60
    assert (tmp_path / "runs" / "two" / "logs" / "worker-0.log").is_file()


@pytest.mark.parametrize("detection", ["pid", "heartbeat"])
def test_killed_worker_trial_is_failed_retried_and_completed_once(
    tmp_path: Path, fake_env: Path, monkeypatch, detection: str
) -> None:
    """SIGKILL a worker mid-trial; a re-run fails that trial, re-queues it and completes every cell once.

    ``pid``: the dead worker's process is gone (same host). ``heartbeat``: the trial looks
    like another machine's (host rewritten), so only its stale heartbeat file reveals it.
    """
    hang = tmp_path / "hang"
    hang.mkdir()
    monkeypatch.setenv("FAKE_TRAIN_HANG_DIR", str(hang))
    spec = write_spec(tmp_path / "s.yaml", name="killed", heartbeat_interval=1, grace_period=3)
    prepared = prepare_sweep(spec, runs_root=tmp_path / "runs")
    argv, env = worker_command(prepared, FAKE_TRAIN, 0)
    with (tmp_path / "worker.log").open("wb") as log:
        worker = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not (hang / "hung.pid").is_file() or not (hang / "hung.pid").read_text():
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
            assert time.monotonic() < deadline, "the worker never started a trial"
            time.sleep(0.1)
        assert int((hang / "hung.pid").read_text()) == worker.pid
        os.kill(worker.pid, signal.SIGKILL)
    finally:
        worker.kill()
        worker.wait()
    (running,) = prepared.study.get_trials(states=(TrialState.RUNNING,))
    if detection == "heartbeat":
        attrs = dict(running.user_attrs[WORKER_ATTR], host="another-machine")
        prepared.storage.set_trial_user_attr(_trial_id(prepared, running.number), WORKER_ATTR, attrs)

    summary = run_sweep(spec, workers=2, train_fn=FAKE_TRAIN, runs_root=tmp_path / "runs", progress=False)

    assert summary.complete
    assert _complete_cells(summary.trials) == Counter(dict.fromkeys(CELLS, 1))
    by_number = {t.number: t for t in summary.trials}
    killed = by_number[running.number]
    assert killed.state == "FAIL"
    expected = "is gone" if detection == "pid" else "no heartbeat"
    assert expected in killed.error and killed.error.startswith("worker died")
    (retry,) = [t for t in summary.trials if t.retry_of == killed.number]
    assert retry.state == "COMPLETE" and (retry.arm, retry.seed) == (killed.arm, killed.seed)
    assert Counter(t.state for t in summary.trials) == {"COMPLETE": 4, "FAIL": 1}
    assert list((tmp_path / "runs" / "killed" / "optuna.journal.heartbeats").iterdir()) == []


def test_search_samples_prunes_and_stops_at_the_budget(tmp_path: Path, fake_env: Path) -> None:
    spec = write_spec(
        tmp_path / "s.yaml",
        name="search",
        method="bayes",
        arms=[],
        seeds=[5],
        trials=10,
        parameters={"optim.lr": {"min": 1e-5, "max": 1e-1, "distribution": "log_uniform_values"}},
        pruner={"type": "median", "n_startup_trials": 2, "n_warmup_steps": 0},
        prune_metric="val/os_c_index",
        sampler_seed=0,
    )
    summary = run_sweep(spec, workers=0, train_fn=FAKE_TRAIN, runs_root=tmp_path / "runs", progress=False)
    assert len(summary.trials) == 10 and summary.complete
    states = Counter(t.state for t in summary.trials)
    assert set(states) <= {"COMPLETE", "PRUNED"} and states["PRUNED"] >= 1 and states["COMPLETE"] >= 2
    from hcc_exp.config import ExperimentConfig

    for t in summary.trials:
        assert t.arm == "search" and t.seed == 5 and 1e-5 <= t.params["optim.lr"] <= 1e-1
        if t.state == "COMPLETE":
            config = ExperimentConfig(seed=5, optim={"lr": t.params["optim.lr"]})
            assert t.value == pytest.approx(objective_value(config))
    best = summary.best
    assert best is not None and best.value == max(t.value for t in summary.trials if t.state == "COMPLETE")
    study = optuna.load_study(study_name="search", storage=sweep_storage(tmp_path / "runs" / "search")[1])
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert all(t.intermediate_values for t in pruned)  # reported by the Lightning pruning callback
    # A re-run adds nothing: the budget is spent.
    again = run_sweep(spec, workers=0, train_fn=FAKE_TRAIN, runs_root=tmp_path / "runs", progress=False)
    assert len(again.trials) == 10


def test_search_retry_keeps_the_sampled_params(tmp_path: Path, fake_env: Path) -> None:
    spec = write_spec(
        tmp_path / "s.yaml", name="resample", method="random", arms=[], seeds=[0], trials=1,
        parameters={"optim.lr": {"min": 1e-4, "max": 1e-2, "distribution": "log_uniform_values"}}, sampler_seed=3,
    )
    prepared = prepare_sweep(spec, runs_root=tmp_path / "runs")
    trial = prepared.study.ask()
    lr = trial.suggest_float("optim.lr", 1e-4, 1e-2, log=True)
    prepared.storage.set_trial_user_attr(
        _trial_id(prepared, trial.number), WORKER_ATTR, {"host": os.uname().nodename, "pid": 2**22 + 7, "trial": 0}
    )
    summary = run_sweep(spec, workers=0, train_fn=FAKE_TRAIN, runs_root=tmp_path / "runs", progress=False)
    (retry,) = [t for t in summary.trials if t.retry_of == trial.number]
    assert retry.state == "COMPLETE" and retry.params["optim.lr"] == lr
    assert len(summary.trials) == 2 and summary.complete


def test_same_name_with_another_spec_is_refused(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "s.yaml")
    prepare_sweep(spec, runs_root=tmp_path / "runs")
    changed = write_spec(tmp_path / "s.yaml", seeds=[0, 1, 2])
    with pytest.raises(SweepError, match=r"already exists .* different spec \(changed: seeds\)"):
        prepare_sweep(changed, runs_root=tmp_path / "runs")


def test_join_runs_an_existing_study_from_another_folder(tmp_path: Path, fake_env: Path) -> None:
    spec = write_spec(tmp_path / "s.yaml", name="shared")
    with pytest.raises(SweepError, match="no journal file exists at .*elsewhere.journal; nothing was written"):
        run_sweep(spec, workers=0, join=str(tmp_path / "elsewhere.journal"), runs_root=tmp_path / "b", progress=False)
    assert not (tmp_path / "elsewhere.journal").exists() and not (tmp_path / "b").exists()
    prepared = prepare_sweep(spec, runs_root=tmp_path / "a")  # machine A created and queued it
    summary = run_sweep(
        spec, workers=1, join=str(prepared.target.journal_path), train_fn=FAKE_TRAIN,
        runs_root=tmp_path / "b", progress=False,
    )
    assert summary.complete and _complete_cells(summary.trials) == Counter(dict.fromkeys(CELLS, 1))
    assert all((tmp_path / "b" / "shared" / t.run_dir / "metrics.json").is_file() for t in summary.trials)
    assert len(trial_records(prepared.study)) == 4  # machine A sees them


def test_train_fn_must_be_importable_by_workers(tmp_path: Path, fake_env: Path) -> None:
    spec = write_spec(tmp_path / "s.yaml")
    with pytest.raises(SweepError, match="cannot be imported by worker processes"):
        run_sweep(spec, workers=1, train_fn=lambda config, **kw: None, runs_root=tmp_path / "runs", progress=False)
    with pytest.raises(SweepError, match="cannot be imported"):
        run_sweep(spec, workers=1, train_fn="tests.sweeps.nope:train", runs_root=tmp_path / "runs", progress=False)
    assert not (tmp_path / "runs").exists()


def test_sweep_trials_log_offline_wandb_runs_grouped_by_sweep(
    tmp_path: Path, fake_env: Path, wandb_offline_env: Path  # noqa: F811
) -> None:
    from hcc_exp.tracking import find_offline_runs, read_offline_run

    spec = write_spec(
        tmp_path / "s.yaml", name="tracked", seeds=[0],
        overrides={"tracking.wandb": True, "tracking.wandb_mode": "offline", "trainer.max_epochs": 2},
    )
    summary = run_sweep(spec, workers=0, train_fn=FAKE_TRAIN, runs_root=tmp_path / "runs", progress=False)
    assert summary.complete
    runs = {}
    for path in find_offline_runs(tmp_path / "runs" / "tracked" / "wandb"):
        run = read_offline_run(path)
        runs[next(t for t in run.tags if t.startswith("arm:"))] = run
    assert sorted(runs) == ["arm:a", "arm:b"]
    for arm, dims in (("arm:a", "3d"), ("arm:b", "2d")):
        run = runs[arm]
        assert run.group == "tracked" and run.job_type == "sweep" and "sweep:tracked" in run.tags
        assert run.config["model.dims"] == dims and run.config["seed"] == 0  # flat dotted keys
        trial = next(t for t in summary.trials if f"arm:{t.arm}" == arm)
        assert run.summary["internal/os/c_index"] == pytest.approx(trial.value)
        assert [row["epoch"] for row in run.history if "val/os_c_index" in row] == [0, 1]


def test_sigterm_fails_and_requeues_the_running_trial(tmp_path: Path, fake_env: Path, monkeypatch) -> None:
    hang = tmp_path / "hang"
    hang.mkdir()
    monkeypatch.setenv("FAKE_TRAIN_HANG_DIR", str(hang))
    prepared = prepare_sweep(write_spec(tmp_path / "s.yaml", name="term"), runs_root=tmp_path / "runs")
    argv, env = worker_command(prepared, FAKE_TRAIN, 0)
    worker = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (hang / "hung.pid").is_file() or not (hang / "hung.pid").read_text():
            assert worker.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        worker.kill()
        worker.wait()
    trials = prepared.study.get_trials()
    (failed,) = [t for t in trials if t.state == TrialState.FAIL]
    assert failed.user_attrs["failure"] == "worker interrupted"
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == failed.number]
    assert retry.state == TrialState.WAITING and retry.user_attrs["arm"] == failed.user_attrs["arm"]
    assert Counter(t.state.name for t in trials) == {"FAIL": 1, "WAITING": 4}


def test_unknown_pruner_option_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    from hcc_exp.errors import ConfigError

    spec = write_spec(
        tmp_path / "s.yaml", method="random", arms=[], seeds=[0], trials=3,
        parameters={"optim.lr": {"values": [0.01, 0.001]}}, pruner={"type": "median", "n_startup": 3},
    )
    with pytest.raises(ConfigError, match=r"pruner median options \{'n_startup': 3\}"):
        prepare_sweep(spec, runs_root=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_seeds_and_name_options_run_a_quick_variant_beside_the_full_study(tmp_path: Path, fake_env: Path) -> None:
    spec = write_spec(tmp_path / "s.yaml")
    quick = run_sweep(
        spec, workers=0, train_fn=FAKE_TRAIN, runs_root=tmp_path / "runs", progress=False, seeds=[1], name="grid-quick"
    )
    assert quick.name == "grid-quick" and quick.complete
    assert _complete_cells(quick.trials) == Counter({("a", 1): 1, ("b", 1): 1})
    assert (tmp_path / "runs" / "grid-quick" / "optuna.journal").is_file()
    assert not (tmp_path / "runs" / "grid").exists()
    # The full sweep afterwards is its own study with every cell.
    full = prepare_sweep(spec, runs_root=tmp_path / "runs")
    assert sorted(full.enqueued) == CELLS
