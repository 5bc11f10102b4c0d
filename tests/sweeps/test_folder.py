"""The sweep folder: one owner for its file names; sweep.yaml read strictly; trials.csv round trip."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from hcc_exp.errors import SweepError
from hcc_exp.sweeps.folder import TRIALS_COLUMNS, SweepFolder, trial_run_name
from hcc_exp.sweeps.spec import load_sweep_spec
from tests.sweeps.conftest import write_spec


def test_layout_paths() -> None:
    folder = SweepFolder(Path("/r/abl"))
    assert folder.sweep_yaml == Path("/r/abl/sweep.yaml") and folder.base_params == Path("/r/abl/base_params.yaml")
    assert folder.journal == Path("/r/abl/optuna.journal") and folder.trials_csv == Path("/r/abl/trials.csv")
    assert folder.worker_log(3) == Path("/r/abl/logs/worker-3.log")
    assert folder.trial_run_dir(7, "no venous", 2) == Path("/r/abl/runs/0007-no-venous-s2")
    assert trial_run_name(12, "full", 0) == "0012-full-s0"


def test_written_spec_reads_back_strictly(tmp_path: Path) -> None:
    resolved = load_sweep_spec(write_spec(tmp_path / "s.yaml", name="rt"))
    folder = SweepFolder.for_sweep(resolved, tmp_path / "runs")
    folder.write_resolved(resolved)
    assert folder.root == tmp_path / "runs" / "rt" and folder.runs_dir.is_dir()
    assert folder.read_spec() == resolved.spec
    folder.sweep_yaml.write_text("name: rt\nmethod: grid\nmetric: internal/os/c_index\ndirection: maximize\n")
    with pytest.raises(SweepError, match=r"sweep.yaml: .*metric"):
        folder.read_spec()
    folder.sweep_yaml.write_text("name: [unclosed\n")
    with pytest.raises(SweepError, match="not valid YAML"):
        folder.read_spec()
    with pytest.raises(SweepError, match="not a sweep folder"):
        SweepFolder(tmp_path / "none").read_spec()


def test_trials_csv_round_trip(tmp_path: Path) -> None:
    folder = SweepFolder(tmp_path)
    rows = [
        SimpleNamespace(number=0, arm="a", seed=0, state="COMPLETE", value=0.7, run_dir="runs/0000-a-s0",
                        duration_s=1.5, retry_of=None, error=None, params={"optim.lr": 0.01}),
        SimpleNamespace(number=1, arm="b", seed=1, state="FAIL", value=None, run_dir=None,
                        duration_s=None, retry_of=None, error="boom", params={}),
    ]  # fmt: skip
    folder.write_trials(rows)
    frame = folder.read_trials()
    assert list(frame.columns) == [*TRIALS_COLUMNS, "params.optim.lr"]
    assert frame["arm"].tolist() == ["a", "b"] and frame.loc[0, "value"] == 0.7 and frame.loc[1, "error"] == "boom"
    (tmp_path / "trials.csv").write_text("number,arm\n0,a\n")
    with pytest.raises(SweepError, match=r"missing column\(s\) \['seed', 'state'\]"):
        folder.read_trials()


def test_launch_records_append(tmp_path: Path) -> None:
    folder = SweepFolder(tmp_path)
    assert folder.read_launches() == []
    folder.write_launch({"job_id": "12"})
    folder.write_launch({"job_id": "13"})
    assert [r["job_id"] for r in folder.read_launches()] == ["12", "13"]
