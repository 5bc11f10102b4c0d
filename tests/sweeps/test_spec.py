"""Sweep YAML validation: refused before anything runs, with messages naming the key, arm or parameter."""

from __future__ import annotations

from pathlib import Path

import pytest

from hcc_exp.config import valid_keys
from hcc_exp.errors import ConfigError
from hcc_exp.sweeps.runner import run_sweep
from hcc_exp.sweeps.spec import load_sweep_spec, parse_seed_list
from tests.sweeps.conftest import FAKE_TRAIN, write_spec

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_unknown_arm_key_lists_valid_keys_and_nothing_runs(tmp_path: Path, fake_env: Path) -> None:
    spec = write_spec(tmp_path / "s.yaml", arms=[{"name": "typo", "set": {"model.dimz": "2d"}}])
    with pytest.raises(ConfigError) as info:
        run_sweep(spec, workers=0, train_fn=FAKE_TRAIN, runs_root=tmp_path / "runs", progress=False)
    message = str(info.value)
    assert "arm 'typo': unknown config key 'model.dimz'" in message
    assert "Valid keys:" in message
    for key in ("model.dims", "optim.lr", "augment.time_jitter_days", "loss.dwa_temperature", "phases"):
        assert key in message
    assert message.count(",") >= len(valid_keys()) - 1  # the whole list
    assert not (tmp_path / "runs").exists()  # refused before anything was created
    assert not fake_env.exists()  # no trial ran


def test_unknown_parameter_and_override_keys(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path / "s.yaml",
        method="random",
        arms=[],
        seeds=[],
        trials=3,
        parameters={"optim.learning_rate": {"min": 1e-4, "max": 1e-2}},
        overrides={"trainer.epochs": 2},
    )
    with pytest.raises(ConfigError, match=r"overrides: unknown config key 'trainer.epochs'.*parameters: unknown config key 'optim.learning_rate'"):
        load_sweep_spec(spec)


def test_wrong_type_names_the_arm_and_parameter(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "s.yaml", arms=[{"name": "flat", "set": {"model.dims": "4d"}}])
    with pytest.raises(ConfigError, match=r"arm 'flat': .*model\.dims: Input should be '3d' or '2d'"):
        load_sweep_spec(spec)
    spec = write_spec(tmp_path / "s.yaml", arms=[{"name": "rot", "set": {"augment.rotation": "sometimes"}}])
    with pytest.raises(ConfigError, match=r"arm 'rot': .*augment\.rotation"):
        load_sweep_spec(spec)
    spec = write_spec(tmp_path / "s.yaml", arms=[{"name": "ph", "set": {"phases": ["portal", "venous"]}}])
    with pytest.raises(ConfigError, match=r"arm 'ph': .*unknown phase"):
        load_sweep_spec(spec)


