"""Benchmark 6: a TPE search sweep with and without median pruning, same trial budget and seeds.

Two sweeps built from ``sweeps/search.yaml`` (bayes / TPE over learning rate, weight decay,
dropout and DWA temperature; objective ``internal/os/c_index`` of the best checkpoint;
``sampler_seed`` 0; training seed from params.yaml) run with
:func:`hcc_exp.sweeps.runner.run_sweep`, one with the median pruner watching
``val/os_c_index`` every epoch, one with ``pruner: none``. Small budgets keep it to minutes:
``--trials`` x ``--epochs`` on the default synthetic cohort at 4 mm / 24^3 (the same 96 mm
box as the default 2 mm / 48^3, 8x fewer voxels). The pruner's ``n_startup_trials`` and
``n_warmup_steps`` are scaled down with the budget (search.yaml: 5 of 40 trials, 5 of 30
epochs).

Epochs are counted from every trial's run folder: the epochs with a validation row in
``logs/metrics.csv`` (a pruned trial counts the epochs it ran, including the one after which
it was stopped), checked against ``metrics.json`` ``epochs_trained`` (complete trials) and the
number of intermediate values Optuna recorded. The best score of each sweep is the best
COMPLETE trial's objective.

Trials run in this process (``workers=0``) one after the other, so both sweeps are
deterministic given the seeds, and through a ``train`` wrapper that passes the already
validated and preprocessed cache (``train(config, cohort=...)``): the default ``train`` would
re-validate the cohort (~8 s for 64 patients) before every trial, which is the same for both
sweeps and not what this benchmark measures.

    python benchmarks/bench_pruning.py [--trials 12] [--epochs 6] [--startup 2] [--warmup 1]
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml

from benchmarks.common import (
    REPO_ROOT,
    WORK_DIR,
    Target,
    base_parser,
    fresh_dir,
    report_result,
    setup_process,
    synthetic_cohort,
)

NAME = "pruning"
TARGET = Target(0.5, ">= 50% fewer epochs at an equal best score")
SCORE_TOLERANCE = 0.01
"""The pruned sweep's best score counts as equal when it is at most this much below the unpruned one."""


def train_on_prepared_cache(config, *, run_dir=None, tracker=None, callbacks=None, progress: bool = False):
    """``hcc_exp.training.train.train`` on the config's cache without re-validating the cohort each trial."""
    from hcc_exp.data.preprocess import preprocess_cohort
    from hcc_exp.training.train import train

    cache = preprocess_cohort(config.data.cohort_dir, config.data.cache_dir, config.preprocess, progress=False)
    return train(config, run_dir=run_dir, tracker=tracker, callbacks=callbacks, cohort=cache, progress=progress)


def write_sweep_yaml(path: Path, name: str, *, pruned: bool, trials: int, overrides: dict[str, Any],
                     startup: int, warmup: int) -> Path:
    """``sweeps/search.yaml`` with a small budget, this benchmark's data paths and the pruner on or off."""
    spec = yaml.safe_load((REPO_ROOT / "sweeps" / "search.yaml").read_text(encoding="utf-8"))
    spec.update(
        name=name,
        description=f"benchmark copy of sweeps/search.yaml ({'median pruning' if pruned else 'no pruning'})",
        base=str(REPO_ROOT / "params.yaml"),
        trials=trials,
        storage=None,
        overrides=overrides,
        pruner={"type": "median", "n_startup_trials": startup, "n_warmup_steps": warmup} if pruned else {"type": "none"},
        sampler_seed=spec.get("sampler_seed", 0) or 0,
    )
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def epochs_of_trial(sweep_dir: Path, run_dir: str | None) -> dict[str, Any]:
    """Epochs a trial trained, from its run folder (see the module docstring)."""
    import pandas as pd

    out: dict[str, Any] = {"from_log": None, "from_metrics_json": None}
    if not run_dir:
        return out
    folder = sweep_dir / run_dir
    log = folder / "logs" / "metrics.csv"
    if log.is_file():
        frame = pd.read_csv(log)
        if "val/loss" in frame.columns:
            out["from_log"] = int(frame.loc[frame["val/loss"].notna(), "epoch"].nunique())
    metrics = folder / "metrics.json"
    if metrics.is_file():
        out["from_metrics_json"] = int(json.loads(metrics.read_text(encoding="utf-8"))["epochs_trained"])
    return out


