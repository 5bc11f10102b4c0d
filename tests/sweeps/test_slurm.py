"""Sweeps on a real single-node Slurm (slurmctld + slurmd started by the fixture; see slurm_cluster.py).

Skipped with the reason where Slurm / munge are not installed or not root. The fake train
keeps the array tests fast; the preemption test runs one real tiny trial so that Lightning
checkpoints and resumes it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hcc_exp.sweeps.folder import SweepFolder
from hcc_exp.sweeps.preemption import EPOCHS_DONE_ATTR, LAST_CHECKPOINT, START_EPOCH_ATTR
from hcc_exp.sweeps.runner import sweep_status_report, sweep_storage
from hcc_exp.sweeps.slurm import launch_sweep
from hcc_exp.sweeps.slurm_jobs import job_states
from tests.sweeps.conftest import FAKE_TRAIN, write_spec
from tests.sweeps.slurm_cluster import SlurmCluster, missing_reason, start_cluster

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]
CELLS = [("a", 0), ("a", 1), ("b", 0), ("b", 1)]


@pytest.fixture(scope="module")
def slurm() -> Iterator[SlurmCluster]:
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def on_slurm(slurm: SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> SlurmCluster:
    """Clients (sbatch, squeue, submitit) talk to the fixture's cluster; jobs import this checkout."""
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("HCC_EXP_SWEEP_STORAGE", "")
    monkeypatch.chdir(REPO)
    return slurm


