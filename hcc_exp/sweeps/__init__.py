"""Sweeps: one YAML (W&B's sweep format plus named arms and seeds), run by Optuna (default) or W&B.

Entry points: :func:`hcc_exp.sweeps.runner.run_sweep` (local workers),
:func:`hcc_exp.sweeps.slurm.launch_sweep` (Slurm array tasks),
:func:`~hcc_exp.sweeps.runner.sweep_status_report`, :func:`~hcc_exp.sweeps.runner.open_dashboard`,
:func:`~hcc_exp.sweeps.runner.sync_sweep`. The schema is :mod:`hcc_exp.sweeps.spec`
(``launcher:`` in :mod:`~hcc_exp.sweeps.launcher`), the folder layout :mod:`~hcc_exp.sweeps.folder`,
the study and worker loop :mod:`~hcc_exp.sweeps.optuna_backend`, dead workers and re-queueing
:mod:`~hcc_exp.sweeps.liveness`, preemption :mod:`~hcc_exp.sweeps.preemption`, GPU placement
:mod:`~hcc_exp.sweeps.placement`.
"""

from hcc_exp.sweeps.spec import ResolvedSweep, SweepSpec, load_sweep_spec

__all__ = ["ResolvedSweep", "SweepSpec", "load_sweep_spec"]
