"""backend: wandb - translation to a W&B sweep config, and an immediate refusal without a W&B server."""

from __future__ import annotations

from pathlib import Path

import pytest

from hcc_exp.errors import SweepError
from hcc_exp.sweeps.runner import run_sweep
from hcc_exp.sweeps.spec import load_sweep_spec
from hcc_exp.sweeps.wandb_backend import to_wandb_sweep_config, trial_settings
from tests.sweeps.conftest import FAKE_TRAIN, write_spec

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_grid_arms_become_a_wandb_grid_over_arm_and_seed(tmp_path: Path) -> None:
    resolved = load_sweep_spec(write_spec(tmp_path / "s.yaml", backend="wandb", description="two arms"))
    config = to_wandb_sweep_config(resolved.spec, resolved.seeds)
    assert config == {
        "name": "grid",
        "method": "grid",
        "metric": {"name": "internal/os/c_index", "goal": "maximize"},
        "description": "two arms",
        "parameters": {"arm": {"values": ["a", "b"]}, "seed": {"values": [0, 1]}},
    }
    # An agent run's config maps back to the arm's settings.
    assert trial_settings(resolved, {"arm": "b", "seed": 1}) == ("b", 1, {"model.dims": "2d"})
    with pytest.raises(SweepError, match=r"arm 'c', not one of \['a', 'b'\]"):
        trial_settings(resolved, {"arm": "c", "seed": 1})


def test_search_keeps_wandb_parameter_syntax(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)
    resolved = load_sweep_spec(REPO_ROOT / "sweeps" / "search.yaml")
    spec = resolved.spec.model_copy(update={"pruner": resolved.spec.pruner.model_copy(update={"type": "hyperband"})})
    config = to_wandb_sweep_config(spec, resolved.seeds)
    assert config["method"] == "bayes" and config["run_cap"] == 40
    assert config["parameters"]["optim.lr"] == {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2}
    assert config["parameters"]["model.dropout"] == {"distribution": "uniform", "min": 0.0, "max": 0.5}
    assert config["parameters"]["seed"] == {"value": 42}
    assert config["early_terminate"] == {"type": "hyperband", "min_iter": 1, "eta": 3}
    with pytest.raises(SweepError, match="hyperband only; use pruner: hyperband or backend: optuna"):
        to_wandb_sweep_config(resolved.spec, resolved.seeds)  # median


def test_wandb_backend_refuses_offline_and_points_to_optuna(tmp_path: Path, fake_env: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    spec = write_spec(tmp_path / "s.yaml", backend="wandb", overrides={"tracking.wandb_mode": "online"})
    with pytest.raises(SweepError, match=r"needs a W&B server .* WANDB_MODE=offline .* Use backend: optuna"):
        run_sweep(spec, workers=0, train_fn=FAKE_TRAIN, runs_root=tmp_path / "runs", progress=False)
    assert not fake_env.exists() and not (tmp_path / "runs").exists()


def test_wandb_backend_refuses_without_api_key(tmp_path: Path, fake_env: Path, monkeypatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "absent-netrc"))
    spec = write_spec(tmp_path / "s.yaml", backend="wandb", overrides={"tracking.wandb_mode": "online"})
    with pytest.raises(SweepError, match=r"no W&B API key .* Use backend: optuna"):
        run_sweep(spec, workers=0, train_fn=FAKE_TRAIN, runs_root=tmp_path / "runs", progress=False)
    spec = write_spec(tmp_path / "s.yaml", backend="wandb", overrides={"tracking.wandb": True})  # default: offline
    with pytest.raises(SweepError, match=r"tracking.wandb_mode is 'offline'"):
        run_sweep(spec, workers=0, train_fn=FAKE_TRAIN, runs_root=tmp_path / "runs", progress=False)
    spec = write_spec(tmp_path / "s.yaml", backend="wandb")  # tracking.wandb: false
    with pytest.raises(SweepError, match=r"tracking.wandb is false"):
        run_sweep(spec, workers=0, train_fn=FAKE_TRAIN, runs_root=tmp_path / "runs", progress=False)
