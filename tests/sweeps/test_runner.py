"""Sweep folder helpers the CLI calls: dashboard storage, offline W&B sync, the summary table."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from rich.console import Console

from hcc_exp.errors import SweepError
from hcc_exp.sweeps import runner
from hcc_exp.sweeps.runner import open_dashboard, run_sweep, sync_sweep
from hcc_exp.tracking import TrackingError
from tests.sweeps.conftest import FAKE_TRAIN, write_spec


@pytest.fixture
def finished_sweep(tmp_path: Path, fake_env: Path) -> tuple[Path, runner.SweepSummary]:
    spec = write_spec(tmp_path / "s.yaml")
    summary = run_sweep(spec, workers=0, train_fn=FAKE_TRAIN, runs_root=tmp_path / "runs", progress=False)
    return tmp_path / "runs" / "grid", summary


def test_open_dashboard_serves_the_sweep_storage(finished_sweep, monkeypatch: pytest.MonkeyPatch) -> None:
    import optuna_dashboard

    sweep_dir, _ = finished_sweep
    served = {}
    monkeypatch.setattr(optuna_dashboard, "run_server", lambda storage, host, port: served.update(s=storage, port=port))
    open_dashboard(sweep_dir, port=8123)
    study = optuna.load_study(study_name="grid", storage=served["s"])
    assert served["port"] == 8123 and len(study.trials) == 4
    with pytest.raises(SweepError, match="neither a sweep folder nor a sweep YAML"):
        open_dashboard(sweep_dir / "nope")


def test_sync_sweep_needs_a_login_only_when_there_is_something_to_sync(finished_sweep, monkeypatch) -> None:
    sweep_dir, _ = finished_sweep
    assert sync_sweep(sweep_dir) == []  # tracking.wandb was off: no offline runs
    offline = sweep_dir / "wandb" / "offline-run-20260101_000000-abc"
    offline.mkdir(parents=True)
    (offline / "run-abc.wandb").write_bytes(b":W&B\xe1\xbe\x00")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(sweep_dir / "no-netrc"))
    with pytest.raises(TrackingError, match="not logged in to W&B"):
        sync_sweep(sweep_dir)


def test_summary_table_per_arm(finished_sweep) -> None:
    _, summary = finished_sweep
    console = Console(width=160, record=True)
    console.print(summary.to_rich_table())
    text = console.export_text()
    assert "Sweep grid (optuna, grid) - complete 4" in text
    assert "2/2" in text and "0.8205" in text  # arm a: mean of 0.820 and 0.821
    assert summary.best is not None and summary.best.arm == "a" and summary.best.seed == 1


def test_sweep_status_per_cell_after_a_failure_and_while_waiting(tmp_path: Path, fake_env: Path, monkeypatch) -> None:
    import json

    from hcc_exp.sweeps.runner import prepare_sweep, sweep_status_report
    from tests.sweeps.test_cli_status import run_cli

    spec = write_spec(tmp_path / "s.yaml", name="st")
    prepare_sweep(spec, runs_root=tmp_path / "runs")
    report = sweep_status_report(tmp_path / "runs" / "st")
    assert [(c.arm, c.seed, c.state) for c in report.cells] == [
        ("a", 0, "waiting"), ("a", 1, "waiting"), ("b", 0, "waiting"), ("b", 1, "waiting")
    ]
    monkeypatch.setenv("FAKE_TRAIN_FAIL_ARM", "2d")  # arm b fails
    run_sweep(spec, workers=0, train_fn=FAKE_TRAIN, runs_root=tmp_path / "runs", progress=False)
    monkeypatch.delenv("FAKE_TRAIN_FAIL_ARM")
    report = sweep_status_report(tmp_path / "runs" / "st")
    by_cell = {(c.arm, c.seed): c for c in report.cells}
    assert by_cell[("a", 1)].state == "complete" and by_cell[("a", 1)].value == pytest.approx(0.821)
    assert by_cell[("b", 0)].state == "failed" and "diverged" in by_cell[("b", 0)].error
    run_sweep(spec, workers=0, train_fn=FAKE_TRAIN, runs_root=tmp_path / "runs", progress=False)  # re-run retries b
    report = sweep_status_report(tmp_path / "runs" / "st")
    assert report.counts == {"complete": 4}
    assert {(c.arm, c.retries) for c in report.cells} == {("a", 0), ("b", 1)}
    data = json.loads(run_cli("sweep-status", str(tmp_path / "runs" / "st"), "--json"))
    assert data["counts"] == {"complete": 4} and data["slurm"] == []
    table = run_cli("sweep-status", str(tmp_path / "runs" / "st"))
    assert "Sweep st - complete 4" in table
