"""The supervisor stopped from outside: no orphaned worker, the running trial re-queued; --join validated first."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hcc_exp.sweeps.liveness import process_alive
from hcc_exp.sweeps.runner import run_sweep, sweep_storage
from tests.sweeps.conftest import FAKE_TRAIN, write_spec

CELLS = [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
REPO = Path(__file__).resolve().parents[2]


def _wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_stopped_supervisor_leaves_no_worker_and_a_rerun_completes_every_cell_once(
    tmp_path: Path, fake_env: Path, monkeypatch: pytest.MonkeyPatch, stop: signal.Signals
) -> None:
    hang = tmp_path / "hang"
    hang.mkdir()
    monkeypatch.setenv("FAKE_TRAIN_HANG_DIR", str(hang))
    spec = write_spec(tmp_path / "s.yaml", name="stopped")
    code = (
        "from hcc_exp.sweeps.runner import run_sweep; "
        f"run_sweep({str(spec)!r}, workers=1, train_fn={FAKE_TRAIN!r}, runs_root={str(tmp_path / 'runs')!r}, "
        "progress=False)"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    log = (tmp_path / "supervisor.log").open("wb")
    supervisor = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        marker = hang / "hung.pid"
        _wait_for(lambda: marker.is_file() and marker.read_text(), 90, "the worker never started a trial")
        worker_pid = int(marker.read_text())
        assert worker_pid != supervisor.pid
        supervisor.send_signal(stop)
        supervisor.wait(timeout=30)
        # The worker goes with its supervisor (SIGTERM: stopped by it; SIGKILL: parent-death signal).
        _wait_for(lambda: not process_alive(worker_pid, None), 10, f"worker {worker_pid} survived its supervisor")
    finally:
        supervisor.kill()
        supervisor.wait()
        log.close()
    study = optuna.load_study(study_name="stopped", storage=sweep_storage(tmp_path / "runs" / "stopped")[1])
    trials = study.get_trials()
    (failed,) = [t for t in trials if t.state == TrialState.FAIL]
    assert failed.user_attrs["failure"] == "worker interrupted"
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == failed.number]
    assert retry.state == TrialState.WAITING and retry.user_attrs["arm"] == failed.user_attrs["arm"]

    summary = run_sweep(spec, workers=2, train_fn=FAKE_TRAIN, runs_root=tmp_path / "runs", progress=False)
    assert summary.complete
    assert Counter((t.arm, t.seed) for t in summary.trials if t.state == "COMPLETE") == Counter(dict.fromkeys(CELLS, 1))
    assert Counter(t.state for t in summary.trials) == {"COMPLETE": 4, "FAIL": 1}
    calls = [json.loads(line) for line in fake_env.read_text().splitlines()]
    assert len(calls) == 5  # 4 cells + the interrupted attempt, nothing run twice


def test_join_with_a_bad_url_writes_nothing(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "s.yaml", name="j")
    work = tmp_path / "cwd"
    work.mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [sys.executable, "-m", "hcc_exp.cli", "sweep", str(spec), "--join", "not-a-url"],
        cwd=work, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "not-a-url" in done.stderr and "nothing was written" in done.stderr
    assert "Traceback" not in done.stderr
    assert list(work.iterdir()) == []