def validation_curve(sweep_dir: Path, run_dir: str | None, column: str = "val/os_c_index") -> list[float]:
    """The pruned-on metric after every epoch of a trial (``logs/metrics.csv``)."""
    import pandas as pd

    if not run_dir:
        return []
    log = sweep_dir / run_dir / "logs" / "metrics.csv"
    if not log.is_file():
        return []
    frame = pd.read_csv(log)
    if column not in frame.columns:
        return []
    rows = frame.loc[frame[column].notna()].groupby("epoch")[column].first()
    return [float(v) for v in rows]


def replay_pruner(curves: list[list[float]], values: list[float | None], pruner) -> dict[str, Any]:
    """Apply ``pruner`` to recorded curves, trial by trial in the same order (no training).

    Each trial reports its recorded per-epoch values until the pruner stops it; a trial that
    runs to the end completes with its recorded objective. Because training is deterministic
    (same hyper-parameters and seed give the same curve), this is what a sweep with that pruner
    would have done, as long as its sampler proposes the same trials (TPE's first 10 trials are
    independent random draws, the same with or without pruning).
    """
    import optuna

    # A fixed study name: Hyperband assigns trials to brackets by hashing it with the trial number.
    study = optuna.create_study(
        study_name="replay", direction="maximize", pruner=pruner, sampler=optuna.samplers.RandomSampler(seed=0)
    )
    epochs, pruned, best = 0, 0, None
    for curve, value in zip(curves, values, strict=True):
        trial = study.ask()
        stopped = False
        for step, v in enumerate(curve):
            trial.report(v, step)
            epochs += 1
            if trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                stopped, pruned = True, pruned + 1
                break
        if not stopped:
            study.tell(trial, value if value is not None else float("nan"))
            if value is not None and (best is None or value > best):
                best = value
    return {"epochs": epochs, "pruned_trials": pruned, "best_value": best}


def replay_candidates(unpruned: dict[str, Any], epochs: int, startup: int, warmup: int) -> dict[str, Any]:
    """Epochs and best score other pruners would have given on the unpruned sweep's recorded curves."""
    import optuna

    curves = [t["curve"] for t in unpruned["trials"]]
    values = [t["value"] for t in unpruned["trials"]]
    total = sum(len(c) for c in curves)
    candidates = {
        f"median (startup {startup}, warm-up {warmup}) = this run": optuna.pruners.MedianPruner(
            n_startup_trials=startup, n_warmup_steps=warmup
        ),
        f"median (startup {startup}, warm-up 0)": optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=0),
        f"percentile 25, keeps the top quarter (startup {startup}, warm-up {warmup})": optuna.pruners.PercentilePruner(
            25.0, n_startup_trials=startup, n_warmup_steps=warmup
        ),
        "successive halving (min 1 epoch, factor 3)": optuna.pruners.SuccessiveHalvingPruner(
            min_resource=1, reduction_factor=3
        ),
        f"hyperband (min 1, max {epochs}, factor 3) = pruner: hyperband": optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=epochs, reduction_factor=3
        ),
    }
    out = {}
    for name, pruner in candidates.items():
        r = replay_pruner(curves, values, pruner)
        r["epochs_saved_fraction"] = round(1.0 - r["epochs"] / total, 4) if total else None
        out[name] = r
    return out


