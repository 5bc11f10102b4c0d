"""Optuna plots of a sweep study with a planted arm effect; the per-run table."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
import yaml
from optuna.storages.journal import JournalFileBackend, JournalStorage

from hcc_exp.reporting import document as doc
from hcc_exp.reporting.sweep_plots import (
    open_sweep_study,
    param_importances,
    sweep_plot_blocks,
    write_sweep_plots,
)

ARM_EFFECT = {"full": 0.75, "no_portal": 0.62, "roi_none": 0.55}


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep") / "planted"
    root.mkdir()
    (root / "sweep.yaml").write_text(yaml.safe_dump({"name": "planted", "backend": "optuna", "storage": None}))
    storage = JournalStorage(JournalFileBackend(str(root / "optuna.journal")))
    study = optuna.create_study(study_name="planted", storage=storage, direction="maximize")
    rng = np.random.default_rng(0)
    for arm in ARM_EFFECT:
        for seed in range(4):
            study.enqueue_trial({"arm": arm, "seed": seed})
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial: optuna.Trial) -> float:
        trial.suggest_categorical("seed", [0, 1, 2, 3])  # the seed only adds noise
        return ARM_EFFECT[trial.suggest_categorical("arm", list(ARM_EFFECT))] + float(rng.normal(0, 0.01))

    study.optimize(objective, n_trials=12)
    return root


def test_study_is_found_and_plots_are_png(sweep_dir, tmp_path):
    study = open_sweep_study(sweep_dir)
    assert not isinstance(study, str) and len(study.trials) == 12
    plots = write_sweep_plots(study, tmp_path)
    for name in ("importance", "history", "parallel"):
        assert plots[name].read_bytes()[:4] == b"\x89PNG", name


def test_arm_importance_dominates_and_matches_optuna(sweep_dir):
    study = open_sweep_study(sweep_dir)
    ours = param_importances(study)
    reference = optuna.importance.get_param_importances(study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    assert ours == pytest.approx(reference)
    assert ours["arm"] > 0.8 and ours["arm"] > ours["seed"]


def test_blocks_and_reasons(sweep_dir, tmp_path):
    blocks = sweep_plot_blocks(sweep_dir, tmp_path)
    assert sum(isinstance(b, doc.Image) for b in blocks) == 3
    assert any(isinstance(b, doc.Table) and b.rows[0][0] == "arm" for b in blocks)
    empty = tmp_path / "empty"
    empty.mkdir()
    (reason,) = [b for b in sweep_plot_blocks(empty, tmp_path) if isinstance(b, doc.Paragraph)]
    assert "No Optuna plots" in reason.text


def test_per_seed_table_has_arm_and_seed(tmp_path):
    from hcc_exp.reporting.sweep_plots import per_seed_table
    from hcc_exp.reporting.tables import build_ablation_table
    from tests.reporting.fake_sweep import write_fake_sweep

    sweep = write_fake_sweep(tmp_path / "ablation-demo")
    table = build_ablation_table(sweep.root, n_bootstrap=50, seed=0)
    frame = per_seed_table(table)
    assert list(frame.columns[:2]) == ["arm", "seed"]
    assert len(frame) == len(table.sweep.runs)
    run = table.sweep.runs[0]
    assert frame.loc[0, "internal/os/c_index"] == pytest.approx(run.metrics["internal/os/c_index"])
