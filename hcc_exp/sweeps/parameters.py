"""One parameter of a sweep in W&B's syntax (``values`` / ``value`` / ``min``-``max`` with a distribution).

The strict base model of every sweep-schema section lives here too.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_serializer, model_validator

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


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)



class ParameterSpec(StrictModel):
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
