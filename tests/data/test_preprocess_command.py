"""`hcc-exp preprocess` as a new user runs it: from any folder, with the package defaults; bad settings named by key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.factories import write_tiny_cohort

REPO_ROOT = Path(__file__).resolve().parents[2]


def _preprocess(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
               COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "hcc_exp.cli", "preprocess", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, check=False)


def test_preprocess_runs_from_a_folder_without_params_yaml_and_states_the_cache_size(tmp_path: Path):
    cohort = write_tiny_cohort(tmp_path / "cohort", n_patients=6)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = _preprocess(elsewhere, str(cohort), "cache", "--set", "preprocess.workers=1",
                         "--set", "preprocess.crop_size_vox=[16,16,16]")
    assert result.returncode == 0, result.stderr + result.stdout
    # 6 x (2 x 128 B + 3 x 16^3 x (2 B + 3 x 1 B)) = 370,176 B, stated before the work.
    assert "6 patients x 3 phases x (1 image (float16) + 3 masks (uint8)) x 16x16x16 voxels: 370.2 kB" in result.stdout
    assert len(list((elsewhere / "cache").glob("*/patients/*/image.npy"))) == 6


def test_a_params_yaml_in_the_working_folder_is_used(tmp_path: Path):
    cohort = write_tiny_cohort(tmp_path / "cohort", n_patients=6)
    (tmp_path / "params.yaml").write_text("preprocess:\n  crop_size_vox: [0, 16, 16]\n", encoding="utf-8")
    result = _preprocess(tmp_path, str(cohort), "cache", "--quiet")
    assert result.returncode == 2
    assert "params.yaml" in result.stderr and "preprocess.crop_size_vox.0" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "cache").exists()


def test_an_impossible_setting_is_refused_by_key_before_any_work(tmp_path: Path):
    # One case through the real command; every range is covered key by key in tests/test_config.py.
    cohort = write_tiny_cohort(tmp_path / "cohort", n_patients=6)
    result = _preprocess(tmp_path, str(cohort), "cache", "--quiet", "--set", "preprocess.spacing_mm=[0,2,2]")
    assert result.returncode == 2
    assert "preprocess.spacing_mm.0" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "cache").exists()
