"""The TRIPOD+AI report of a trained, evaluated run: every item present, filled or open; figures embedded."""

from __future__ import annotations

import re
import shutil

import pandas as pd
import pytest

from hcc_exp.reporting.tripod import ITEMS, OPEN, is_run_folder, read_run, tripod_blocks, write_tripod_report


@pytest.fixture(scope="module")
def evaluated_run(trained_run, tmp_path_factory):
    from hcc_exp.config import EvaluationConfig
    from hcc_exp.evaluation.evaluate import evaluate_predictions
    from hcc_exp.evaluation.extended import write_extended
    from hcc_exp.reporting.agreement import write_agreement
    from tests.evaluation.synthetic import synthetic_predictions_and_labels

    root = tmp_path_factory.mktemp("tripod")
    run = root / "tiny"
    shutil.copytree(trained_run.run_dir, run)
    # The evaluation folder of a 90-patient synthetic evaluation stands in for the tiny run's own
    # (12 patients are too few for every statistic); the report only reads the folder.
    predictions, labels, _ = synthetic_predictions_and_labels(n_per_split=30, seed=0)
    cfg = EvaluationConfig(bootstrap_resamples=50)
    evaluate_predictions(predictions, labels, cfg, run / "evaluation", dca_thresholds=(0.1, 0.5))
    write_extended(run / "evaluation", predictions, labels, None, None, cfg)
    agreement = root / "agreement"
    write_agreement(trained_run.cohort_dir, trained_run.cohort_dir, agreement)
    return run, agreement, trained_run.cohort_dir


def test_checklist_is_the_tripod_ai_list():
    numbers = [i.number for i in ITEMS]
    assert len(numbers) == len(set(numbers))
    assert sorted({re.match(r"\d+", n).group() for n in numbers}, key=int) == [str(k) for k in range(1, 28)]
    assert numbers[:6] == ["1", "2", "3a", "3b", "3c", "4"] and numbers[-3:] == ["27a", "27b", "27c"]


def test_report_has_every_item_filled_or_open(evaluated_run, tmp_path):
    run, agreement, cohort = evaluated_run
    paths = write_tripod_report(run, tmp_path / "out", agreement_dir=agreement)
    md = paths["markdown"].read_text()
    for item in ITEMS:
        assert f"### {item.number}. {item.topic}" in md, item.number
    sections = re.split(r"\n### ", md)
    assert all(OPEN in s or len(s.split("\n", 1)[1].strip()) > 0 for s in sections[1:])
    assert md.index("## Open items") > md.index("### 27c.")
    for item in ("17 Ethical approval", "19 PPI", "1 Title"):
        assert f"- {item}" in md
    # filled from the run's records
    assert "Dice" in md and "arterial" in md  # 9c annotation agreement
    assert "commit" in md and "Model parameters:" in md
    assert "Training" in md and "OS events" in md
    html = paths["html"].read_text()
    assert html.count("data:image/png;base64,") >= 4
    # counts and summaries only: no patient identifier reaches the report
    ids = pd.read_csv(cohort / "cohort.csv")["patient_id"]
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)  # base64 may spell anything
    assert not any(pid in md or pid in text for pid in ids)


def test_parameter_count_matches_the_network(evaluated_run):
    from hcc_exp.inference.checkpoint import load_trained_network

    run, _, _ = evaluated_run
    network = load_trained_network(run / "checkpoints" / "best.ckpt").network
    assert read_run(run).n_parameters == sum(p.numel() for p in network.parameters())


def test_unevaluated_run_leaves_performance_open(trained_run, tmp_path):
    run = tmp_path / "raw"
    shutil.copytree(trained_run.run_dir, run, ignore=shutil.ignore_patterns("evaluation"))
    _, open_items, _ = tripod_blocks(read_run(run), tmp_path / "out")
    assert "23a" in [i.number for i in open_items]


def test_cli_detects_run_and_sweep_folders(evaluated_run, tmp_path):
    from typer.testing import CliRunner

    from hcc_exp.cli import app

    run, _, _ = evaluated_run
    assert is_run_folder(run)
    result = CliRunner().invoke(app, ["report", str(run), "--out", str(tmp_path / "t")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "t" / "report.html").is_file()
    assert not is_run_folder(tmp_path)
