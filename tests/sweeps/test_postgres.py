"""Sweeps on a real PostgreSQL server (started by the fixture as the postgres user on a free port).

Skipped only where no PostgreSQL server binary is installed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from optuna.trial import TrialState

from hcc_exp.errors import SweepError
from hcc_exp.sweeps.optuna_backend import WORKER_ATTR
from hcc_exp.sweeps.runner import prepare_sweep, run_sweep, worker_command
from hcc_exp.sweeps.storage import resolve_storage
from tests.sweeps.conftest import FAKE_TRAIN, free_port, write_spec

pytestmark = pytest.mark.postgres

CELLS = [("a", 0), ("a", 1), ("b", 0), ("b", 1)]


def test_postgres_url_uses_psycopg3_and_masks_password() -> None:
    target = resolve_storage("postgresql://u:secret@db.example.org:5432/hcc", Path("/x"))
    assert target.kind == "rdb" and target.url.startswith("postgresql+psycopg://u:secret@")
    assert "secret" not in target.display and ":***@" in target.display


def test_killed_worker_on_postgres_recovers_by_heartbeat(
    tmp_path: Path, database: str, fake_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL a worker mid-trial; Optuna's RDB heartbeat fails the trial, it is retried, every cell completes once.

    The trial is made to look like another machine's (host rewritten), so only the
    heartbeat (not the local pid check) can reveal the dead worker.
    """
    hang = tmp_path / "hang"
    hang.mkdir()
    monkeypatch.setenv("FAKE_TRAIN_HANG_DIR", str(hang))
    spec = write_spec(tmp_path / "s.yaml", name="pg", storage=database, heartbeat_interval=1, grace_period=3)
    prepared = prepare_sweep(spec, runs_root=tmp_path / "runs")
    assert prepared.target.kind == "rdb" and sorted(prepared.enqueued) == CELLS
    argv, env = worker_command(prepared, FAKE_TRAIN, 0)
    assert database not in " ".join(argv)  # the URL travels in the environment, not the process list
    with (tmp_path / "worker.log").open("wb") as log:
        worker = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not (hang / "hung.pid").is_file() or not (hang / "hung.pid").read_text():
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
            assert time.monotonic() < deadline, "the worker never started a trial"
            time.sleep(0.1)
        os.kill(worker.pid, signal.SIGKILL)
    finally:
        worker.kill()
        worker.wait()
    (running,) = prepared.study.get_trials(states=(TrialState.RUNNING,))
    storage = prepared.storage
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name("pg"), running.number)
    storage.set_trial_user_attr(trial_id, WORKER_ATTR, dict(running.user_attrs[WORKER_ATTR], host="another-machine"))

    summary = run_sweep(spec, workers=2, train_fn=FAKE_TRAIN, runs_root=tmp_path / "runs", progress=False)

    assert summary.complete
    assert Counter((t.arm, t.seed) for t in summary.trials if t.state == "COMPLETE") == Counter(dict.fromkeys(CELLS, 1))
    killed = next(t for t in summary.trials if t.number == running.number)
    assert killed.state == "FAIL"
    (retry,) = [t for t in summary.trials if t.retry_of == killed.number]
    assert retry.state == "COMPLETE" and (retry.arm, retry.seed) == (killed.arm, killed.seed)
    assert Counter(t.state for t in summary.trials) == {"COMPLETE": 4, "FAIL": 1}
    assert "postgresql+psycopg://postgres@127.0.0.1" in summary.storage
    # A second machine joining the finished study finds nothing left to do.
    joined = run_sweep(spec, workers=1, join=database, train_fn=FAKE_TRAIN, runs_root=tmp_path / "b", progress=False)
    assert len(joined.trials) == 5 and joined.complete


def test_unreachable_database_is_a_sweep_error(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    spec = write_spec(tmp_path / "s.yaml", storage=f"postgresql://postgres@127.0.0.1:{port}/none")
    with pytest.raises(SweepError, match=r"cannot open study storage postgresql\+psycopg://"):
        prepare_sweep(spec, runs_root=tmp_path / "runs")
