"""The one way every table cell is written: estimates, intervals, p-values and "not estimable".

Every table of the package (evaluation tables, ablation tables, reports, the terminal) formats
its numbers here, so a not-estimable cell or a small p-value reads the same everywhere:

* an estimate: fixed decimals, ``"0.812"`` (``signed=True``: ``"+0.012"``);
* an interval: ``"0.812 [0.790, 0.834]"`` (brackets and a comma, so negative bounds stay
  readable); the bracket is left out when the bounds are not estimable;
* a p-value: three decimals, below 0.001 as ``"<0.001"``;
* a value that could not be computed: ``"n/e"``, or ``"n/e (reason)"`` when the reason is known.

The module sits at the bottom of the package (it imports nothing from ``hcc_exp``).

>>> format_interval(0.81234, 0.79, 0.834)
'0.812 [0.790, 0.834]'
>>> format_p(0.0004), format_p(0.0421)
('<0.001', '0.042')
>>> format_number(float("nan")), not_estimable("no events")
('n/e', 'n/e (no events)')
"""

from __future__ import annotations

import math
from typing import Any

NOT_ESTIMABLE = "n/e"
"""The cell of a statistic that could not be computed."""
P_FLOOR = 0.001
"""p-values below this print as ``"<0.001"``."""


def is_estimable(value: Any) -> bool:
    """True for a finite real number (not None, NaN, infinite, a string or a bool).

    >>> is_estimable(0.5), is_estimable(float("nan")), is_estimable(None), is_estimable("n/e")
    (True, False, False, False)
    """
    if value is None or isinstance(value, (bool, str)):
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def not_estimable(reason: str | None = None) -> str:
    """``"n/e"``, or ``"n/e (reason)"``.

    >>> not_estimable(), not_estimable("one class only")
    ('n/e', 'n/e (one class only)')
    """
    return f"{NOT_ESTIMABLE} ({reason})" if reason else NOT_ESTIMABLE


def format_number(value: Any, digits: int = 3, signed: bool = False, reason: str | None = None) -> str:
    """An estimate with ``digits`` decimals; not estimable (NaN, None, text) -> ``"n/e"`` (with ``reason``).

    >>> format_number(0.81234), format_number(0.012, signed=True), format_number(3, 0)
    ('0.812', '+0.012', '3')
    >>> format_number(None, reason="no test patients")
    'n/e (no test patients)'
    """
    if not is_estimable(value):
        return not_estimable(reason)
    return f"{float(value):+.{digits}f}" if signed else f"{float(value):.{digits}f}"


def format_interval(
    value: Any, low: Any, high: Any, digits: int = 3, signed: bool = False, reason: str | None = None
) -> str:
    """``"estimate [low, high]"``; without the bracket when a bound is not estimable.

    >>> format_interval(-0.05, -0.1, 0.02, signed=True)
    '-0.050 [-0.100, +0.020]'
    >>> format_interval(0.7, float("nan"), 0.8), format_interval(None, 0.1, 0.2, reason="no events")
    ('0.700', 'n/e (no events)')
    """
    text = format_number(value, digits, signed, reason)
    if not is_estimable(value) or not (is_estimable(low) and is_estimable(high)):
        return text
    return f"{text} [{format_number(low, digits, signed)}, {format_number(high, digits, signed)}]"


def format_p(value: Any, reason: str | None = None) -> str:
    """A p-value: ``"<0.001"`` below :data:`P_FLOOR`, else three decimals; ``"n/e"`` if missing.

    >>> format_p(1e-7), format_p(0.05), format_p(1.0), format_p(float("nan"))
    ('<0.001', '0.050', '1.000', 'n/e')
    """
    if not is_estimable(value):
        return not_estimable(reason)
    return f"<{P_FLOOR:g}" if float(value) < P_FLOOR else f"{float(value):.3f}"
