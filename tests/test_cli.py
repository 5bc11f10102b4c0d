"""The hcc-exp command line: help, version, and the issue's synth -> check round trip with bad values."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from hcc_exp import __version__
from hcc_exp.cli import app

runner = CliRunner()
COMMANDS = ("synth", "import", "check", "preprocess", "train", "evaluate", "cam", "predict",
            "sweep", "table", "report", "sync", "dashboard", "demo")


def _cli(*args: str) -> subprocess.CompletedProcess:
    """Run the real console entry point (exit codes and stderr as a user sees them)."""
    return subprocess.run(
        [sys.executable, "-c", "from hcc_exp.cli import main; main()", *args],
        capture_output=True, text=True, check=False,
    )


def test_version_and_help_list_every_command():
    assert runner.invoke(app, ["--version"]).stdout.strip() == f"hcc-exp {__version__}"
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.stdout
        sub = runner.invoke(app, [command, "--help"])
        assert sub.exit_code == 0, command


@pytest.fixture(scope="module")
def synth_cohort(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli") / "D"
    result = runner.invoke(app, ["synth", str(folder), "--patients", "12", "--seed", "3", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "oracle" in result.stdout.lower()
    return folder


def test_synth_then_check_passes(synth_cohort):
    result = _cli("check", str(synth_cohort), "--quiet")
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_check_names_both_bad_patients_and_exits_nonzero(synth_cohort, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(synth_cohort, broken)
    table = pd.read_csv(broken / "cohort.csv", dtype={"patient_id": str, "bclc": str})
    first, second = table["patient_id"].iloc[0], table["patient_id"].iloc[1]
    table.loc[0, "os_time_days"] = -5
    table.loc[1, "rfs_event"] = 2
    table.to_csv(broken / "cohort.csv", index=False)
    before = sorted(p.name for p in broken.rglob("*"))

    result = _cli("check", str(broken), "--quiet")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert first in output and "os_time_days" in output
    assert second in output and "rfs_event" in output
    assert "Traceback" not in output
    assert sorted(p.name for p in broken.rglob("*")) == before  # check writes nothing


def test_bad_override_is_a_clear_error(tmp_path):
    result = _cli("train", "--set", "optim.learning_rate=1", "--quiet")
    assert result.returncode == 2
    assert "unknown config key 'optim.learning_rate'" in result.stderr
    assert "optim.lr" in result.stderr


def test_sweep_seeds_option_is_validated_before_anything_runs(tmp_path):
    result = _cli("sweep", "sweeps/ablation.yaml", "--seeds", "0,x", "--name", "cli-check")
    assert result.returncode == 2
    assert "--seeds takes comma-separated integers" in result.stderr
    assert not (Path("runs") / "cli-check").exists()
