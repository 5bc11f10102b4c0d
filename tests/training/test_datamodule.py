"""The loaders only read cached crops; training batches are augmented on their device as the per-sample path did."""

from __future__ import annotations

import doctest
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hcc_exp.config import build_config
from hcc_exp.data import augment
from hcc_exp.data.datamodule import CachedPatientDataset, EpochShuffleSampler, HccDataModule, uses_gpu
from tests.conftest import tiny_run_overrides


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from hcc_exp.training.train import prepare_cohort
    from tests.factories import write_tiny_cohort

    root = tmp_path_factory.mktemp("datamodule")
    cohort_dir = write_tiny_cohort(root / "cohort", n_patients=9, shape_zyx=(16, 32, 32))
    config = build_config({}, {**tiny_run_overrides(root, cohort_dir), "augment_copies": 2,
                               "augment.rotation_range_deg": 30.0})
    cohort = prepare_cohort(config, progress=False)
    datamodule = HccDataModule(cohort, config)
    datamodule.setup()
    return config, cohort, datamodule


def test_augment_doctests() -> None:
    assert doctest.testmod(augment).failed == 0


def test_train_loader_reads_cached_crops_only(setup) -> None:
    config, cohort, datamodule = setup
    dataset = datamodule.datasets["train_augmented"]
    n_train = len(cohort.patient_ids("train"))
    assert len(dataset) == 2 * n_train and dataset.augment is None
    for batch in datamodule.train_dataloader():
        assert batch["image"].shape[0] == config.trainer.batch_size
        for i, item in enumerate(batch["item"].tolist()):
            index = item % n_train
            assert int(batch["index"][i]) == index
            image, masks = cohort.load(dataset.patient_ids[index])
            np.testing.assert_array_equal(batch["image"][i].numpy(), image.astype(np.float32))
            np.testing.assert_array_equal(batch["masks"][i].numpy(), masks)
            assert float(batch["os_time"][i]) == pytest.approx(dataset.labels.os_time_days[index])


def test_training_batches_are_augmented_as_the_per_sample_path(setup) -> None:
    config, cohort, datamodule = setup
    datamodule.trainer = SimpleNamespace(training=True, current_epoch=3)
    try:
        batch = next(iter(datamodule.train_dataloader()))
        out = datamodule.on_after_batch_transfer(batch, 0)
    finally:
        datamodule.trainer = None
    # the loader path of commit fd7cd16: each item rotated and jittered in __getitem__
    per_sample = CachedPatientDataset(
        cohort, cohort.patient_ids("train"), config.phases, augment=config.augment, copies=2, seed=config.seed
    )
    per_sample.set_epoch(3)
    changed = 0
    for i, item in enumerate(batch["item"].tolist()):
        expected = per_sample[item]
        torch.testing.assert_close(out["image"][i], expected["image"], rtol=0, atol=1e-6)
        assert torch.equal(out["masks"][i], expected["masks"])
        assert float(out["os_time"][i]) == float(expected["os_time"])
        assert float(out["rfs_time"][i]) == float(expected["rfs_time"])
        changed += not torch.equal(out["masks"][i], batch["masks"][i])
    assert changed > 0


def test_validation_batches_are_never_augmented(setup) -> None:
    _, _, datamodule = setup
    datamodule.trainer = SimpleNamespace(training=False, current_epoch=0)
    try:
        for loader in (datamodule.val_dataloader(), datamodule.test_dataloader(), datamodule.train_dataloader()):
            batch = next(iter(loader))
            assert datamodule.on_after_batch_transfer(batch, 0) is batch
    finally:
        datamodule.trainer = None


def test_training_order_is_one_permutation_per_epoch() -> None:
    sampler = EpochShuffleSampler(20, seed=4)
    first = list(sampler)
    assert sorted(first) == list(range(20)) and list(sampler) == first
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first and sorted(second) == list(range(20))
    assert list(EpochShuffleSampler(20, seed=5)) != first


def test_gpu_loader_settings(setup, monkeypatch) -> None:
    _, _, datamodule = setup
    assert not datamodule.train_dataloader().pin_memory  # accelerator cpu in the tiny overrides
    assert uses_gpu("gpu") and not uses_gpu("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert uses_gpu("auto")
