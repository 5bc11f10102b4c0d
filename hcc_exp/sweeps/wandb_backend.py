"""``backend: wandb``: the same sweep YAML run by W&B's sweep server and ``wandb.agent``.

W&B sweeps are coordinated by W&B's server, so this backend needs an account and a
network; offline or without an API key it stops at once and points to the Optuna
backend, which runs the same YAML locally. (W&B's local sweep engine pins
``numpy<2`` and is not used.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hcc_exp.errors import SweepError
from hcc_exp.sweeps.spec import SEARCH_ARM, ResolvedSweep, SweepSpec


def to_wandb_sweep_config(spec: SweepSpec, seeds: list[int]) -> dict[str, Any]:
    """Our sweep schema as a W&B sweep config (pure).

    Grids become a W&B grid over ``arm`` (named arms), any grid ``parameters`` and
    ``seed``; W&B's grid is a full product, which over these three matches our cells.
    Searches keep W&B's parameter syntax as written, with ``seed`` fixed; ``trials``
    becomes ``run_cap``; ``pruner: hyperband`` becomes ``early_terminate``.

    Args:
        spec: the sweep.
        seeds: the seeds to run (``spec.seeds`` or the base config's seed).

    Raises:
        SweepError: ``pruner: median`` (W&B early termination is hyperband only).
    """
    config: dict[str, Any] = {
        "name": spec.name,
        "method": spec.method,
        "metric": {"name": spec.metric.name, "goal": spec.metric.goal},
    }
    if spec.description:
        config["description"] = spec.description
    parameters: dict[str, Any] = {}
    if spec.method == "grid" and spec.arms:
        parameters["arm"] = {"values": [arm.name for arm in spec.arms]}
    for key, param in spec.parameters.items():
        parameters[key] = param.model_dump(mode="json", exclude_unset=True)
    if spec.method == "grid":
        parameters["seed"] = {"values": list(seeds)}
    else:
        parameters["seed"] = {"value": seeds[0]}
    config["parameters"] = parameters
    if spec.trials is not None:
        config["run_cap"] = spec.trials
    if spec.pruner.type == "hyperband":
        options = spec.pruner.options()
        config["early_terminate"] = {
            "type": "hyperband",
            "min_iter": int(options.get("min_resource", 1)),
            "eta": int(options.get("reduction_factor", 3)),
        }
    elif spec.pruner.type == "median":
        raise SweepError(
            f"sweep '{spec.name}': W&B sweeps stop runs early with hyperband only; use pruner: hyperband "
            "or backend: optuna (median pruning)"
        )
    return config


def trial_settings(resolved: ResolvedSweep, run_config: dict[str, Any]) -> tuple[str, int, dict[str, Any]]:
    """Arm label, seed and dotted config settings of one W&B agent run."""
    spec = resolved.spec
    seed = int(run_config.get("seed", resolved.seeds[0]))
    arm_name = str(run_config.get("arm", "base" if spec.method == "grid" else SEARCH_ARM))
    settings: dict[str, Any] = {}
    if spec.method == "grid" and spec.arms:
        arms = {arm.name: arm.settings for arm in spec.arms}
        if arm_name not in arms:
            raise SweepError(f"W&B run asked for arm '{arm_name}', not one of {sorted(arms)}")
        settings.update(arms[arm_name])
    for key in spec.parameters:
        if key in run_config:
            settings[key] = run_config[key]
    return arm_name, seed, settings


def run_wandb_sweep(resolved: ResolvedSweep, *, sweep_dir: Path, train_fn: Any) -> str:
    """Register the sweep on W&B and run an agent in this process.

    Returns:
        The W&B sweep id.

    Raises:
        SweepError: no W&B server available (offline mode or no API key), said at once.
    """
    from hcc_exp.tracking import TrackingError, make_tracker, safe_name, wandb_server_unavailable
    from hcc_exp.tracking.wandb_tracker import run_wandb_agent

    spec = resolved.spec
    base = resolved.config_for({}, None)
    reason = wandb_server_unavailable(base.tracking.wandb_mode) if base.tracking.wandb else "tracking.wandb is false"
    if reason is not None:
        raise SweepError(
            f"sweep '{spec.name}' uses backend: wandb, which needs a W&B server and a logged-in account, "
            f"but {reason}. Use backend: optuna (the default) to run the same sweep locally, or log in "
            "(`wandb login`) and set tracking.wandb_mode=online."
        )
    config = to_wandb_sweep_config(spec, resolved.seeds)
    counter = {"n": 0}

    def one_run(run_config: dict[str, Any]) -> None:
        arm, seed, settings = trial_settings(resolved, run_config)
        trial_config = resolved.config_for(settings, seed)
        run_dir = Path(sweep_dir) / "runs" / f"wandb-{counter['n']:04d}-{safe_name(arm, 60)}-s{seed}"
        counter["n"] += 1
        tracker = make_tracker(
            trial_config.tracking,
            group=spec.name,
            job_type="sweep",
            tags=[f"sweep:{spec.name}", f"arm:{arm}", f"seed:{seed}"],
            wandb_dir=Path(sweep_dir),
            adopt_active_run=True,
        )
        train_fn(trial_config, run_dir=run_dir, tracker=tracker, callbacks=[])

    try:
        return run_wandb_agent(
            config, one_run, project=spec.project or base.tracking.wandb_project, count=spec.trials
        )
    except TrackingError as exc:
        raise SweepError(str(exc)) from exc
