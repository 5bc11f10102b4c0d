"""The ``hcc-exp`` command line: parses arguments and delegates; no logic lives here.

Every command's work is a function in the package (imported lazily so ``--help`` is
fast). Errors derived from :class:`hcc_exp.errors.HccExpError`, and ordinary environment
errors (a folder that is a file, no permission, a full disk: :class:`OSError`), are printed
as one message and exit with status 2; nothing is half-written by a failing command.

Both consoles print with Rich markup off: messages carry patient ids, file names and
column names, and a ``[patient ...]`` prefix or a ``[/x]`` in the data must reach the
terminal as written, not be taken for a style tag. Styling goes through ``Text`` objects.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from hcc_exp import __version__
from hcc_exp.errors import HccExpError

console = Console(stderr=False, markup=False)
err_console = Console(stderr=True, markup=False)


def _done(label: str, detail: object = "") -> None:
    """``label`` in green, then ``detail`` as plain text (paths and ids are never markup)."""
    console.print(Text.assemble((label, "green"), " ", str(detail)))

app = typer.Typer(
    name="hcc-exp",
    help="Train, sweep and compare multi-task deep-learning models (MVI, OS, RFS) on triphasic liver CT.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,
)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML config to start from (default: ./params.yaml if present, else the built-in defaults)."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a config key, e.g. --set optim.lr=3e-4 (repeatable)."),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]


def _version(value: bool) -> None:
    if value:
        console.print(f"hcc-exp {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """hcc-exp: an experiment platform for multi-task 3D CNNs on triphasic CT of hepatocellular carcinoma."""


def _config(config: Path | None, overrides: list[str] | None):
    from hcc_exp.config import load_config, parse_set_options

    return load_config(config, parse_set_options(overrides))


# ----------------------------------------------------------------------------- data
@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write the synthetic cohort to (replaced if it exists).")],
    patients: Annotated[int, typer.Option(help="Number of patients (default and the paper: 388).")] = 388,
    seed: Annotated[int, typer.Option(help="Random seed; same seed and version give identical files.")] = 7,
    quiet: QuietOpt = False,
) -> None:
    """Write the embedded synthetic triphasic CT cohort (with its oracle) to OUT."""
    from hcc_exp.data.synthetic import write_synthetic_cohort
    from hcc_exp.evaluation.oracle import cohort_oracle_metrics
    from hcc_exp.reporting.console import render_synthetic_summary

    summary = write_synthetic_cohort(out, patients=patients, seed=seed, progress=not quiet)
    render_synthetic_summary(summary, console, oracle=cohort_oracle_metrics(out))
    _done(f"Wrote {patients} patients to", f"{out} (oracle in {out / 'oracle.csv'})")


@app.command("import")
def import_(
    src: Annotated[Path, typer.Argument(help="Folder with one sub-folder per patient (DICOM series / NIfTI).")],
    dst: Annotated[Path, typer.Argument(help="Cohort folder to create.")],
    mapping: Annotated[Path, typer.Option(help="YAML mapping of clinical table, columns, phases and masks.")],
    overwrite: Annotated[bool, typer.Option(help="Replace an existing DST.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Import raw DICOM / NIfTI data and a clinical table into the cohort layout, then validate it."""
    from hcc_exp.data.importer import import_cohort
    from hcc_exp.reporting.console import render_validation_report

    report = import_cohort(src, dst, mapping, overwrite=overwrite, progress=not quiet)
    render_validation_report(report, console)
    _done("Imported cohort written to", dst)


