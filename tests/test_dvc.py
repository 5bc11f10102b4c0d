"""DVC: the embedded cohort regenerates bit for bit to data.dvc, and dvc.yaml is a valid pipeline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hcc_exp.config import load_config

REPO = Path(__file__).resolve().parents[1]


def dvc_directory_md5(folder: Path) -> str:
    """DVC's own content hash of a folder (what `dvc add` writes into a .dvc file)."""
    import tempfile

    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs import LocalFileSystem

    fs = LocalFileSystem()
    with tempfile.TemporaryDirectory() as scratch:
        _, _, obj = build(HashFileDB(fs, scratch), str(folder), fs, "md5")
    return obj.hash_info.value


@pytest.mark.slow  # 388 patients: about 3 minutes of CPU
def test_regenerated_default_cohort_matches_data_dvc(tmp_path):
    from hcc_exp.data.synthetic import write_synthetic_cohort

    tracked = yaml.safe_load((REPO / "data.dvc").read_text(encoding="utf-8"))["outs"][0]
    assert tracked["path"] == "data/raw"
    config = load_config(REPO / "params.yaml")
    write_synthetic_cohort(tmp_path / "raw", patients=config.synth.patients, seed=config.synth.seed, progress=False)
    assert dvc_directory_md5(tmp_path / "raw") == tracked["md5"]


def test_dvc_pipeline_stages_and_params_resolve():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    assert list(stages)[:4] == ["check", "preprocess", "train", "evaluate"]
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    for name, stage in stages.items():
        for key in stage.get("params", []):
            assert key.split(".")[0] in params, f"stage {name}: param {key} not in params.yaml"
    dvc = Path(sys.executable).with_name("dvc")
    result = subprocess.run([str(dvc), "dag", "--md"], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "preprocess" in result.stdout and "evaluate" in result.stdout
