"""The ablation tables as a W&B run (offline), with arm and seed columns."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from hcc_exp.config import TrackingConfig
from hcc_exp.tracking import find_offline_runs, read_offline_run
from hcc_exp.tracking.sweep_tables import JOB_TYPE, log_sweep_tables


def test_tables_logged_offline_with_arm_and_seed(tmp_path: Path, wandb_offline_env: Path) -> None:
    runs = pd.DataFrame({"arm": ["full", "full", "no_portal"], "seed": [0, 1, 0], "internal/os/c_index": [0.7, 0.72, 0.6]})
    log_sweep_tables({"ablation_runs": runs}, sweep_name="demo-ablation", out_dir=tmp_path / "report",
                     tracking_cfg=TrackingConfig(wandb_mode="offline"))  # fmt: skip
    (folder,) = find_offline_runs(tmp_path / "report")
    run = read_offline_run(folder)
    assert run.group == "demo-ablation" and run.job_type == JOB_TYPE and run.exit_code == 0
    entry = run.summary["ablation_runs"]
    assert entry["_type"] == "table-file"
    table = json.loads((folder / "files" / entry["path"]).read_text())
    assert table["columns"][:2] == ["arm", "seed"]
    assert [row[:2] for row in table["data"]] == [["full", 0], ["full", 1], ["no_portal", 0]]
    # the local copy
    assert (tmp_path / "report" / "tracking" / "tables" / "ablation_runs.csv").is_file()
