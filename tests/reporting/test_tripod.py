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


# The published checklist (Collins et al., BMJ 2024;385:e078378, Table 1), typed in from it: every
# item id in order with its section and applicability (D development, E evaluation, D;E both).
PUBLISHED_CHECKLIST = (
    ("Title", [("1", "D;E")]),
    ("Abstract", [("2", "D;E")]),
    ("Introduction", [("3a", "D;E"), ("3b", "D;E"), ("3c", "D;E"), ("4", "D;E")]),
    ("Methods", [
        ("5a", "D;E"), ("5b", "D;E"), ("6a", "D;E"), ("6b", "D;E"), ("6c", "D;E"), ("7", "D;E"),
        ("8a", "D;E"), ("8b", "D;E"), ("8c", "D;E"), ("9a", "D"), ("9b", "D;E"), ("9c", "D;E"),
        ("10", "D;E"), ("11", "D;E"), ("12a", "D"), ("12b", "D"), ("12c", "D"), ("12d", "D;E"),
        ("12e", "D;E"), ("12f", "E"), ("12g", "E"), ("13", "D;E"), ("14", "D;E"), ("15", "D"),
        ("16", "D;E"), ("17", "D;E"),
    ]),
    ("Open science", [("18a", "D;E"), ("18b", "D;E"), ("18c", "D;E"), ("18d", "D;E"), ("18e", "D;E"), ("18f", "D;E")]),
    ("Patient and public involvement", [("19", "D;E")]),
    ("Results", [
        ("20a", "D;E"), ("20b", "D;E"), ("20c", "E"), ("21", "D;E"), ("22", "D"), ("23a", "D;E"), ("23b", "D;E"),
        ("24", "E"),
    ]),
    ("Discussion", [("25", "D;E"), ("26", "D;E"), ("27a", "D"), ("27b", "D"), ("27c", "D;E")]),
)  # fmt: skip
PUBLISHED_TOPICS = {
    "3a": "Background", "5a": "Data", "6a": "Participants", "7": "Data preparation", "8a": "Outcome", "9a": "Predictors",
    "10": "Sample size", "11": "Missing data", "12a": "Analytical methods", "13": "Class imbalance", "14": "Fairness",
    "15": "Model output", "16": "Training versus evaluation", "17": "Ethical approval", "18a": "Funding",
    "18b": "Conflicts of interest", "18c": "Protocol", "18d": "Registration", "18e": "Data sharing", "18f": "Code sharing",
    "19": "Patient and public involvement", "20a": "Participants", "21": "Model development", "22": "Model specification",
    "23a": "Model performance", "24": "Model updating", "25": "Interpretation", "26": "Limitations",
    "27a": "Usability of the model in the context of current care",
}  # fmt: skip


def test_checklist_is_the_published_tripod_ai_list():
    expected = [(section, number, applies) for section, items in PUBLISHED_CHECKLIST for number, applies in items]
    assert len(expected) == 52  # the statement's 52 checklist items (27 main items)
    assert [(i.section, i.number, i.applies) for i in ITEMS] == expected
    topics = {i.number: i.topic for i in ITEMS}
    assert {n: topics[n] for n in PUBLISHED_TOPICS} == PUBLISHED_TOPICS
    assert all(i.requirement.strip() for i in ITEMS)


def test_report_has_every_item_filled_or_open(evaluated_run, tmp_path):
    run, agreement, cohort = evaluated_run
    paths = write_tripod_report(run, tmp_path / "out", agreement_dir=agreement)
    md = paths["markdown"].read_text()
    for item in ITEMS:
        assert f"### {item.number}. {item.topic}" in md, item.number
    sections = re.split(r"\n### ", md)
    assert all(OPEN in s or len(s.split("\n", 1)[1].strip()) > 0 for s in sections[1:])
    assert md.index("## Open items") > md.index("### 27c.")
    for item in ("17 Ethical approval", "19 Patient and public involvement", "1 Title"):
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
