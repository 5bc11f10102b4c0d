"""Shared fixtures. Tests run on CPU with one torch thread per worker, and W&B offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_CT_DIR = REPO_ROOT.parent / "shared" / "data" / "real-ct"


def pytest_configure(config):
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


@pytest.fixture
def tiny_cohort(tmp_path: Path) -> Path:
    """A valid 6-patient cohort of small spherical volumes."""
    from tests.factories import write_tiny_cohort

    return write_tiny_cohort(tmp_path / "cohort")


@pytest.fixture
def real_ct_dir() -> Path:
    """The public abdominal CT in ../shared/data/real-ct (skips if the folder is absent)."""
    if not (REAL_CT_DIR / "ct.nii.gz").is_file():
        pytest.skip(f"real CT sample not found at {REAL_CT_DIR}")
    return REAL_CT_DIR
