"""The demo pipeline behind ``make demo``: the embedded cohort through every stage.

The stages themselves are declared in ``dvc.yaml`` (so ``dvc repro`` caches them and a
second run does nothing); this module only makes sure the raw cohort exists (it is
regenerated bit for bit from its seed and matches ``data.dvc``), runs ``dvc repro``, then
the demo ablation sweep and its table (not DVC stages: a sweep folder holds wall times, W&B
logs and journal timestamps, which must not reach ``dvc.lock``; re-running a complete sweep
does nothing), and prints where the results are.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.text import Text

from hcc_exp.config import load_config
from hcc_exp.errors import HccExpError
from hcc_exp.paths import DEMO_RUN_DIR, DEMO_SWEEP_DIR, DEMO_TABLE_DIR
from hcc_exp.run_folder import RunFolder


def ensure_raw_cohort(cohort_dir: Path, patients: int, seed: int, console: Console) -> None:
    """Write the synthetic cohort to ``cohort_dir`` unless it is already there."""
    if (cohort_dir / "cohort.csv").is_file():
        console.print(f"Raw cohort present: {cohort_dir}")
        return
    from hcc_exp.data.synthetic import write_synthetic_cohort
    from hcc_exp.evaluation.oracle import cohort_oracle_metrics
    from hcc_exp.reporting.console import render_synthetic_summary

    console.rule("synthetic cohort")
    summary = write_synthetic_cohort(cohort_dir, patients=patients, seed=seed, progress=True)
    render_synthetic_summary(summary, console, oracle=cohort_oracle_metrics(cohort_dir))


def dvc_executable() -> str:
    """The ``dvc`` next to this interpreter (the project's venv), else the one on PATH."""
    local = Path(sys.executable).with_name("dvc")
    if local.is_file():
        return str(local)
    found = shutil.which("dvc")
    if found is None:
        raise HccExpError("dvc is not installed: run `make setup` (pip install -e .)")
    return found


DEMO_SWEEP_SPEC = Path("sweeps/demo.yaml")
"""The demo ablation (three arms, one seed, 3 epochs); it writes :data:`~hcc_exp.paths.DEMO_SWEEP_DIR`."""


def _run(command: list[str], env: dict[str, str]) -> None:
    completed = subprocess.run(command, check=False, env=env)
    if completed.returncode != 0:
        name = " ".join([Path(command[0]).name, *command[1:2]])
        raise HccExpError(f"`{name}` failed with exit status {completed.returncode}")


def run_demo(config_path: Path | None, console: Console) -> None:
    cfg = load_config(config_path)
    ensure_raw_cohort(Path(cfg.data.cohort_dir), cfg.synth.patients, cfg.synth.seed, console)
    console.rule("dvc repro")
    # The stages call `hcc-exp`: make the one beside this interpreter (the venv's) the first on PATH.
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    _run([dvc_executable(), "repro"], env)
    hcc_exp = str(Path(sys.executable).with_name("hcc-exp"))
    if not Path(hcc_exp).is_file():
        hcc_exp = shutil.which("hcc-exp") or hcc_exp
    console.rule("demo ablation sweep")
    _run([hcc_exp, "sweep", str(DEMO_SWEEP_SPEC)], env)
    _run([hcc_exp, "table", str(DEMO_SWEEP_DIR), "--out", str(DEMO_TABLE_DIR)], env)

    from hcc_exp.reporting.console import render_evaluation

    evaluation = RunFolder(DEMO_RUN_DIR).evaluation_metrics_json
    if evaluation.is_file():
        render_evaluation(DEMO_RUN_DIR, json.loads(evaluation.read_text(encoding="utf-8")), console)
    table = DEMO_TABLE_DIR / "ablation.md"
    if table.is_file():
        console.print(f"Demo ablation table (one seed, 3 epochs per arm): {table}")
    console.print(
        Text.assemble(
            ("Done.", "green"),
            f" Run folder: {DEMO_RUN_DIR}  |  evaluation: {RunFolder(DEMO_RUN_DIR).evaluation_dir}  |  demo sweep: {DEMO_SWEEP_DIR}",
        )
    )
