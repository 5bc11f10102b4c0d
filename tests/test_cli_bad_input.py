"""Every CLI command on bad input or an ordinary environment error: exit 2, a message naming the
culprit (patient, file, column, key), and never a Python traceback.

Each case runs the real console entry point (``hcc_exp.cli.main``) in a subprocess, as a user
would, so the exit status and stderr are what the user sees. The expected names are the ones the
case planted (a path, a patient id, a column), never text copied from the code under test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from tests.factories import write_tiny_cohort


@dataclass(frozen=True)
class Outcome:
    returncode: int
    output: str  # stdout + stderr


def run_cli(*args: str, cwd: Path) -> Outcome:
    env = dict(os.environ, COLUMNS="200", WANDB_MODE="offline", WANDB_SILENT="true")
    done = subprocess.run(
        [sys.executable, "-c", "from hcc_exp.cli import main; main()", *args],
        capture_output=True, text=True, check=False, cwd=cwd, env=env, timeout=300,
    )  # fmt: skip
    return Outcome(done.returncode, done.stdout + done.stderr)


def _flatten(text: str) -> str:
    """Rich wraps long messages: compare without line breaks."""
    return " ".join(text.split())


# Each case: (id, set-up in tmp_path returning the argv and the names the message must contain).
Case = Callable[[Path], tuple[list[str], list[str]]]


def _cohort(tmp: Path) -> Path:
    return write_tiny_cohort(tmp / "cohort", n_patients=6)


def check_missing_folder(tmp: Path):
    return ["check", str(tmp / "no-such-cohort"), "--quiet"], ["no-such-cohort"]


def check_markup_in_patient_id(tmp: Path):
    # A patient id with Rich's closing-tag syntax; the table is read as data, never as markup.
    cohort = _cohort(tmp)
    table = pd.read_csv(cohort / "cohort.csv", dtype=str)
    table.loc[0, "patient_id"] = "P[/b]7"
    table.to_csv(cohort / "cohort.csv", index=False)
    return ["check", str(cohort), "--quiet"], ["P[/b]7"]


def check_missing_column(tmp: Path):
    cohort = _cohort(tmp)
    table = pd.read_csv(cohort / "cohort.csv", dtype=str).drop(columns=["rfs_event"])
    table.to_csv(cohort / "cohort.csv", index=False)
    return ["check", str(cohort), "--quiet"], ["rfs_event"]


def preprocess_out_is_a_file(tmp: Path):
    cohort = _cohort(tmp)
    out = tmp / "cache-is-a-file"
    out.write_text("not a folder\n")
    return ["preprocess", str(cohort), str(out), "--quiet"], ["cache-is-a-file"]


def preprocess_bad_setting(tmp: Path):
    cohort = _cohort(tmp)
    return ["preprocess", str(cohort), str(tmp / "cache"), "--quiet", "--set", "preprocess.nonsense=1"], [
        "preprocess.nonsense"
    ]


def train_missing_cohort(tmp: Path):
    missing = tmp / "no-cohort-here"
    return ["train", "--quiet", "--set", f"data.cohort_dir={missing}", "--set", "tracking.wandb=false"], [
        "no-cohort-here"
    ]


def train_unknown_key(tmp: Path):
    return ["train", "--quiet", "--set", "optim.learning_rate=1e-3"], ["optim.learning_rate"]


def evaluate_missing_run(tmp: Path):
    return ["evaluate", str(tmp / "runs" / "absent-run")], ["absent-run"]


def evaluate_empty_run_folder(tmp: Path):
    run = tmp / "runs" / "empty-run"
    run.mkdir(parents=True)
    return ["evaluate", str(run)], ["empty-run"]


def cam_missing_run(tmp: Path):
    return ["cam", str(tmp / "absent-cam-run")], ["absent-cam-run"]


def predict_missing_checkpoint(tmp: Path):
    cohort = _cohort(tmp)
    return ["predict", str(tmp / "missing.ckpt"), "--cohort", str(cohort)], ["missing.ckpt"]


def predict_garbage_checkpoint(tmp: Path):
    cohort = _cohort(tmp)
    ckpt = tmp / "garbage.ckpt"
    ckpt.write_bytes(b"this is not a checkpoint")
    return ["predict", str(ckpt), "--cohort", str(cohort)], ["garbage.ckpt"]


def sweep_missing_file(tmp: Path):
    return ["sweep", str(tmp / "absent-sweep.yaml")], ["absent-sweep.yaml"]


def sweep_unknown_parameter(tmp: Path):
    spec = tmp / "bad-sweep.yaml"
    spec.write_text(
        "name: bad\nmethod: grid\nmetric: {name: internal/os/c_index, goal: maximize}\n"
        "parameters:\n  optim.no_such_key: {values: [1, 2]}\n"
    )
    return ["sweep", str(spec)], ["optim.no_such_key"]


def table_missing_sweep(tmp: Path):
    return ["table", str(tmp / "absent-sweep-dir")], ["absent-sweep-dir"]


def report_missing_sweep(tmp: Path):
    return ["report", str(tmp / "absent-report-dir")], ["absent-report-dir"]


def import_missing_mapping(tmp: Path):
    src = tmp / "raw"
    src.mkdir()
    return ["import", str(src), str(tmp / "dst"), "--mapping", str(tmp / "absent-mapping.yaml")], [
        "absent-mapping.yaml"
    ]


def import_broken_mapping(tmp: Path):
    src = tmp / "raw"
    src.mkdir()
    mapping = tmp / "broken-mapping.yaml"
    mapping.write_text("clinical: [unclosed\n")
    return ["import", str(src), str(tmp / "dst"), "--mapping", str(mapping)], ["broken-mapping.yaml"]


def synth_out_is_a_file(tmp: Path):
    out = tmp / "synth-target-is-a-file"
    out.write_text("x\n")
    return ["synth", str(out), "--patients", "6", "--quiet"], ["synth-target-is-a-file"]


def sync_missing_folder(tmp: Path):
    return ["sync", str(tmp / "absent-sync-dir")], ["absent-sync-dir"]


CASES: list[Case] = [
    check_missing_folder,
    check_markup_in_patient_id,
    check_missing_column,
    preprocess_out_is_a_file,
    preprocess_bad_setting,
    train_missing_cohort,
    train_unknown_key,
    evaluate_missing_run,
    evaluate_empty_run_folder,
    cam_missing_run,
    predict_missing_checkpoint,
    predict_garbage_checkpoint,
    sweep_missing_file,
    sweep_unknown_parameter,
    table_missing_sweep,
    report_missing_sweep,
    import_missing_mapping,
    import_broken_mapping,
    synth_out_is_a_file,
    sync_missing_folder,
]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_bad_input_exits_2_with_a_named_message(case: Case, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    argv, names = case(tmp_path)
    outcome = run_cli(*argv, cwd=work)
    text = _flatten(outcome.output)
    assert "Traceback" not in outcome.output, outcome.output
    assert outcome.returncode == 2, outcome.output
    assert "error:" in text, outcome.output
    for name in names:
        assert name in text, f"{name!r} not in: {outcome.output}"
    # Nothing was left behind in the working folder by a refused command.
    assert sorted(p.name for p in work.iterdir()) == [], sorted(work.iterdir())