@app.command()
def check(
    cohort: Annotated[Path, typer.Argument(help="Cohort folder (cohort.csv + images/).")],
    report_file: Annotated[
        Path | None,
        typer.Option(
            help="Write every problem to this CSV. Default: only when the console list is cut short, to "
            "hcc-exp-check-<cohort>-problems.csv in the working folder (the user cache if that folder is "
            "inside the cohort or DVC-tracked)."
        ),
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Validate a cohort: report every problem (patient, file, column) or print a summary."""
    from hcc_exp.data.validate import default_problem_list_path, validate_cohort
    from hcc_exp.reporting.console import CHECK_ROWS_PER_PROBLEM, render_validation_report

    report = validate_cohort(cohort, progress=not quiet)
    if report_file is None and report.more_than(CHECK_ROWS_PER_PROBLEM):
        report_file = default_problem_list_path(cohort)
    if report_file is not None:
        report.write_problem_list(report_file)
    render_validation_report(report, console, problem_list=report_file)
    if not report.ok:
        _fail(f"cohort {cohort} has {len(report.errors)} problem(s) (listed above)")


@app.command()
def preprocess(
    cohort: Annotated[Path, typer.Argument(help="Cohort folder.")],
    out: Annotated[Path, typer.Argument(help="Cache root; the cache is OUT/<params hash>-<data hash>/.")],
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Resample, clip, normalise, build the peritumoral margin and crop every patient (cached)."""
    from hcc_exp.data.preprocess import preprocess_cohort
    from hcc_exp.data.validate import require_valid

    cfg = _config(config, overrides)
    require_valid(cohort, phases=cfg.phases, progress=not quiet)
    cache = preprocess_cohort(cohort, out, cfg.preprocess, progress=not quiet)
    _done("Preprocessed cache:", f"{cache.root} ({len(cache.labels)} patients, shape {cache.shape_zyx})")


# ----------------------------------------------------------------------------- publication tables (issue 16)
@app.command("cohort-table")
def cohort_table(
    cohort: Annotated[Path, typer.Argument(help="Cohort folder (cohort.csv).")],
    out: Annotated[Path | None, typer.Option(help="Output folder (default: the cohort folder).")] = None,
) -> None:
    """Table 1: baseline characteristics per cohort with chi-square / Fisher / t / Mann-Whitney p-values."""
    from hcc_exp.reporting.cohort_table import write_cohort_table

    paths = write_cohort_table(cohort, out)
    _done("Table 1 written:", ", ".join(str(p) for p in paths.values()))


@app.command()
def agreement(
    cohort_a: Annotated[Path, typer.Argument(help="Cohort folder with the first annotation.")],
    cohort_b: Annotated[Path, typer.Argument(help="Cohort folder with the second annotation of the same patients.")],
    out: Annotated[Path | None, typer.Option(help="Output folder (default: COHORT_B/agreement).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (one patient each).")] = 1,
    quiet: QuietOpt = False,
) -> None:
    """Segmentation agreement: Dice and HD95 (mm) per patient, phase and region, and their summary."""
    from hcc_exp.reporting.agreement import write_agreement

    out_dir = out if out is not None else cohort_b / "agreement"
    paths = write_agreement(cohort_a, cohort_b, out_dir, workers=workers, progress=not quiet)
    _done("Agreement written:", ", ".join(str(p) for p in paths.values()))


# ----------------------------------------------------------------------------- model
@app.command()
def train(
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    run_dir: Annotated[Path | None, typer.Option(help="Run folder (default runs/<run id>).")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Train the multi-task model on the configured cohort and write a run folder."""
    from hcc_exp.reporting.console import render_train_result
    from hcc_exp.training.train import train as train_fn

    result = train_fn(_config(config, overrides), run_dir=run_dir, progress=not quiet)
    render_train_result(result, console)


@app.command()
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="Run folder written by `hcc-exp train`.")],
) -> None:
    """Evaluate a run: C-index with CI, MVI metrics, time-dependent ROC, calibration, DCA, KM, baselines."""
    from hcc_exp.evaluation.evaluate import evaluate_run
    from hcc_exp.reporting.console import render_evaluation

    metrics = evaluate_run(run_dir)
    render_evaluation(run_dir, metrics, console)


@app.command()
def cam(
    run_dir: Annotated[Path, typer.Argument(help="Run folder.")],
    patients: Annotated[list[str] | None, typer.Option("--patient", "-p", help="Patient id (repeatable).")] = None,
    max_patients: Annotated[int, typer.Option(help="Patients per split when none are named.")] = 4,
) -> None:
    """3D Grad-CAM per head and phase: overlays (PNG) and activation energy per region."""
    from hcc_exp.interpretability.cam import run_cams

    out = run_cams(run_dir, patient_ids=patients, max_patients=max_patients)
    _done("CAMs written to", out)


@app.command()
def predict(
    checkpoint: Annotated[Path, typer.Argument(help="best.ckpt of a run (its run folder holds the preprocessing).")],
    patient: Annotated[Path | None, typer.Argument(help="Patient folder (3 phases + masks).")] = None,
    cohort: Annotated[Path | None, typer.Option(help="Predict every patient of a cohort folder instead.")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default next to the input).")] = None,
) -> None:
    """Predict OS / RFS risk, risk group, 1- and 2-year survival and MVI probability for new patients."""
    from hcc_exp.inference.predict import predict_cohort, predict_patient
    from hcc_exp.interpretability.cam import write_patient_cams

    if (patient is None) == (cohort is None):
        raise typer.BadParameter("give either PATIENT or --cohort")
    if patient is not None:
        result = predict_patient(checkpoint, patient, out_dir=out, explain=write_patient_cams)
        console.print_json(data=result)
    else:
        path = predict_cohort(checkpoint, cohort, out_dir=out)
        _done("Predictions written to", path)


# ----------------------------------------------------------------------------- sweeps
@app.command()
def sweep(
    spec: Annotated[Path, typer.Argument(help="Sweep YAML (W&B sweep format plus backend, arms, seeds).")],
    workers: Annotated[int, typer.Option(help="Local worker processes on the same study.")] = 1,
    join: Annotated[str | None, typer.Option(help="Storage URL of a running study to add workers to.")] = None,
    overrides: SetOpt = None,
    seeds: Annotated[
        str | None, typer.Option(help="Replace the file's seeds, comma-separated (e.g. 0 for a quick run).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Replace the file's name: the study and runs/<name>.")] = None,
    trials_per_gpu: Annotated[int, typer.Option(help="Local workers per visible GPU (one GPU per worker).")] = 1,
    launcher: Annotated[
        str | None, typer.Option(help="local or slurm (default: the YAML's launcher.type, else local).")
    ] = None,
    array: Annotated[int | None, typer.Option(help="Slurm: array tasks, each a worker.")] = None,
    partition: Annotated[str | None, typer.Option(help="Slurm partition.")] = None,
    gpus_per_task: Annotated[int | None, typer.Option(help="Slurm: GPUs per task.")] = None,
    cpus_per_task: Annotated[int | None, typer.Option(help="Slurm: CPUs per task.")] = None,
    mem: Annotated[str | None, typer.Option(help="Slurm: memory per task's node, e.g. 16G.")] = None,
    time: Annotated[str | None, typer.Option(help="Slurm: time limit, minutes or [D-]HH:MM:SS.")] = None,
    slurm_set: Annotated[
        list[str] | None, typer.Option("--slurm-set", help="Any sbatch option as key=value (repeatable).")
    ] = None,
) -> None:
    """Run an Optuna (default) or W&B sweep; resumable, several workers share one study; or submit it to Slurm."""
    from hcc_exp.config import parse_set_options
    from hcc_exp.sweeps.runner import run_sweep, sweep_launcher
    from hcc_exp.sweeps.spec import parse_seed_list

    seed_list = parse_seed_list(seeds) if seeds is not None else None
    if sweep_launcher(spec, launcher) == "slurm":
        from hcc_exp.sweeps.launcher import parse_slurm_set
        from hcc_exp.sweeps.slurm import launch_sweep

        if join is not None:
            raise typer.BadParameter("--join adds local workers; Slurm tasks use the storage of the sweep YAML")
        settings = {"array": array, "partition": partition, "gpus_per_task": gpus_per_task,
                    "cpus_per_task": cpus_per_task, "mem": mem, "time": time}  # fmt: skip
        if slurm_set:
            try:
                settings["slurm_set"] = parse_slurm_set(slurm_set)
            except ValueError as exc:
                raise typer.BadParameter(str(exc)) from exc
        launched = launch_sweep(
            spec, settings=settings, overrides=parse_set_options(overrides), seeds=seed_list, name=name
        )
        console.print(launched.follow_hint(), markup=False, highlight=False)
        return
    summary = run_sweep(
        spec, workers=workers, join=join, overrides=parse_set_options(overrides),
        seeds=seed_list, name=name, trials_per_gpu=trials_per_gpu,
    )  # fmt: skip
    console.print(summary.to_rich_table() if hasattr(summary, "to_rich_table") else summary)


@app.command("sweep-status")
def sweep_status(
    sweep_dir: Annotated[Path, typer.Argument(help="Sweep folder (runs/<sweep name>) or its YAML.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Per arm and seed: waiting / running where / complete / failed with retries, value, duration; Slurm jobs."""
    from hcc_exp.sweeps.runner import sweep_status_report

    report = sweep_status_report(sweep_dir)
    if as_json:
        console.print_json(data=report.to_json())
    else:
        console.print(report.to_rich_table())


@app.command()
def table(
    sweep_dir: Annotated[Path, typer.Argument(help="Sweep folder (runs/<sweep name>).")],
    out: Annotated[Path | None, typer.Option(help="Output folder (default SWEEP_DIR/table).")] = None,
) -> None:
    """Ablation table: mean and 95% CI over seeds, paired tests and bootstrap vs the full model."""
    from hcc_exp.reporting.tables import build_ablation_table, render_table, write_ablation_table

    result = build_ablation_table(sweep_dir)
    paths = write_ablation_table(result, out if out is not None else sweep_dir / "table")
    render_table(result, console)
    _done("Tables written:", ", ".join(str(p) for p in paths.values()))


@app.command()
def report(
    sweep_dir: Annotated[Path, typer.Argument(help="Sweep folder (runs/<sweep name>) or run folder (TRIPOD+AI report).")],
    agreement: Annotated[
        Path | None, typer.Option(help="Run folder only: folder written by `hcc-exp agreement` (item 9c).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Run folder only: output folder (default RUN_DIR/tripod).")] = None,
    wandb: Annotated[
        bool, typer.Option("--wandb", help="Sweep only: log the ablation tables (arm, seed columns) to W&B (offline by default).")
    ] = False,
) -> None:
    """Self-contained HTML and Markdown report of a sweep, or the TRIPOD+AI report of a run folder."""
    from hcc_exp.reporting.tripod import is_run_folder, write_tripod_report

    if is_run_folder(sweep_dir):
        paths = write_tripod_report(sweep_dir, out, agreement_dir=agreement)
        _done("TRIPOD+AI report written:", ", ".join(str(p) for p in paths.values()))
        return
    from hcc_exp.config import TrackingConfig
    from hcc_exp.reporting.report import write_report

    paths = write_report(sweep_dir, wandb_tracking=TrackingConfig() if wandb else None)
    _done("Report written:", ", ".join(str(p) for p in paths.values()))


@app.command()
def sync(sweep_dir: Annotated[Path, typer.Argument(help="Sweep or run folder with offline W&B runs.")]) -> None:
    """Upload offline W&B runs (`wandb sync`) once you are online and logged in."""
    from hcc_exp.tracking import sync_offline_runs

    synced = sync_offline_runs(sweep_dir)
    _done(f"Synced {len(synced)} run(s).")


@app.command()
def dashboard(sweep_dir: Annotated[Path, typer.Argument(help="Sweep folder.")]) -> None:
    """Open optuna-dashboard on the sweep's storage."""
    from hcc_exp.sweeps.runner import open_dashboard

    open_dashboard(sweep_dir)


@app.command()
def demo(
    config: ConfigOpt = None,
) -> None:
    """The main job on the embedded default: synth -> check -> preprocess -> train -> evaluate -> table."""
    from hcc_exp.pipeline import run_demo

    run_demo(config, console)


def _fail(message: str, status: int = 2) -> None:
    err_console.print(Text.assemble(("error:", "bold red"), " ", message))
    sys.exit(status)


def _os_error_message(exc: OSError) -> str:
    """``cannot write runs/x/best.ckpt: No space left on device`` style: what, where, why."""
    reason = exc.strerror or str(exc)
    where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    return f"{reason}: {where}" if where else reason


def main() -> None:
    """Console-script entry point: HccExpError or OSError -> one message and exit status 2."""
    try:
        app()
    except HccExpError as exc:  # CohortValidationError included: its text lists the problems
        _fail(str(exc))
    except OSError as exc:  # the environment: a folder that is a file, no permission, a full disk
        _fail(_os_error_message(exc))
    except KeyboardInterrupt:
        _fail("interrupted", status=130)


if __name__ == "__main__":
    main()
