"""Sweep test helpers: a 2-arm x 2-seed grid spec writer and environment for the fake train."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

FAKE_TRAIN = "tests.sweeps.fake_train:train"


def write_spec(path: Path, **fields: Any) -> Path:
    """A valid grid sweep (arms a=3d, b=2d; seeds 0, 1; no W&B; 3 epochs), updated with ``fields``."""
    spec: dict[str, Any] = {
        "name": "grid",
        "method": "grid",
        "metric": {"name": "internal/os/c_index", "goal": "maximize"},
        "base": None,
        "seeds": [0, 1],
        "arms": [{"name": "a", "set": {"model.dims": "3d"}}, {"name": "b", "set": {"model.dims": "2d"}}],
        "overrides": {"tracking.wandb": False, "trainer.max_epochs": 3},
        "heartbeat_interval": 1,
        "grace_period": 4,
    }
    spec.update(fields)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture
def fake_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Log file of the fake train's calls; the environment reaches worker processes."""
    log = tmp_path / "fake-calls.jsonl"
    monkeypatch.setenv("FAKE_TRAIN_LOG", str(log))
    monkeypatch.setenv("FAKE_TRAIN_SLEEP", "0.05")
    for var in ("FAKE_TRAIN_HANG_DIR", "FAKE_TRAIN_BARRIER", "FAKE_TRAIN_FAIL_ARM"):
        monkeypatch.delenv(var, raising=False)
    # Workers need one thread each on the shared CPUs.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return log
