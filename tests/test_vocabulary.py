"""The vocabulary module: its doctests, and the refusals of the key builder / parser."""

from __future__ import annotations

import doctest

import pytest

from hcc_exp import vocabulary
from hcc_exp.vocabulary import MetricKey, event_column, metric_key, parse_metric_key


def test_doctests() -> None:
    result = doctest.testmod(vocabulary)
    assert result.attempted >= 5 and result.failed == 0


def test_key_round_trip_for_every_split_and_task() -> None:
    for split in ("train", "internal", "external"):
        for task in ("os", "rfs", "mvi"):
            key = metric_key(split, task, "c_index_ci_high")
            assert key == f"{split}/{task}/c_index_ci_high"
            assert parse_metric_key(key) == MetricKey(split, task, "c_index_ci_high")
            assert str(parse_metric_key(key)) == key


@pytest.mark.parametrize(
    "key", ["internal/os", "test/os/c_index", "internal/ttp/c_index", "a/b/c/d", "internal_os_c_index"]
)
def test_parse_refuses_malformed_keys(key: str) -> None:
    with pytest.raises(ValueError):
        parse_metric_key(key)


def test_builder_refuses_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown split"):
        metric_key("validation", "os", "c_index")
    with pytest.raises(ValueError, match="contain no '/'"):
        metric_key("train", "os", "c/index")
    with pytest.raises(ValueError, match="unknown endpoint"):
        event_column("mvi")
