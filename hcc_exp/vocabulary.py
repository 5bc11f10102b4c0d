"""The domain vocabulary: phases, regions, splits, tasks, endpoints, table columns and metric keys.

Every other module takes these names from here; nothing else spells them out. The module sits at the
bottom of the package (it imports nothing from ``hcc_exp``), so data, models, training, evaluation and
reporting can all use it without an import running back up the flow.

Metric keys are ``"<split>/<task>/<metric>"``, e.g. ``"external/os/c_index"``:

>>> metric_key("external", "os", "c_index")
'external/os/c_index'
>>> parse_metric_key("internal/mvi/auc")
MetricKey(split='internal', task='mvi', metric='auc')
>>> time_column("rfs"), event_column("rfs"), risk_column("rfs")
('rfs_time_days', 'rfs_event', 'rfs_risk')
"""

from __future__ import annotations

from typing import Literal, NamedTuple

Phase = Literal["arterial", "portal", "delayed"]
Region = Literal["liver", "margin", "tumour"]
Split = Literal["train", "internal", "external"]
Endpoint = Literal["os", "rfs"]
Task = Literal["os", "rfs", "mvi"]

#: CT phases in channel order (the paper's triphasic protocol).
PHASES: tuple[str, ...] = ("arterial", "portal", "delayed")
#: ROI regions in mask-channel order: background liver, peritumoral margin band, tumour.
REGIONS: tuple[str, ...] = ("liver", "margin", "tumour")
#: Cohort splits (paper: train = institution I, internal = II-V, external = VI).
SPLITS: tuple[str, ...] = ("train", "internal", "external")
#: Survival endpoints, each a Cox head: overall and recurrence-free survival.
ENDPOINTS: tuple[str, ...] = ("os", "rfs")
#: The network's tasks: the two survival endpoints and microvascular invasion.
MVI = "mvi"
TASKS: tuple[str, ...] = (*ENDPOINTS, MVI)

SPLIT_TITLES: dict[str, str] = {
    "train": "Training",
    "internal": "Internal validation",
    "external": "External test",
}
ENDPOINT_TITLES: dict[str, str] = {"os": "Overall survival", "rfs": "Recurrence-free survival"}
TASK_TITLES: dict[str, str] = {**ENDPOINT_TITLES, MVI: "Microvascular invasion"}

# Columns of cohort.csv, labels.csv and predictions.csv.
PATIENT_ID = "patient_id"
SPLIT = "split"
INSTITUTION = "institution"
MVI_LABEL = "mvi"
MVI_PROBABILITY = "mvi_prob"


def time_column(endpoint: str) -> str:
    """Follow-up column of an endpoint, in days: ``os_time_days`` / ``rfs_time_days``."""
    _check(endpoint, ENDPOINTS, "endpoint")
    return f"{endpoint}_time_days"


def event_column(endpoint: str) -> str:
    """Event indicator column (0 / 1) of an endpoint: ``os_event`` / ``rfs_event``."""
    _check(endpoint, ENDPOINTS, "endpoint")
    return f"{endpoint}_event"


def risk_column(endpoint: str) -> str:
    """Predicted log-hazard column of an endpoint in ``predictions.csv``: ``os_risk`` / ``rfs_risk``."""
    _check(endpoint, ENDPOINTS, "endpoint")
    return f"{endpoint}_risk"


class MetricKey(NamedTuple):
    """The three parts of a metric key ``"<split>/<task>/<metric>"``."""

    split: str
    task: str
    metric: str

    def __str__(self) -> str:
        return f"{self.split}/{self.task}/{self.metric}"


def metric_key(split: str, task: str, metric: str) -> str:
    """Build ``"<split>/<task>/<metric>"``; the split and task must be known names.

    >>> metric_key("train", "rfs", "c_index")
    'train/rfs/c_index'
    """
    _check(split, SPLITS, "split")
    _check(task, TASKS, "task")
    if not metric or "/" in metric:
        raise ValueError(f"metric name {metric!r} must be non-empty and contain no '/'")
    return f"{split}/{task}/{metric}"


def parse_metric_key(key: str) -> MetricKey:
    """Split a metric key into split, task and metric; refuse anything else.

    >>> parse_metric_key("external/os/c_index_ci_low").metric
    'c_index_ci_low'
    """
    parts = key.split("/")
    if len(parts) != 3:
        raise ValueError(f"metric key {key!r} is not '<split>/<task>/<metric>'")
    split, task, metric = parts
    _check(split, SPLITS, "split")
    _check(task, TASKS, "task")
    return MetricKey(split, task, metric)


def _check(value: str, valid: tuple[str, ...], what: str) -> None:
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")
