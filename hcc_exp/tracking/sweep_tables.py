"""Sweep-level tables on W&B: one run per ``hcc-exp report SWEEP --wandb`` holding the ablation tables.

The per-run table has ``arm`` and ``seed`` columns, so a team can group and compare the arms in
W&B's table view; the run joins the sweep's group (its name) with job type ``ablation-table``.
Offline by default (``tracking.wandb_mode``), like every other run; ``hcc-exp sync`` uploads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from hcc_exp.config import TrackingConfig
from hcc_exp.tracking import Tracker, make_tracker, safe_name

JOB_TYPE = "ablation-table"


def log_sweep_tables(
    tables: Mapping[str, pd.DataFrame], *, sweep_name: str, out_dir: Path | str, tracking_cfg: TrackingConfig
) -> Tracker:
    """Log each table (name -> frame) in one tracked run under ``out_dir`` (W&B files in ``out_dir/wandb``).

    Returns:
        The finished tracker (its ``folder`` holds the local copies under ``tables/``).
    """
    out_dir = Path(out_dir)
    tracker = make_tracker(tracking_cfg, group=sweep_name, job_type=JOB_TYPE, wandb_dir=out_dir)
    tracker.start(
        run_id=safe_name(f"{sweep_name}-ablation-table"),
        run_dir=out_dir,
        config={"sweep": sweep_name, "tables": ",".join(tables)},
        group=sweep_name,
        job_type=JOB_TYPE,
    )
    exit_code = 1
    try:
        for name, frame in tables.items():
            tracker.log_table(name, frame)
        exit_code = 0
    finally:
        tracker.finish(exit_code=exit_code)
    return tracker