def run_one(spec_path: Path, runs_root: Path, *, pruned: bool) -> dict[str, Any]:
    """Run a sweep from scratch; per-trial state, value and epochs, and the sweep's totals.

    Optuna records an intermediate value per epoch only where the pruning callback runs
    (the pruned sweep), so only there are the two epoch counts compared.
    """
    import optuna

    from hcc_exp.sweeps.runner import run_sweep, sweep_storage

    started = time.perf_counter()
    summary = run_sweep(
        spec_path, workers=0, train_fn=train_on_prepared_cache, progress=False, runs_root=runs_root
    )
    seconds = time.perf_counter() - started
    _, storage = sweep_storage(summary.sweep_dir)
    study = optuna.load_study(study_name=summary.name, storage=storage)
    reported = {t.number: len(t.intermediate_values) for t in study.get_trials(deepcopy=False)}
    trials = []
    for t in summary.trials:
        epochs = epochs_of_trial(summary.sweep_dir, t.run_dir)
        trials.append(
            {
                "number": t.number,
                "state": t.state,
                "value": t.value,
                "epochs": epochs["from_log"],
                "epochs_metrics_json": epochs["from_metrics_json"],
                "epochs_optuna": reported.get(t.number),
                "curve": [round(v, 4) for v in validation_curve(summary.sweep_dir, t.run_dir)],
                "params": t.params,
            }
        )
    best = summary.best
    consistent = all(
        (not pruned or t["epochs"] == t["epochs_optuna"]) and t["epochs_metrics_json"] in (None, t["epochs"])
        for t in trials
    )
    return {
        "sweep_dir": str(summary.sweep_dir),
        "seconds": round(seconds, 1),
        "states": summary.state_counts,
        "total_epochs": sum(t["epochs"] or 0 for t in trials),
        "best_value": None if best is None else best.value,
        "best_trial": None if best is None else best.number,
        "best_params": None if best is None else best.params,
        "epoch_counts_consistent": consistent,
        "trials": trials,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = base_parser(__doc__.splitlines()[0], repeats=1)
    parser.add_argument("--trials", type=int, default=12, help="trials per sweep (default 12)")
    parser.add_argument("--epochs", type=int, default=6, help="max epochs per trial (default 6)")
    parser.add_argument("--startup", type=int, default=2, help="median pruner n_startup_trials (default 2)")
    parser.add_argument("--warmup", type=int, default=1, help="median pruner n_warmup_steps (default 1)")
    parser.add_argument("--crop", type=int, default=24, help="crop edge in voxels (default 24)")
    parser.add_argument("--spacing", type=float, default=4.0, help="isotropic spacing in mm (default 4)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    setup_process(args.threads)

    import optuna

    from hcc_exp.config import load_config
    from hcc_exp.training.train import prepare_cohort

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    defaults = load_config("params.yaml")
    cohort_dir = synthetic_cohort(defaults.synth.patients, defaults.synth.seed)
    work = fresh_dir(WORK_DIR / NAME)
    overrides = {
        "data.cohort_dir": str(cohort_dir),
        "data.cache_dir": str(WORK_DIR / "cache"),
        "tracking.runs_dir": str(work / "runs"),
        "tracking.wandb": False,
        "trainer.max_epochs": args.epochs,
        "trainer.accelerator": "cpu",
        "preprocess.spacing_mm": [args.spacing] * 3,
        "preprocess.crop_size_vox": [args.crop] * 3,
    }
    prepare_cohort(load_config("params.yaml", overrides), progress=False)  # validate + preprocess once

    sweeps = {}
    for arm in ("pruned", "unpruned"):
        spec = write_sweep_yaml(
            work / f"{arm}.yaml",
            f"bench-{arm}",
            pruned=arm == "pruned",
            trials=args.trials,
            overrides=overrides,
            startup=args.startup,
            warmup=args.warmup,
        )
        sweeps[arm] = run_one(spec, work / "sweeps", pruned=arm == "pruned")

    pruned, unpruned = sweeps["pruned"], sweeps["unpruned"]
    replay = replay_candidates(unpruned, args.epochs, args.startup, args.warmup)
    same_params = sum(
        a["params"] == b["params"] for a, b in zip(pruned["trials"], unpruned["trials"], strict=False)
    )
    saved = 1.0 - pruned["total_epochs"] / unpruned["total_epochs"] if unpruned["total_epochs"] else float("nan")
    best_p, best_u = pruned["best_value"], unpruned["best_value"]
    score_gap = None if best_p is None or best_u is None else best_p - best_u
    equal = score_gap is not None and score_gap >= -SCORE_TOLERANCE
    met = bool(TARGET.met(saved) and equal)
    max_saving = 1.0 - (args.startup * args.epochs + (args.trials - args.startup) * (args.warmup + 1)) / (
        args.trials * args.epochs
    )
    notes = [
        f"Budget {args.trials} trials x {args.epochs} epochs, 4 mm / {args.crop}^3, median pruner "
        f"n_startup_trials={args.startup}, n_warmup_steps={args.warmup}: the most pruning could save here is "
        f"{max_saving:.0%} (every non-startup trial stopped after its first prunable epoch).",
        "Both sweeps sample with TPE (sampler_seed 0) and train with the same seed. TPE draws its first 10 trials "
        f"at random, so the two sweeps share their first trials exactly ({same_params} of {args.trials} trials "
        "with identical hyper-parameters here); later trials see different histories.",
        "results.replay: other pruners applied to the unpruned sweep's recorded per-epoch val/os_c_index curves "
        "(no training; exact for the trials both sweeps share, since training is deterministic; the replay of "
        "this run's own pruner differs from the measured count only through the trials that are not shared): "
        + "; ".join(
            f"{name}: {r['epochs_saved_fraction']:.0%} fewer epochs ({r['epochs']}), best "
            + ("n/a" if r["best_value"] is None else f"{r['best_value']:.3f}")
            for name, r in replay.items()
        )
        + ".",
        f"'Equal best score' = the pruned sweep's best is at most {SCORE_TOLERANCE} below the unpruned one; the "
        "objective is a C-index on the internal split (about 19 patients), which varies by a few hundredths "
        "between hyper-parameter settings that are not really different.",
    ]
    if not (pruned["epoch_counts_consistent"] and unpruned["epoch_counts_consistent"]):
        notes.append("epoch counts from logs/metrics.csv and Optuna's intermediate values disagree for some trial")
    if not met:
        reasons = []
        if not TARGET.met(saved):
            reasons.append(
                f"pruning saved {saved:.0%} of the epochs (pruned {pruned['states'].get('PRUNED', 0)} of "
                f"{args.trials} trials; max possible {max_saving:.0%})"
            )
        if not equal:
            reasons.append(f"best score {best_p} vs {best_u} without pruning")
        notes.append("target missed: " + "; ".join(reasons) + ".")

    def fmt(value: float | None) -> str:
        return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"

    return report_result(
        NAME,
        title="Pruning",
        compares="TPE sweep with median pruning vs without (same trials, seeds): epochs and best score",
        ratio_label="fraction of epochs saved by pruning (1 - pruned / unpruned)",
        ratio_value=saved,
        ratio_text=(
            f"{saved:.0%} fewer epochs ({pruned['total_epochs']} vs {unpruned['total_epochs']}); "
            f"best {fmt(best_p)} vs {fmt(best_u)}"
        ),
        target=TARGET,
        target_met=met,
        sizes={
            "trials": args.trials,
            "max_epochs": args.epochs,
            "pruner": {"type": "median", "n_startup_trials": args.startup, "n_warmup_steps": args.warmup},
            "prune_metric": "val/os_c_index",
            "objective": "internal/os/c_index",
            "cohort_patients": defaults.synth.patients,
            "spacing_mm": [args.spacing] * 3,
            "crop_size_vox": [args.crop] * 3,
            "workers": 0,
            "threads": args.threads,
        },
        timings={
            "pruned_sweep_s": {"min": pruned["seconds"], "median": pruned["seconds"], "max": pruned["seconds"],
                               "repeats": 1, "unit": "s"},
            "unpruned_sweep_s": {"min": unpruned["seconds"], "median": unpruned["seconds"],
                                 "max": unpruned["seconds"], "repeats": 1, "unit": "s"},
        },
        results={
            "epochs_saved_fraction": saved,
            "max_possible_saving": max_saving,
            "best_score_gap": score_gap,
            "best_scores_equal": equal,
            "score_tolerance": SCORE_TOLERANCE,
            "trials_with_identical_params": same_params,
            "replay": replay,
            "pruned": pruned,
            "unpruned": unpruned,
        },
        notes=notes,
        started=started,
    )


if __name__ == "__main__":
    main()
