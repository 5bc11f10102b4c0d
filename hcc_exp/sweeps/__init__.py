"""Sweeps: one YAML (W&B's sweep format plus named arms and seeds), run by Optuna (default) or W&B.

Entry points: :func:`hcc_exp.sweeps.runner.run_sweep`, :func:`~hcc_exp.sweeps.runner.open_dashboard`,
:func:`~hcc_exp.sweeps.runner.sync_sweep`; the schema is :mod:`hcc_exp.sweeps.spec`.
"""

from hcc_exp.sweeps.spec import ResolvedSweep, SweepSpec, load_sweep_spec

__all__ = ["ResolvedSweep", "SweepSpec", "load_sweep_spec"]
