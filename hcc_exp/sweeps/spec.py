"""Sweep YAML: W&B's sweep format plus named arms, seeds, backend and storage.

::

    name: ablation                       # folder runs/<name>, Optuna study name, W&B group
    method: grid                         # grid | random | bayes
    metric: {name: internal/os/c_index, goal: maximize}
    backend: optuna                      # optuna (default) | wandb
    base: params.yaml                    # config the trials start from (relative to the cwd); null = defaults
    overrides: {trainer.max_epochs: 30}  # dotted keys applied to every trial
    seeds: [0, 1, 2]                     # every arm runs once per seed
    arms:                                # named configurations (a grid over arms, not a product)
      - {name: full, set: {}}
      - {name: 2d, set: {model.dims: 2d}}
    parameters:                          # W&B parameter syntax; grid: values/value only
      optim.lr: {min: 1.0e-4, max: 1.0e-2, distribution: log_uniform_values}
    trials: 40                           # random / bayes
    pruner: median                       # none | median | hyperband, or {type: median, n_startup_trials: 5}
    prune_metric: val/os_c_index         # Lightning validation metric the pruner watches
    storage: null                        # null = <sweep folder>/optuna.journal; or postgresql://...

Every parameter and arm key must be a config key (:func:`hcc_exp.config.valid_keys`),
and every arm (and the bounds of every searched parameter) must build a valid
:class:`~hcc_exp.config.ExperimentConfig`; both are checked before anything runs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from hcc_exp.config import ExperimentConfig, build_config, read_yaml, valid_keys
from hcc_exp.errors import ConfigError

Method = Literal["grid", "random", "bayes"]
Goal = Literal["maximize", "minimize"]
Distribution = Literal[
    "constant",
    "categorical",
    "int_uniform",
    "uniform",
    "q_uniform",
    "log_uniform",
    "log_uniform_values",
    "q_log_uniform",
    "q_log_uniform_values",
    "inv_log_uniform",
    "inv_log_uniform_values",
    "normal",
    "q_normal",
    "log_normal",
    "q_log_normal",
    "beta",
    "q_beta",
]
OPTUNA_DISTRIBUTIONS: tuple[str, ...] = (
    "constant",
    "categorical",
    "int_uniform",
    "uniform",
    "q_uniform",
    "log_uniform_values",
)
"""Distributions the Optuna backend maps exactly (the others exist only on W&B's server)."""

PRUNERS: tuple[str, ...] = ("none", "median", "hyperband")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
SEARCH_ARM = "search"
"""Arm label of random / bayes trials."""

# Keys of the spec that change what a trial computes: a study with the same name
# but different values of these is refused (trials may grow; storage and retry
# settings may change between runs).
FINGERPRINT_FIELDS: tuple[str, ...] = (
    "method",
    "metric",
    "parameters",
    "arms",
    "seeds",
    "overrides",
    "pruner",
    "prune_metric",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class MetricSpec(_Strict):
    """The objective: a key of ``metrics.json`` (``TrainResult.metrics``) and its direction."""

    name: str = Field(min_length=1)
    goal: Goal = "maximize"


class ParameterSpec(_Strict):
    """One W&B sweep parameter: ``{values: [...]}``, ``{value: x}`` or ``{min, max[, distribution, q]}``."""

    values: list[Any] | None = None
    value: Any = None
    distribution: Distribution | None = None
    min: int | float | None = None
    max: int | float | None = None
    q: int | float | None = None
    mu: float | None = None
    sigma: float | None = None
    a: float | None = None
    b: float | None = None
    probabilities: list[float] | None = None

    @model_serializer(mode="wrap")
    def _compact(self, handler: Any) -> dict[str, Any]:
        # Only the fields written (``value: null`` is a real constant), so a dump validates again.
        data = handler(self)
        return {k: v for k, v in data.items() if v is not None or (k == "value" and "value" in self.model_fields_set)}

    @model_validator(mode="after")
    def _one_form(self) -> ParameterSpec:
        forms = [
            name
            for name, given in (
                ("values", self.values is not None),
                ("value", "value" in self.model_fields_set),
                ("min/max", self.min is not None or self.max is not None),
            )
            if given
        ]
        kind = self.kind
        if kind in {"normal", "q_normal", "log_normal", "q_log_normal", "beta", "q_beta"}:
            return self  # W&B-only shapes (mu/sigma, a/b); the Optuna backend refuses them by name
        if len(forms) != 1:
            raise ValueError(f"give exactly one of values, value or min/max (got {forms or 'none'})")
        if forms == ["values"] and not self.values:
            raise ValueError("values must not be empty")
        if forms == ["min/max"]:
            if self.min is None or self.max is None:
                raise ValueError("min and max must both be given")
            if self.min >= self.max:
                raise ValueError(f"min ({self.min}) must be below max ({self.max})")
            if kind == "int_uniform" and not (isinstance(self.min, int) and isinstance(self.max, int)):
                raise ValueError("int_uniform needs integer min and max")
            if kind in {"log_uniform_values", "q_log_uniform_values", "inv_log_uniform_values"} and self.min <= 0:
                raise ValueError(f"{kind} needs min > 0 (got {self.min})")
            if kind.startswith("q_") and (self.q is None or self.q <= 0):
                raise ValueError(f"{kind} needs q > 0")
        if kind in {"categorical"} and self.values is None:
            raise ValueError("categorical needs values")
        if kind in {"constant"} and "value" not in self.model_fields_set:
            raise ValueError("constant needs value")
        if self.probabilities is not None and (self.values is None or len(self.probabilities) != len(self.values)):
            raise ValueError("probabilities must have one entry per value")
        return self

    @property
    def kind(self) -> str:
        """The distribution, inferred as W&B does when not given."""
        if self.distribution is not None:
            return self.distribution
        if self.values is not None:
            return "categorical"
        if "value" in self.model_fields_set:
            return "constant"
        if isinstance(self.min, int) and isinstance(self.max, int):
            return "int_uniform"
        return "uniform"

    def grid_values(self) -> list[Any]:
        """Values a grid enumerates (``values`` or the single ``value``)."""
        if self.kind == "constant":
            return [self.value]
        if self.kind == "categorical":
            return list(self.values or [])
        raise ValueError(f"a grid needs values or value, not a {self.kind} distribution")

    def probe_values(self) -> list[Any]:
        """Values that must all build a valid config (every value, or both bounds)."""
        if self.kind in {"constant", "categorical"}:
            return self.grid_values()
        probes = [self.min, self.max]
        return [p for p in probes if p is not None]


class ArmSpec(_Strict):
    """A named configuration of the ablation: ``set`` holds dotted config keys."""

    name: str = Field(pattern=NAME_PATTERN)
    settings: dict[str, Any] = Field(default_factory=dict, alias="set")


class PrunerSpec(_Strict):
    """Pruner and its keyword arguments (``optuna.pruners.MedianPruner`` / ``HyperbandPruner``)."""

    model_config = ConfigDict(extra="allow")
    type: Literal["none", "median", "hyperband"] = "none"

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class SweepSpec(_Strict):
    """A sweep file, validated (see the module docstring for the format)."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = None
    method: Method
    metric: MetricSpec = MetricSpec(name="internal/os/c_index", goal="maximize")
    parameters: dict[str, ParameterSpec] = Field(default_factory=dict)
    backend: Literal["optuna", "wandb"] = "optuna"
    arms: list[ArmSpec] = Field(default_factory=list)
    seeds: list[int] = Field(default_factory=list)
    trials: int | None = Field(None, ge=1)
    pruner: PrunerSpec = PrunerSpec()
    prune_metric: str = "val/os_c_index"
    storage: str | None = None
    base: str | None = "params.yaml"
    overrides: dict[str, Any] = Field(default_factory=dict)
    heartbeat_interval: int = Field(10, ge=1, description="seconds between a running trial's heartbeats")
    grace_period: int = Field(60, ge=2, description="seconds without heartbeat before a trial counts as dead")
    max_retry: int = Field(2, ge=0, description="retries of a trial whose worker died")
    sampler_seed: int | None = None
    project: str | None = Field(None, description="W&B project (default: tracking.wandb_project)")

    @field_validator("pruner", mode="before")
    @classmethod
    def _pruner_shorthand(cls, value: Any) -> Any:
        return {"type": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> SweepSpec:
        names = [arm.name for arm in self.arms]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"arm names repeat: {duplicates}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds repeat: {self.seeds}")
        if self.grace_period <= self.heartbeat_interval:
            raise ValueError("grace_period must be longer than heartbeat_interval")
        if self.method == "grid":
            if self.trials is not None:
                raise ValueError("trials applies to random / bayes; a grid runs every arm x seed once")
            if self.pruner.type != "none":
                raise ValueError("a grid (ablation) is never pruned: every arm x seed must run to the end")
            for key, param in self.parameters.items():
                if param.kind not in {"constant", "categorical"}:
                    raise ValueError(f"parameter '{key}': a grid needs values or value, not {param.kind}")
        else:
            if self.arms:
                raise ValueError(
                    f"arms are named grid cells; method {self.method} samples parameters (use method: grid)"
                )
            if self.trials is None:
                raise ValueError(f"method {self.method} needs trials (how many to sample)")
            if len(self.seeds) > 1:
                raise ValueError(f"method {self.method} uses one seed for every trial; got seeds {self.seeds}")
            if not self.parameters:
                raise ValueError(f"method {self.method} needs parameters to sample")
        if self.pruner.type != "none" and ("loss" in self.prune_metric) != (self.metric.goal == "minimize"):
            raise ValueError(
                f"the pruner compares '{self.prune_metric}' in the study's direction ({self.metric.goal}); "
                "prune on a metric that improves the same way as the objective"
            )
        if self.backend == "optuna":
            for key, param in self.parameters.items():
                if param.kind not in OPTUNA_DISTRIBUTIONS:
                    raise ValueError(
                        f"parameter '{key}': distribution {param.kind} is W&B-only; the optuna backend "
                        f"supports {', '.join(OPTUNA_DISTRIBUTIONS)}"
                    )
                if param.probabilities is not None:
                    raise ValueError(f"parameter '{key}': probabilities are W&B-only (Optuna samples values evenly)")
        return self

    # ------------------------------------------------------------------ derived
    def seed_list(self, base_seed: int) -> list[int]:
        """``seeds``, or the base config's seed when none are given."""
        return list(self.seeds) if self.seeds else [base_seed]

    def fingerprint_payload(self) -> dict[str, Any]:
        dumped = self.model_dump(mode="json", by_alias=True)
        return {key: dumped[key] for key in FINGERPRINT_FIELDS}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", by_alias=True, exclude_none=True), sort_keys=False)


@dataclass(frozen=True)
class Cell:
    """One grid trial: an arm (with any grid parameters) and a seed.

    Attributes:
        arm: arm label (``name``, plus ``+key=value,...`` when ``parameters`` form a grid).
        seed: training seed.
        settings: dotted config keys the arm sets.
    """

    arm: str
    seed: int
    settings: dict[str, Any]

    @property
    def key(self) -> tuple[str, int]:
        return (self.arm, self.seed)


@dataclass(frozen=True)
class ResolvedSweep:
    """A validated sweep ready to run.

    Attributes:
        spec: the sweep file; ``overrides`` already includes the caller's overrides.
        base_config: the raw mapping of the base params file (``{}`` for defaults).
        source: where the spec came from (for messages).
        base_path: the base params file, absolute (None for defaults).
    """

    spec: SweepSpec
    base_config: dict[str, Any]
    source: str
    base_path: Path | None

    @cached_property
    def base_seed(self) -> int:
        return self.config_for({}, None).seed

    @property
    def seeds(self) -> list[int]:
        return self.spec.seed_list(self.base_seed)

    def cells(self) -> list[Cell]:
        """Every grid trial (arm x grid-parameter values x seed), in a stable order."""
        if self.spec.method != "grid":
            return []
        arms = self.spec.arms or [ArmSpec(name="base")]
        keys = list(self.spec.parameters)
        combos = list(itertools.product(*(self.spec.parameters[k].grid_values() for k in keys))) or [()]
        cells = []
        for arm in arms:
            for combo in combos:
                settings = {**arm.settings, **dict(zip(keys, combo, strict=True))}
                label = arm.name
                varying = [k for k in keys if len(self.spec.parameters[k].grid_values()) > 1]
                if varying:
                    label += "+" + ",".join(f"{k}={settings[k]}" for k in varying)
                for seed in self.seeds:
                    cells.append(Cell(arm=label, seed=seed, settings=settings))
        return cells

    def config_for(self, settings: dict[str, Any], seed: int | None) -> ExperimentConfig:
        """The trial's config: base -> overrides -> arm settings / sampled params -> seed.

        Raises:
            ConfigError: a key is unknown or a value has the wrong type.
        """
        merged = {**self.spec.overrides, **settings}
        if seed is not None:
            merged["seed"] = seed
        return build_config(self.base_config, merged, source=self.source)

    def fingerprint(self) -> str:
        payload = {**self.spec.fingerprint_payload(), "base_config": self.base_config}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def to_record(self) -> dict[str, Any]:
        """What a study stores so that any worker (on any machine) runs the same trials."""
        return {
            "spec": self.spec.model_dump(mode="json", by_alias=True),
            "base_config": self.base_config,
            "source": self.source,
            "base_path": None if self.base_path is None else str(self.base_path),
            "fingerprint": self.fingerprint(),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ResolvedSweep:
        return cls(
            spec=SweepSpec.model_validate(record["spec"]),
            base_config=record["base_config"],
            source=record["source"],
            base_path=None if record.get("base_path") is None else Path(record["base_path"]),
        )


# --------------------------------------------------------------------------- loading
def _format_validation(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
    )


def parse_seed_list(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]`` (the ``--seeds`` option).

    Raises:
        ConfigError: an entry is not an integer, or the list is empty.
    """
    parts = [part.strip() for part in text.split(",") if part.strip()]
    try:
        seeds = [int(part) for part in parts]
    except ValueError as exc:
        raise ConfigError(f"--seeds takes comma-separated integers, got {text!r}") from exc
    if not seeds:
        raise ConfigError("--seeds is empty")
    return seeds


def parse_sweep_spec(raw: Any, *, source: str = "sweep") -> SweepSpec:
    """Validate a parsed sweep mapping (schema only, no config keys).

    Raises:
        ConfigError: a field is unknown, missing or of the wrong type (named with ``source``).
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        return SweepSpec.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_format_validation(exc)}") from exc


def _check_keys(spec: SweepSpec, source: str) -> None:
    keys = set(valid_keys())
    problems: list[str] = []
    for key in spec.overrides:
        if key not in keys:
            problems.append(f"overrides: unknown config key '{key}'")
    for key in spec.parameters:
        if key not in keys:
            problems.append(f"parameters: unknown config key '{key}'")
        elif key == "seed" and spec.seeds:
            problems.append("parameters: 'seed' is set by seeds:")
    for arm in spec.arms:
        for key in arm.settings:
            if key not in keys:
                problems.append(f"arm '{arm.name}': unknown config key '{key}'")
            elif key == "seed":
                problems.append(f"arm '{arm.name}': set seeds with seeds:, not in an arm")
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems) + ". Valid keys: " + ", ".join(sorted(keys)))


