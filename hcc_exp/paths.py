"""Fixed paths of the demo pipeline, shared by ``dvc.yaml`` and :mod:`hcc_exp.pipeline`."""

from pathlib import Path

DEMO_RUN_DIR = Path("runs/demo")
DEMO_SWEEP_DIR = Path("runs/demo-ablation")
DEMO_TABLE_DIR = Path("runs/demo-ablation-table")
