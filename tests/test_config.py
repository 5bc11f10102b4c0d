"""Typed config: package defaults, params.yaml and dotted overrides; bad keys, types and values are refused by key."""

from pathlib import Path

import pytest
import yaml

from hcc_exp.config import (
    MODEL_PRESETS,
    PHASES,
    ExperimentConfig,
    build_config,
    load_config,
    parse_set_options,
    read_yaml,
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


# --------------------------------------------------------------------------- defaults ship with the package
def test_without_a_file_the_package_defaults_apply(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no params.yaml here
    assert load_config() == ExperimentConfig()
    assert load_config(None, {"optim.lr": 3e-4}).optim.lr == pytest.approx(3e-4)


def test_a_params_yaml_in_the_working_folder_overrides_the_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("preprocess:\n  margin_mm: 6.0\n", encoding="utf-8")
    cfg = load_config()
    assert cfg.preprocess.margin_mm == 6.0
    assert cfg.preprocess.crop_size_vox == ExperimentConfig().preprocess.crop_size_vox  # the rest: defaults
    other = tmp_path / "other.yaml"
    other.write_text("preprocess:\n  margin_mm: 2.0\n", encoding="utf-8")
    assert load_config(other).preprocess.margin_mm == 2.0  # --config wins over ./params.yaml


def test_project_params_yaml_keeps_what_the_dvc_pipeline_pins_at_the_default_values():
    stages = yaml.safe_load((PARAMS.parent / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    pinned = {key.split(".")[0] for stage in stages.values() for key in stage.get("params", [])}
    params = yaml.safe_load(PARAMS.read_text(encoding="utf-8"))
    assert set(params) == pinned
    assert load_config(PARAMS) == ExperimentConfig()  # the pins are the package defaults


def test_read_yaml_names_the_file_for_each_failure(tmp_path):
    with pytest.raises(ConfigError, match=r"sweep file .*nope.yaml does not exist"):
        read_yaml(tmp_path / "nope.yaml", kind="sweep file")
    with pytest.raises(ConfigError, match="is not a file"):
        read_yaml(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML"):
        read_yaml(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="expected a mapping"):
        read_yaml(listing)
    assert read_yaml(listing, mapping=False) == [1, 2]
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    assert read_yaml(empty) == {}


# --------------------------------------------------------------------------- impossible values, by key
@pytest.mark.parametrize(
    ("key", "value", "where"),
    [
        ("preprocess.spacing_mm", [0.0, 2.0, 2.0], r"preprocess\.spacing_mm\.0"),
        ("preprocess.spacing_mm", [2.0, -1.0, 2.0], r"preprocess\.spacing_mm\.1"),
        ("preprocess.spacing_mm", [2.0, 2.0, float("inf")], r"preprocess\.spacing_mm\.2"),
        ("preprocess.spacing_mm", [2.0, 2.0], r"preprocess\.spacing_mm"),
        ("preprocess.crop_size_vox", [0, 48, 48], r"preprocess\.crop_size_vox\.0"),
        ("preprocess.crop_size_vox", [48, 48, -4], r"preprocess\.crop_size_vox\.2"),
        ("preprocess.clip_percentiles", [97.5, 2.5], r"preprocess\.clip_percentiles"),
        ("preprocess.clip_percentiles", [-1.0, 50.0], r"preprocess\.clip_percentiles"),
        ("preprocess.clip_percentiles", [2.5, 100.5], r"preprocess\.clip_percentiles"),
        ("preprocess.margin_mm", -1.0, r"preprocess\.margin_mm"),
        ("preprocess.workers", 0, r"preprocess\.workers"),
        ("trainer.batch_size", 0, r"trainer\.batch_size"),
        ("trainer.max_epochs", 0, r"trainer\.max_epochs"),
        ("trainer.limit_train_batches", 0, r"trainer\.limit_train_batches"),
        ("optim.lr", 0.0, r"optim\.lr"),
        ("optim.lr", -1e-3, r"optim\.lr"),
        ("optim.weight_decay", -1e-4, r"optim\.weight_decay"),
        ("loss.static_weights", [0.0, 0.0, 0.0], r"loss\.static_weights"),
        ("loss.static_weights", [1.0, -1.0, 1.0], r"loss\.static_weights\.1"),
        ("loss.mvi_class_weights", [1.0, 0.0], r"loss\.mvi_class_weights\.1"),
        ("model.growth_rate", 0, r"model\.growth_rate"),
        ("model.block_config", [], r"model\.block_config"),
        ("evaluation.horizons_days", [0, 365], r"evaluation\.horizons_days\.0"),
        ("evaluation.km_truncate_days", -1, r"evaluation\.km_truncate_days"),
    ],
)
def test_impossible_values_are_refused_naming_the_key(key, value, where):
    with pytest.raises(ConfigError, match=where):
        build_config({}, {key: value})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("preprocess.spacing_mm", [0.5, 0.7, 5.0]),
        ("preprocess.crop_size_vox", [1, 1, 1]),
        ("preprocess.clip_percentiles", [0.0, 100.0]),
        ("trainer.limit_train_batches", 0.25),
        ("trainer.limit_train_batches", 3),
        ("loss.static_weights", [0.0, 0.0, 1.0]),
    ],
)
def test_boundary_values_are_accepted(key, value):
    assert build_config({}, {key: value}) is not None
