"""MultiTaskModule receives typed sections; checkpoints round-trip; LR schedule, monitor and bf16-mixed."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from hcc_exp.config import ExperimentConfig, build_config
from hcc_exp.errors import ConfigError, RunFolderError
from hcc_exp.training.module import MultiTaskModule, warmup_cosine_factor
from tests.conftest import tiny_run_overrides
from tests.models.test_multitask import make_batch


def test_from_config_passes_sections_and_records_the_config() -> None:
    config = ExperimentConfig(roi="tumour", phases=("portal",), loss={"weighting": "static"})
    module = MultiTaskModule.from_config(config)
    assert module.loss_config is config.loss and module.optim_config is config.optim
    assert module.hparams["config"] == config.model_dump(mode="json")
    assert list(module.inference_network.backbone.stem.branches) == ["tumour"]
    assert module.inference_network.backbone.n_phases == 1


def test_load_from_checkpoint_rebuilds_the_same_network(tmp_path) -> None:
    config = ExperimentConfig(model={"pooling": "global"})
    module = MultiTaskModule.from_config(config).eval()
    path = tmp_path / "best.ckpt"
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, path)
    loaded = MultiTaskModule.load_from_checkpoint(path)
    assert not loaded.training
    image, masks = make_batch(2, 3, 24)
    with torch.no_grad():
        torch.testing.assert_close(loaded(image, masks).os_risk, module(image, masks).os_risk)
    with pytest.raises(RunFolderError, match="does not exist"):
        MultiTaskModule.load_from_checkpoint(tmp_path / "missing.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(RunFolderError, match="not an hcc-exp checkpoint"):
        MultiTaskModule.load_from_checkpoint(tmp_path / "other.ckpt")
    torch.save({"hyper_parameters": {"config": {"roi": "everything"}}, "state_dict": {}}, tmp_path / "bad.ckpt")
    with pytest.raises(ConfigError, match="invalid"):
        MultiTaskModule.load_from_checkpoint(tmp_path / "bad.ckpt")


def test_warmup_cosine_factor_by_hand() -> None:
    # 10 steps, 2 of warm-up from 1 %, cosine to 10 %: t = (step - 2) / 8 after the warm-up.
    factors = [warmup_cosine_factor(s, 10, 2, 0.1) for s in range(10)]
    assert factors[0] == pytest.approx(0.01)
    assert factors[1] == pytest.approx(0.505)  # halfway: 0.01 + 0.99 / 2
    assert factors[2] == pytest.approx(1.0)
    assert factors[6] == pytest.approx(0.1 + 0.9 * 0.5)  # t = 1/2: cos = 0
    assert factors[4] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert warmup_cosine_factor(0, 10, 0, 0.1) == pytest.approx(1.0)


def test_bf16_training_with_schedule_and_c_index_monitor(tmp_path) -> None:
    """One short run: lr logged every step (warm-up up, cosine down), bf16-mixed on CPU, best by C-index."""
    from hcc_exp.training.train import train
    from tests.factories import write_tiny_cohort

    cohort = write_tiny_cohort(tmp_path / "cohort", n_patients=9, shape_zyx=(16, 32, 32))
    overrides = {
        **tiny_run_overrides(tmp_path, cohort),
        "trainer.max_epochs": 3,
        "trainer.precision": "bf16-mixed",
        "trainer.monitor": "val/os_c_index",
        "augment_copies": 3,
        "optim.schedule": "warmup_cosine",
        "optim.warmup_epochs": 1,
    }
    result = train(build_config({}, overrides), run_dir=tmp_path / "run", progress=False)
    log = pd.read_csv(result.run_dir / "logs" / "metrics.csv")
    lr = log["train/lr"].dropna().to_numpy()
    steps_per_epoch = len(lr) // 3
    assert len(lr) == 3 * steps_per_epoch and steps_per_epoch >= 2
    assert lr[0] == pytest.approx(1e-5, rel=1e-3)  # 1 % of the peak 1e-3
    assert lr[steps_per_epoch] == pytest.approx(1e-3, rel=1e-3)  # warm-up over, peak
    assert (lr[steps_per_epoch:][1:] < lr[steps_per_epoch:][:-1]).all()  # cosine: decreasing
    metrics = result.metrics
    assert "val/os_c_index" in metrics and math.isfinite(metrics["train/os/c_index"])  # tiny internal split: C may be n/e
    val = log.dropna(subset=["val/loss"])["val/os_c_index"].to_numpy()
    assert len(val) == 3
    if not all(math.isnan(v) for v in val):  # the first epoch with the best validation C-index
        assert result.best_epoch == int(pd.Series(val).idxmax())
