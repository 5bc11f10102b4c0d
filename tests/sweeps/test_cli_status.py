"""``hcc-exp sweep --launcher slurm`` refusals before anything is written (no Slurm needed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.sweeps.conftest import write_spec

REPO = Path(__file__).resolve().parents[2]


def run_cli(*argv: str, cwd: Path = REPO, expect: int = 0) -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    env["COLUMNS"] = "200"
    done = subprocess.run([sys.executable, "-m", "hcc_exp.cli", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == expect, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    return done.stdout + done.stderr


def test_slurm_launch_refuses_sqlite_before_writing(tmp_path: Path) -> None:
    work = tmp_path / "cwd"
    work.mkdir()
    spec = write_spec(tmp_path / "s.yaml", storage=f"sqlite:///{tmp_path}/s.db")
    text = run_cli("sweep", str(spec), "--launcher", "slurm", "--array", "2", cwd=work, expect=2)
    assert "SQLite cannot be shared by Slurm tasks" in text
    assert list(work.iterdir()) == [] and not (tmp_path / "s.db").exists()


def test_bad_launcher_settings_are_named(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "s.yaml")
    assert "--slurm-set 'account'" in run_cli("sweep", str(spec), "--launcher", "slurm", "--slurm-set", "account",
                                              cwd=tmp_path, expect=2)  # fmt: skip
    assert "launcher settings" in run_cli("sweep", str(spec), "--launcher", "slurm", "--time", "1h", cwd=tmp_path,
                                          expect=2)  # fmt: skip
    assert "--launcher 'pbs'" in run_cli("sweep", str(spec), "--launcher", "pbs", cwd=tmp_path, expect=2)
