"""Shared fixtures. Tests run on CPU with one torch thread per worker, and W&B offline."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.factories import write_tiny_cohort

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("MPLBACKEND", "Agg")
# Passed-validation markers (hcc_exp.training.train.validation_memo_dir) stay out of $HOME.
_MEMO_DIR = tempfile.mkdtemp(prefix="hcc-exp-test-cache-")
os.environ["HCC_EXP_CACHE_DIR"] = _MEMO_DIR

REPO_ROOT = Path(__file__).resolve().parents[1]
# ../shared beside the checkout (or beside the folder of git worktrees holding it).
SHARED_DATA_DIR = next(
    (p / "shared" / "data" for p in (REPO_ROOT.parent, REPO_ROOT.parent.parent) if (p / "shared" / "data").is_dir()),
    REPO_ROOT.parent / "shared" / "data",
)
REAL_CT_DIR = SHARED_DATA_DIR / "real-ct"
REAL_HCC_DIR = SHARED_DATA_DIR / "real-hcc"


def pytest_unconfigure(config):
    shutil.rmtree(_MEMO_DIR, ignore_errors=True)


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

@dataclass(frozen=True)
class TrainedRun:
    run_dir: Path
    cohort_dir: Path
    seconds: float

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / "checkpoints" / "best.ckpt"


def tiny_run_overrides(root: Path, cohort: Path) -> dict:
    """Config overrides for a CPU run of seconds: 24^3 crop at 2 mm, 2 epochs, no W&B."""
    return {
        "data.cohort_dir": str(cohort),
        "data.cache_dir": str(root / "cache"),
        "tracking.runs_dir": str(root / "runs"),
        "tracking.wandb": False,
        "preprocess.crop_size_vox": [24, 24, 24],
        "preprocess.spacing_mm": [2.0, 2.0, 2.0],
        "preprocess.workers": 1,
        "trainer.max_epochs": 2,
        "trainer.batch_size": 4,
        "trainer.accelerator": "cpu",
        "augment_copies": 1,
        "momentum.steps": 2,
    }


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> TrainedRun:
    """Train the tiny model on a 12-patient tiny cohort (4 per split) for 2 epochs."""
    from hcc_exp.config import build_config
    from hcc_exp.training.train import train

    root = tmp_path_factory.mktemp("trained-run")
    # 24 x 40 x 40 voxels of 2.5 x 0.8 x 0.8 mm: the 48 mm crop at 2 mm reaches past the
    # 32 mm field of view in-plane, as a crop near the edge of a real scan would.
    cohort = write_tiny_cohort(root / "cohort", n_patients=12, shape_zyx=(24, 40, 40))
    config = build_config({}, tiny_run_overrides(root, cohort))
    started = time.perf_counter()
    result = train(config, run_dir=root / "runs" / "tiny", progress=False)
    return TrainedRun(result.run_dir, cohort, time.perf_counter() - started)
