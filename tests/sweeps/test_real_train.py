"""A real 4-trial sweep end to end: hcc_exp.training.train in two worker processes, W&B offline."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest

from hcc_exp.sweeps.runner import run_sweep
from hcc_exp.tracking import find_offline_runs, read_offline_run
from tests.factories import write_tiny_cohort
from tests.sweeps.conftest import write_spec
from tests.tracking.conftest import wandb_offline_env  # noqa: F401 - fixture

pytestmark = pytest.mark.slow


def test_tiny_ablation_with_the_real_train(tmp_path: Path, wandb_offline_env: Path, monkeypatch) -> None:  # noqa: F811
    from hcc_exp.config import build_config
    from hcc_exp.training.train import prepare_cohort

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cohort = write_tiny_cohort(tmp_path / "cohort", n_patients=12, shape_zyx=(24, 40, 40))
    overrides = {
        "data.cohort_dir": str(cohort),
        "data.cache_dir": str(tmp_path / "cache"),
        "tracking.wandb": True,
        "tracking.wandb_mode": "offline",
        "preprocess.crop_size_vox": [24, 24, 24],
        "preprocess.spacing_mm": [2.0, 2.0, 2.0],
        "preprocess.workers": 1,
        "trainer.max_epochs": 1,
        "trainer.batch_size": 4,
        "trainer.accelerator": "cpu",
        "augment_copies": 1,
        "momentum.steps": 2,
    }
    # Build the preprocessed cache once, as `hcc-exp preprocess` (or dvc repro) would before a sweep.
    prepare_cohort(build_config({}, overrides), progress=False)
    spec = write_spec(
        tmp_path / "ablation.yaml",
        name="tiny-ablation",
        arms=[{"name": "full", "set": {}}, {"name": "no_rotation", "set": {"augment.rotation": False}}],
        seeds=[0, 1],
        overrides=overrides,
        heartbeat_interval=2,
        grace_period=60,
    )
    started = time.perf_counter()
    summary = run_sweep(spec, workers=2, runs_root=tmp_path / "runs", progress=False)
    print(f"real 4-trial sweep: {time.perf_counter() - started:.1f} s")

    assert summary.complete, [(t.number, t.state, t.error) for t in summary.trials]
    assert Counter((t.arm, t.seed) for t in summary.trials if t.state == "COMPLETE") == Counter(
        {("full", 0): 1, ("full", 1): 1, ("no_rotation", 0): 1, ("no_rotation", 1): 1}
    )
    sweep_dir = tmp_path / "runs" / "tiny-ablation"
    for trial in summary.trials:
        run_dir = sweep_dir / trial.run_dir
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert trial.value == pytest.approx(metrics["internal/os/c_index"])
        assert (run_dir / "checkpoints" / "best.ckpt").is_file() and (run_dir / "predictions.csv").is_file()
        assert "rotation: false" in (run_dir / "config.yaml").read_text() or trial.arm == "full"
    # Offline W&B runs of the sweep sit in <sweep>/wandb, grouped by the sweep name.
    runs = [read_offline_run(p) for p in find_offline_runs(sweep_dir / "wandb")]
    assert len(runs) == 4
    for run in runs:
        assert run.group == "tiny-ablation" and run.job_type == "sweep"
        arm = next(t.split(":", 1)[1] for t in run.tags if t.startswith("arm:"))
        assert run.config["augment.rotation"] is (arm == "full")
        assert 0.0 <= run.summary["internal/os/c_index"] <= 1.0
        assert any("val/loss" in row for row in run.history)
        assert [a["type"] for a in run.artifacts if a["type"] == "model"] == ["model"]
