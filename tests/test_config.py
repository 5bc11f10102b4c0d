"""Typed config: params.yaml loads, overrides apply by dotted key, bad keys and types are refused."""

from pathlib import Path

import pytest

from hcc_exp.config import (
    MODEL_PRESETS,
    PHASES,
    ExperimentConfig,
    load_config,
    parse_set_options,
    valid_keys,
)
from hcc_exp.errors import ConfigError

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def test_params_yaml_loads_with_paper_values():
    cfg = load_config(PARAMS)
    assert cfg.phases == PHASES
    assert cfg.loss.dwa_temperature == 2.0
    assert cfg.augment.time_jitter_days == 3
    assert cfg.augment_copies == 3
    assert cfg.preprocess.margin_mm == 4.0
    assert cfg.preprocess.clip_percentiles == (2.5, 97.5)
    assert cfg.trainer.patience == 20


def test_overrides_parse_yaml_values_and_set_dotted_keys():
    overrides = parse_set_options(["optim.lr=3e-4", "phases=[delayed, portal]", "momentum.enabled=false"])
    cfg = load_config(PARAMS, overrides)
    assert cfg.optim.lr == pytest.approx(3e-4)
    # phases keep the canonical channel order whatever order they are given in
    assert cfg.phases == ("portal", "delayed")
    assert cfg.momentum.enabled is False


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as err:
        load_config(PARAMS, {"optim.learning_rate": 1e-3})
    message = str(err.value)
    assert "optim.learning_rate" in message
    assert "optim.lr" in message and "loss.dwa_temperature" in message


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"optim\.lr"):
        load_config(PARAMS, {"optim.lr": "fast"})
    with pytest.raises(ConfigError, match="roi"):
        load_config(PARAMS, {"roi": "kidney"})
    with pytest.raises(ConfigError, match="unknown phase"):
        load_config(PARAMS, {"phases": ["arterial", "native"]})


def test_model_preset_fills_only_unset_fields():
    cfg = ExperimentConfig.model_validate({"model": {"preset": "paper", "dropout": 0.5}})
    resolved = cfg.model.resolved()
    assert resolved.block_config == MODEL_PRESETS["paper"]["block_config"]
    assert resolved.dropout == 0.5


def test_params_hash_ignores_workers_but_not_margin():
    base = ExperimentConfig().preprocess
    assert base.params_hash() == base.model_copy(update={"workers": 7}).params_hash()
    assert base.params_hash() != base.model_copy(update={"margin_mm": 6.0}).params_hash()


def test_valid_keys_cover_sweep_parameters():
    keys = set(valid_keys())
    for key in ["phases", "roi", "augment.rotation", "augment.time_jitter_days", "augment_copies",
                "loss.weighting", "loss.dwa_temperature", "model.dims", "model.pooling", "momentum.enabled", "optim.lr"]:
        assert key in keys


def test_pooling_defaults_to_regions_and_refuses_unknown_values():
    assert ExperimentConfig().model.pooling == "regions"
    assert load_config(PARAMS).model.pooling == "regions"
    assert load_config(PARAMS, {"model.pooling": "global"}).model.pooling == "global"
    with pytest.raises(ConfigError, match="model.pooling"):
        load_config(PARAMS, {"model.pooling": "max"})


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