def _wait_for_job(cluster: SlurmCluster, job_id: str, timeout_s: float) -> dict[str, str]:
    """Wait until no task of ``job_id`` is pending or running; return the final task states."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        queued = cluster.run("squeue", "-h", "-r", "-j", job_id, "-o", "%i %T", check=False).stdout.strip()
        if not queued:
            return job_states([job_id])
        time.sleep(1)
    raise AssertionError(f"job {job_id} still queued after {timeout_s} s:\n{queued}\n{cluster.logs()}")


def _task_logs(folder: SweepFolder) -> str:
    return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(folder.slurm_dir.rglob("*.err")))


def _study(folder: SweepFolder) -> optuna.Study:
    return optuna.load_study(study_name=folder.read_spec().name, storage=sweep_storage(folder.root)[1])


def _complete_cells(study: optuna.Study) -> Counter:
    return Counter(
        (t.user_attrs["arm"], t.user_attrs["seed"]) for t in study.get_trials() if t.state == TrialState.COMPLETE
    )


def test_four_trials_over_two_array_tasks(tmp_path: Path, on_slurm: SlurmCluster, database: str, fake_env: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_TRAIN_BARRIER", "2")  # both tasks must be running trials at once
    monkeypatch.setenv("FAKE_TRAIN_SLEEP", "1")
    spec = write_spec(tmp_path / "s.yaml", name="slurm4", storage=database,
                      launcher={"type": "slurm", "array": 2, "cpus_per_task": 1, "time": 10})  # fmt: skip
    started = time.monotonic()
    launched = launch_sweep(spec, train_fn=FAKE_TRAIN, runs_root=tmp_path / "runs")
    assert time.monotonic() - started < 30  # returns at once
    assert "hcc-exp sweep-status" in launched.follow_hint() and launched.array == 2
    states = _wait_for_job(on_slurm, launched.job_id, 240)
    folder = launched.folder
    assert set(states.values()) == {"COMPLETED"}, (states, _task_logs(folder))
    study = _study(folder)
    assert _complete_cells(study) == Counter(dict.fromkeys(CELLS, 1)), _task_logs(folder)
    assert len(study.trials) == 4
    tasks = {t.user_attrs["worker"]["slurm_job"] for t in study.trials}
    assert tasks == {f"{launched.job_id}_0", f"{launched.job_id}_1"}
    (record,) = folder.read_launches()
    assert record["job_id"] == launched.job_id and record["array"] == 2
    assert all(Path(p).is_file() for p in record["task_logs"])
    assert database.split("@")[1] not in json.dumps(record) or "***" not in record["storage"]

    # hcc-exp sweep-status shows the sweep as a table (and as JSON) with the Slurm task states.
    report = sweep_status_report(folder.root)
    assert [c.state for c in report.cells] == ["complete"] * 4
    assert report.slurm_states == {f"{launched.job_id}_0": "COMPLETED", f"{launched.job_id}_1": "COMPLETED"}
    cli = [sys.executable, "-m", "hcc_exp.cli", "sweep-status", str(folder.root)]
    table = subprocess.run(cli, capture_output=True, text=True, timeout=120, env=os.environ | {"COLUMNS": "200"})
    assert table.returncode == 0, table.stderr
    assert "Sweep slurm4 - complete 4" in table.stdout and f"Slurm job {launched.job_id}" in table.stdout
    print(table.stdout)
    data = json.loads(subprocess.run([*cli, "--json"], capture_output=True, text=True, timeout=120).stdout)
    assert data["counts"] == {"complete": 4} and data["slurm"][0]["job_id"] == launched.job_id


def test_task_killed_mid_trial_is_retried_by_another_task(tmp_path: Path, on_slurm: SlurmCluster, database: str,
                                                         fake_env: Path, monkeypatch) -> None:
    hang = tmp_path / "hang"
    hang.mkdir()
    monkeypatch.setenv("FAKE_TRAIN_HANG_DIR", str(hang))
    spec = write_spec(tmp_path / "s.yaml", name="slurmkill", storage=database, heartbeat_interval=1, grace_period=5,
                      launcher={"type": "slurm", "array": 2, "cpus_per_task": 1, "time": 10})  # fmt: skip
    launched = launch_sweep(spec, train_fn=FAKE_TRAIN, runs_root=tmp_path / "runs")
    marker = hang / "hung.pid"
    deadline = time.monotonic() + 180
    while not (marker.is_file() and marker.read_text()):
        assert time.monotonic() < deadline, _task_logs(launched.folder)
        time.sleep(0.5)
    os.kill(int(marker.read_text()), signal.SIGKILL)  # no warning: no checkpoint, no requeue
    states = _wait_for_job(on_slurm, launched.job_id, 240)
    assert sorted(states.values()) == ["COMPLETED", "FAILED"], states
    study = _study(launched.folder)
    assert _complete_cells(study) == Counter(dict.fromkeys(CELLS, 1)), _task_logs(launched.folder)
    (killed,) = [t for t in study.trials if t.state == TrialState.FAIL]
    assert killed.user_attrs["failure"].startswith("worker died")
    (retry,) = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed.number]
    assert retry.state == TrialState.COMPLETE
    report = sweep_status_report(launched.folder.root)
    cell = next(c for c in report.cells if (c.arm, c.seed) == (killed.user_attrs["arm"], killed.user_attrs["seed"]))
    assert cell.state == "complete" and cell.retries == 1


def test_preempted_task_requeues_and_resumes_the_trial_from_its_checkpoint(
    tmp_path: Path, on_slurm: SlurmCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``scancel --signal=USR1`` mid-trial: the trial is checkpointed, the task requeued, the epochs continue."""
    from hcc_exp.config import build_config
    from hcc_exp.training.train import prepare_cohort
    from tests.factories import write_tiny_cohort

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("WANDB_MODE", "offline")
    epochs = 100  # about 0.1 s each here: long enough to be signalled mid-trial
    cohort = write_tiny_cohort(tmp_path / "cohort", n_patients=12, shape_zyx=(16, 24, 24))
    overrides = {
        "data.cohort_dir": str(cohort), "data.cache_dir": str(tmp_path / "cache"), "tracking.wandb": False,
        "preprocess.crop_size_vox": [16, 16, 16], "preprocess.spacing_mm": [2.0, 2.0, 2.0], "preprocess.workers": 1,
        "trainer.max_epochs": epochs, "trainer.patience": 100, "trainer.batch_size": 3,
        "trainer.accelerator": "cpu", "augment_copies": 1, "momentum.steps": 2,
    }  # fmt: skip
    prepare_cohort(build_config({}, overrides), progress=False)
    spec = write_spec(tmp_path / "s.yaml", name="slurmresume", arms=[{"name": "full", "set": {}}], seeds=[0],
                      overrides=overrides, heartbeat_interval=2, grace_period=120,
                      launcher={"type": "slurm", "array": 1, "cpus_per_task": 2, "time": 20})  # fmt: skip
    launched = launch_sweep(spec, runs_root=tmp_path / "runs")
    folder = launched.folder
    (task,) = launched.tasks
    deadline = time.monotonic() + 300
    first = None
    while first is None or first.user_attrs.get(EPOCHS_DONE_ATTR, 0) < 2:
        assert time.monotonic() < deadline, _task_logs(folder)
        time.sleep(0.2)
        trials = _study(folder).get_trials() if folder.journal.is_file() else []
        first = trials[0] if trials else None
    sent = on_slurm.run("scancel", "--signal=USR1", task, check=False)
    assert sent.returncode == 0, (sent.stderr, first.user_attrs, _task_logs(folder))
    states = _wait_for_job(on_slurm, launched.job_id, 400)
    assert states == {task: "COMPLETED"}, (states, _task_logs(folder))
    study = _study(folder)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE], _task_logs(folder)
    preempted, resumed = trials
    assert preempted.user_attrs["failure"].startswith("preempted (Slurm signal USR1); resumes from resume/")
    run_name = Path(preempted.user_attrs["run_dir"]).name
    assert resumed.user_attrs["resume_from"] == f"resume/{run_name}/{LAST_CHECKPOINT}"
    assert resumed.user_attrs["run_dir"] == preempted.user_attrs["run_dir"] and resumed.user_attrs["preemptions"] == 1
    # Epochs continue: the retry starts where the checkpoint stopped, not at 0, and ends at max_epochs.
    stopped_after = preempted.user_attrs[EPOCHS_DONE_ATTR]
    assert preempted.user_attrs[START_EPOCH_ATTR] == 0
    assert 1 <= resumed.user_attrs[START_EPOCH_ATTR] <= stopped_after < epochs
    assert resumed.user_attrs[EPOCHS_DONE_ATTR] == epochs
    run_dir = folder.root / resumed.user_attrs["run_dir"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs_trained"] == epochs
    # The published run folder is like any other (best.ckpt only); the resume checkpoints are gone.
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.suffix == ".ckpt") == ["best.ckpt"]
    assert not folder.resume_dir(run_name).exists()
    restarts = on_slurm.run("scontrol", "-o", "show", "job", task).stdout
    assert "Restarts=1" in restarts, restarts
    print(f"preempted after {stopped_after} epoch(s); resumed at epoch {resumed.user_attrs[START_EPOCH_ATTR]}")
