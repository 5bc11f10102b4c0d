"""W&B isolation for tracking tests: offline, silent, every W&B folder under tmp (no account, no network)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def wandb_offline_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Offline W&B with its dir, cache, config and data folders under ``tmp_path/wandb-home``."""
    home = tmp_path / "wandb-home"
    for var, sub in {
        "WANDB_DIR": "dir",
        "WANDB_CACHE_DIR": "cache",
        "WANDB_CONFIG_DIR": "config",
        "WANDB_DATA_DIR": "data",
        "WANDB_ARTIFACT_DIR": "artifacts",
    }.items():
        (home / sub).mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(var, str(home / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    # No credentials: nothing may silently go online.
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(home / "no-netrc"))
    return home
