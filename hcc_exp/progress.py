"""The one Rich progress bar style for per-patient work (check, import, synth, preprocess)."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def patient_progress(verb: str, *, enabled: bool = True) -> Progress:
    """A transient ``<verb> patients  ━━━━  12/64  0:00:05`` bar; ``enabled=False`` shows nothing."""
    return Progress(
        # markup=False: the description is a patient id, and ids like "[/x]" are valid data.
        TextColumn(f"{verb} {{task.description}}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=True,
        disable=not enabled,
    )
