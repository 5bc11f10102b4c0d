"""The flat metrics of an evaluation and, for each one that could not be computed, its reason.

Every step of the evaluation puts its numbers here under ``"<split>/<task>/<metric>"`` keys
(:func:`hcc_exp.vocabulary.metric_key`); a statistic that is :class:`NotEstimable` (or not
finite) goes to ``reasons`` instead, so ``metrics.json`` only holds numbers and
``reasons.json`` says why the others are missing. Table cells are formatted from it with the
package's one formatter (:mod:`hcc_exp.formatting`).

>>> record = MetricRecord()
>>> record.put("internal/os/c_index", 0.71)
>>> record.put_fields(NotEstimable("no events"), {"external/os/c_index": "estimate"})
False
>>> record.text("internal/os/c_index"), record.text("external/os/c_index")
('0.710', 'n/e (no events)')
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from hcc_exp.evaluation.common import NotEstimable
from hcc_exp.formatting import format_interval, format_number, format_p

NOT_COMPUTED = "not computed"


class MetricRecord:
    """Flat metrics plus, for every metric that could not be computed, the reason."""

    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}
        self.reasons: dict[str, str] = {}

    def put(self, key: str, value: float | int, reason: str | None = None) -> None:
        """Store ``value``; a non-finite one becomes a reason (``reason`` or "not finite")."""
        value = float(value)
        if math.isfinite(value):
            self.metrics[key] = value
        else:
            self.reasons[key] = reason or "not finite"

    def miss(self, keys: Iterable[str] | str, reason: str) -> None:
        """Record ``reason`` for every key."""
        for key in [keys] if isinstance(keys, str) else keys:
            self.reasons[key] = reason

    def put_fields(self, result: object, fields: Mapping[str, str], reason: str | None = None) -> bool:
        """Store ``getattr(result, attribute)`` under each ``key -> attribute`` of ``fields``.

        When ``result`` is :class:`NotEstimable`, every key gets its reason instead. ``reason`` is
        recorded for a field whose value is not finite. Returns whether ``result`` was estimable.
        """
        if isinstance(result, NotEstimable):
            self.miss(fields.keys(), result.reason)
            return False
        for key, attribute in fields.items():
            self.put(key, getattr(result, attribute), reason)
        return True

    def put_values(self, values: Mapping[str, float], reason: str | None = None) -> None:
        """Store several values, each with the same reason should it not be finite."""
        for key, value in values.items():
            self.put(key, value, reason)

    def reason(self, key: str) -> str:
        return self.reasons.get(key, NOT_COMPUTED)

    # --------------------------------------------------------------------------- table cells
    def text(self, key: str, digits: int = 3) -> str:
        """A table cell: the value, or "n/e (reason)"."""
        return format_number(self.metrics.get(key), digits, reason=self.reason(key))

    def interval(self, key: str, low: str, high: str, digits: int = 3) -> str:
        """``"estimate [low, high]"`` of three keys, or "n/e (reason)" of the estimate."""
        return format_interval(
            self.metrics.get(key), self.metrics.get(low), self.metrics.get(high), digits, reason=self.reason(key)
        )

    def p_value(self, key: str) -> str:
        return format_p(self.metrics.get(key), reason=self.reason(key))
