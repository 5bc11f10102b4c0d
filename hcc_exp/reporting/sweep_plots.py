"""Sweep report plots from the Optuna study: importance, optimisation history, parallel coordinates.

Optuna's matplotlib visualisations (``optuna.visualization.matplotlib``) drawn from the sweep's
own study (the journal file in the sweep folder, or the storage named in ``sweep.yaml``):

* parameter / arm importance by fANOVA (``FanovaImportanceEvaluator``, seeded): for an ablation
  grid the parameters are ``arm`` and ``seed``, so it says how much of the objective's variance
  the arm explains beside the seed;
* the optimisation history (objective per trial, best so far);
* parallel coordinates of the parameters against the objective.

A plot that cannot be drawn (W&B backend, fewer than two completed trials, one value only) is a
reason in the report instead of a figure. :func:`per_seed_table` is the ablation table with one
row per run (``arm``, ``seed``, metrics) that ``report --wandb`` logs to W&B.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import yaml

from hcc_exp.reporting import document as doc

PLOTS: dict[str, str] = {
    "importance": "Parameter / arm importance (fANOVA)",
    "history": "Optimisation history",
    "parallel": "Parallel coordinates",
}
IMPORTANCE_SEED = 0


def open_sweep_study(sweep_dir: Path | str):
    """The sweep's Optuna study, or a reason (str) why there is none."""
    import optuna

    from hcc_exp.errors import SweepError
    from hcc_exp.sweeps.storage import open_storage, resolve_storage

    sweep_dir = Path(sweep_dir)
    spec_path = sweep_dir / "sweep.yaml"
    spec = yaml.safe_load(spec_path.read_text(encoding="utf-8")) if spec_path.is_file() else {}
    spec = spec if isinstance(spec, dict) else {}
    if spec.get("backend", "optuna") != "optuna":
        return f"backend {spec.get('backend')}: the study lives on the W&B server"
    try:
        target = resolve_storage(spec.get("storage"), sweep_dir)
        if target.kind == "journal" and not Path(target.url).is_file():
            return f"no Optuna storage found ({target.display})"
        storage = open_storage(target)
        names = optuna.get_all_study_names(storage)
    except (SweepError, OSError, RuntimeError) as exc:
        return f"cannot open the sweep's storage: {exc}"
    name = spec.get("name") if spec.get("name") in names else (names[0] if len(names) == 1 else None)
    if name is None:
        return f"no study named {spec.get('name')!r} in the storage (found {sorted(names)})"
    return optuna.load_study(study_name=name, storage=storage)


def param_importances(study) -> dict[str, float]:
    """fANOVA importances of the study's parameters (seeded), normalised to sum to 1."""
    import optuna

    return optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=IMPORTANCE_SEED)
    )


def write_sweep_plots(study, out_dir: Path | str) -> dict[str, Path | str]:
    """Draw the three plots as PNG into ``out_dir``; name -> path, or the reason it was not drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    varying = {k for t in complete for k in t.params if len({str(u.params.get(k)) for u in complete}) > 1}
    results: dict[str, Path | str] = {}
    draw = {
        "importance": lambda: ovm.plot_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=IMPORTANCE_SEED)
        ),
        "history": lambda: ovm.plot_optimization_history(study),
        "parallel": lambda: ovm.plot_parallel_coordinate(study),
    }
    for name, plot in draw.items():
        if len(complete) < 2:
            results[name] = f"{len(complete)} completed trial(s): nothing to compare"
            continue
        if name != "history" and not varying:
            results[name] = "no parameter takes more than one value"
            continue
        with warnings.catch_warnings():  # optuna marks its matplotlib backend experimental
            warnings.simplefilter("ignore")
            try:
                ax = plot()
            except (ValueError, RuntimeError) as exc:
                results[name] = f"optuna could not draw it: {exc}"
                continue
        figure = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
        figure.set_size_inches(8, 5)
        figure.tight_layout()
        path = out / f"sweep_{name}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        results[name] = path
    return results


def sweep_plot_blocks(sweep_dir: Path | str, out_dir: Path | str) -> list[doc.Block]:
    """Report section: the plots (PNG under ``out_dir``) and the importances, or why they are absent."""
    blocks: list[doc.Block] = [doc.Heading("Sweep: importance, history, parallel coordinates", 2)]
    study = open_sweep_study(sweep_dir)
    if isinstance(study, str):
        return [*blocks, doc.Paragraph(f"No Optuna plots: {study}.")]
    plots = write_sweep_plots(study, out_dir)
    for name, result in plots.items():
        if isinstance(result, Path):
            blocks.append(doc.Image(result, PLOTS[name]))
        else:
            blocks.append(doc.Paragraph(f"{PLOTS[name]}: not drawn ({result})."))
    if isinstance(plots.get("importance"), Path):
        importances = param_importances(study)
        blocks.append(doc.Table(("Parameter", "fANOVA importance"), tuple((k, f"{v:.3f}") for k, v in importances.items())))
    return blocks


def per_seed_table(table) -> pd.DataFrame:
    """One row per run of an :class:`~hcc_exp.reporting.tables.AblationTable`: arm, seed, trial, objective, metrics."""
    rows = []
    for run in table.sweep.runs:
        row = {"arm": run.arm, "seed": int(run.seed), "trial": run.trial, "run_id": run.run_dir.name, "objective": run.value}
        row.update({k: v for k, v in run.metrics.items() if k.count("/") == 2})
        rows.append(row)
    return pd.DataFrame(rows)