def _load_base(base: str | None, source: str) -> tuple[dict[str, Any], Path | None]:
    if base is None:
        return {}, None
    path = Path(os.path.expandvars(base)).expanduser()
    path = path if path.is_absolute() else Path.cwd() / path
    if not path.is_file():
        raise ConfigError(f"{source}: base config {base} not found (looked at {path}; relative to the cwd)")
    return read_yaml(path), path.resolve()


def resolve_sweep(
    spec: SweepSpec,
    *,
    source: str = "sweep",
    overrides: dict[str, Any] | None = None,
    base_config: dict[str, Any] | None = None,
    seeds: list[int] | None = None,
    name: str | None = None,
) -> ResolvedSweep:
    """Check keys, merge ``overrides``, load the base config and build every arm's config.

    Args:
        spec: the parsed sweep.
        source: name used in messages (the YAML path).
        overrides: dotted keys from the caller (``--set``); they win over the spec's
            ``overrides`` and lose to arm settings and sampled parameters.
        base_config: use this raw mapping instead of reading ``spec.base``.
        seeds: replace the spec's ``seeds`` (``--seeds``), e.g. one seed for a quick run.
        name: replace the spec's ``name`` (``--name``): the study and ``runs/<name>``, so a
            quick variant does not collide with the full sweep's study.

    Raises:
        ConfigError: unknown keys (listing the valid ones), a value of the wrong type
            naming the arm or parameter, or an invalid ``seeds`` / ``name``.
    """
    if seeds is not None or name is not None:
        raw = spec.model_dump(by_alias=True, exclude_unset=True)
        raw.update({k: v for k, v in (("seeds", seeds), ("name", name)) if v is not None})
        spec = parse_sweep_spec(raw, source=f"{source} (--seeds / --name)")
    if overrides:
        spec = spec.model_copy(update={"overrides": {**spec.overrides, **overrides}})
    _check_keys(spec, source)
    if base_config is None:
        base_config, base_path = _load_base(spec.base, source)
    else:
        base_path = None
    resolved = ResolvedSweep(spec=spec, base_config=base_config, source=source, base_path=base_path)
    try:
        base = resolved.config_for({}, None)
    except ConfigError as exc:
        raise ConfigError(f"{source}: base config with overrides is invalid: {exc}") from exc
    if spec.method == "grid":
        seen: set[str] = set()
        for cell in resolved.cells():
            if cell.arm in seen:
                continue
            seen.add(cell.arm)
            try:
                resolved.config_for(cell.settings, cell.seed)
            except ConfigError as exc:
                raise ConfigError(f"{source}: arm '{cell.arm}': {exc}") from exc
    else:
        for key, param in spec.parameters.items():
            for value in param.probe_values():
                try:
                    resolved.config_for({key: value}, base.seed)
                except ConfigError as exc:
                    raise ConfigError(f"{source}: parameter '{key}' value {value!r}: {exc}") from exc
    return resolved


def load_sweep_spec(
    path: Path | str,
    overrides: dict[str, Any] | None = None,
    *,
    seeds: list[int] | None = None,
    name: str | None = None,
) -> ResolvedSweep:
    """Read, validate and resolve a sweep YAML (nothing runs, nothing is written).

    ``overrides``, ``seeds`` and ``name`` are the caller's (see :func:`resolve_sweep`).

    Raises:
        ConfigError: the file is missing, not YAML, or invalid (see :func:`resolve_sweep`).
    """
    path = Path(path)
    raw = read_yaml(path, kind="sweep file", mapping=False)
    spec = parse_sweep_spec(raw, source=str(path))
    return resolve_sweep(spec, source=str(path), overrides=overrides, seeds=seeds, name=name)