def test_searched_bounds_must_build_a_config(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path / "s.yaml",
        method="random",
        arms=[],
        trials=4,
        seeds=[0],
        parameters={"model.dropout": {"min": 0.0, "max": 1.5}},
    )
    with pytest.raises(ConfigError, match=r"parameter 'model.dropout' value 1.5: .*model\.dropout: Input should be less than 1"):
        load_sweep_spec(spec)
    spec = write_spec(
        tmp_path / "s.yaml",
        method="random",
        arms=[],
        trials=4,
        seeds=[0],
        parameters={"optim.lr": {"min": 0.0, "max": 0.1, "distribution": "log_uniform_values"}},
    )
    with pytest.raises(ConfigError, match=r"parameters.optim.lr: .*log_uniform_values needs min > 0"):
        load_sweep_spec(spec)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"metric": {"name": "x", "goal": "maximise"}}, r"metric.goal: Input should be 'maximize' or 'minimize'"),
        ({"repeat": 3}, r"repeat: Extra inputs are not permitted"),
        ({"seeds": ["zero"]}, r"seeds.0: Input should be a valid integer"),
        ({"pruner": "median"}, r"a grid \(ablation\) is never pruned"),
        ({"trials": 5}, r"trials applies to random / bayes"),
        ({"arms": [{"name": "a", "set": {}}, {"name": "a", "set": {}}]}, r"arm names repeat: \['a'\]"),
        ({"arms": [{"name": "a b", "set": {}}]}, r"arms.0.name: String should match pattern"),
        ({"arms": [{"name": "s", "set": {"seed": 3}}]}, r"arm 's': set seeds with seeds:"),
        ({"method": "bayes", "trials": 4}, r"arms are named grid cells; method bayes samples parameters"),
        ({"method": "bayes", "arms": [], "seeds": [0]}, r"method bayes needs trials"),
        (
            {"method": "random", "arms": [], "seeds": [0], "trials": 2, "parameters": {"optim.lr": {"values": [0.1], "min": 0.1}}},
            r"give exactly one of values, value or min/max",
        ),
        (
            {"method": "random", "arms": [], "seeds": [0], "trials": 2,
             "parameters": {"optim.lr": {"mu": 0, "sigma": 1, "distribution": "normal"}}},
            r"distribution normal is W&B-only; the optuna backend supports",
        ),
        (
            {"method": "random", "arms": [], "seeds": [0], "trials": 2, "pruner": "median", "prune_metric": "val/loss",
             "parameters": {"optim.lr": {"values": [0.1, 0.01]}}},
            r"prune on a metric that improves the same way as the objective",
        ),
    ],
)
def test_schema_errors_name_the_field(tmp_path: Path, fields: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_sweep_spec(write_spec(tmp_path / "s.yaml", **fields))


def test_grid_cells_and_config_order(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path / "s.yaml",
        parameters={"optim.lr": {"values": [0.01, 0.001]}, "model.dropout": {"value": 0.1}},
        overrides={"tracking.wandb": False, "model.dims": "2d", "optim.weight_decay": 0.5},
    )
    resolved = load_sweep_spec(spec, overrides={"optim.weight_decay": 0.25})
    cells = resolved.cells()
    assert [(c.arm, c.seed) for c in cells] == [
        ("a+optim.lr=0.01", 0), ("a+optim.lr=0.01", 1), ("a+optim.lr=0.001", 0), ("a+optim.lr=0.001", 1),
        ("b+optim.lr=0.01", 0), ("b+optim.lr=0.01", 1), ("b+optim.lr=0.001", 0), ("b+optim.lr=0.001", 1),
    ]
    config = resolved.config_for(cells[0].settings, cells[0].seed)
    # base -> spec overrides -> caller overrides -> arm settings -> seed
    assert config.model.dims == "3d"  # the arm wins over the override
    assert config.optim.weight_decay == 0.25  # the caller's override wins over the spec's
    assert config.optim.lr == 0.01 and config.model.dropout == 0.1 and config.seed == 0


def test_shipped_ablation_matches_the_paper(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)
    resolved = load_sweep_spec(REPO_ROOT / "sweeps" / "ablation.yaml")
    spec = resolved.spec
    assert spec.method == "grid" and spec.backend == "optuna" and spec.pruner.type == "none"
    assert spec.metric.name == "internal/os/c_index" and spec.metric.goal == "maximize"
    assert resolved.seeds == [0, 1, 2]
    arms = {arm.name: arm.settings for arm in spec.arms}
    assert arms["full"] == {}
    assert arms["2d"] == {"model.dims": "2d"}
    assert arms["no_time_jitter"] == {"augment.time_jitter_days": 0}
    assert arms["no_rotation"] == {"augment.rotation": False}
    assert arms["no_momentum"] == {"momentum.enabled": False}
    assert arms["static_weights"] == {"loss.weighting": "static"}
    assert {arms["dwa_t1"]["loss.dwa_temperature"], arms["dwa_t4"]["loss.dwa_temperature"]} == {1.0, 4.0}
    phase_sets = {tuple(s["phases"]) for s in arms.values() if "phases" in s}
    assert phase_sets == {
        ("portal", "delayed"), ("arterial", "delayed"), ("arterial", "portal"),
        ("arterial",), ("portal",), ("delayed",),
    }
    assert {s["roi"] for s in arms.values() if "roi" in s} == {"tumour", "tumour_margin", "liver", "none"}
    full = resolved.config_for(arms["full"], 0)
    assert full.loss.weighting == "dwa" and full.loss.dwa_temperature == 2.0  # T=2 is the full model
    assert len(resolved.cells()) == len(arms) * 3
    # Every arm differs from "full" in exactly the keys it sets.
    full_flat = full.to_flat_dict()
    for name, settings in arms.items():
        flat = resolved.config_for(settings, 0).to_flat_dict()
        changed = {k for k in flat if flat[k] != full_flat[k]}
        assert changed <= set(settings), name


def test_shipped_planted_check_reuses_ablation_arms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)
    planted = load_sweep_spec(REPO_ROOT / "sweeps" / "planted.yaml")
    ablation = {arm.name: arm.settings for arm in load_sweep_spec(REPO_ROOT / "sweeps" / "ablation.yaml").spec.arms}
    arms = {arm.name: arm.settings for arm in planted.spec.arms}
    assert set(arms) == {"full", "no_arterial", "no_portal", "no_delayed", "roi_tumour"}
    assert all(arms[name] == ablation[name] for name in arms)  # the same arms as the paper's ablation
    assert planted.seeds == [0, 1] and planted.spec.pruner.type == "none"
    assert len(planted.cells()) == 10


def test_shipped_search_is_tpe_with_median_pruning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)
    resolved = load_sweep_spec(REPO_ROOT / "sweeps" / "search.yaml")
    spec = resolved.spec
    assert spec.method == "bayes" and spec.pruner.type == "median" and spec.prune_metric == "val/os_c_index"
    assert set(spec.parameters) == {"optim.lr", "optim.weight_decay", "model.dropout", "loss.dwa_temperature"}
    assert spec.parameters["optim.lr"].kind == "log_uniform_values"
    assert spec.parameters["optim.weight_decay"].kind == "log_uniform_values"
    assert spec.parameters["model.dropout"].kind == "uniform"


def test_seeds_and_name_replace_the_file_and_are_validated(tmp_path: Path) -> None:
    path = write_spec(tmp_path / "s.yaml")
    resolved = load_sweep_spec(path, {"trainer.max_epochs": 1}, seeds=[5], name="quick")
    assert resolved.spec.name == "quick" and resolved.seeds == [5]
    assert [(c.arm, c.seed) for c in resolved.cells()] == [("a", 5), ("b", 5)]
    assert resolved.config_for({}, 5).trainer.max_epochs == 1
    with pytest.raises(ConfigError, match="seeds repeat"):
        load_sweep_spec(path, seeds=[0, 0])
    with pytest.raises(ConfigError, match="name"):
        load_sweep_spec(path, name="no/slash")
    assert parse_seed_list("0, 1,2") == [0, 1, 2]
    with pytest.raises(ConfigError, match="--seeds"):
        parse_seed_list("0,one")
