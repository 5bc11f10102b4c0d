"""Datasets and the LightningDataModule over the preprocessed cache.

Splits follow the paper: train = ``train`` (Institution I), validation = ``internal``
(Institutions II-V), test = ``external`` (Institution VI). Only the training set is
augmented: each training patient appears ``augment_copies`` times per epoch, each copy
with its own random rotation and time jitter.

The loaders only read cached crops. Augmentation runs per batch on the model's device
(:meth:`HccDataModule.on_after_batch_transfer`, Lightning's hook between the transfer and
the training step): one ``grid_sample`` for the whole batch (:func:`~hcc_exp.data.augment.augment_batch`).
Its randomness is a pure function of (seed, epoch, dataset item), the same numbers the
per-sample path of commit fd7cd16 drew in the loader, so runs are reproducible with or
without worker processes and on any device. Validation and test batches are never augmented.

The training order is a permutation per epoch drawn from ``(seed, epoch)``
(:class:`EpochShuffleSampler`): reproducible, and different every epoch (the loader of commit
fd7cd16 re-seeded its shuffle generator every epoch and so repeated one order).

On a GPU the loaders pin memory and keep their worker processes between epochs.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from hcc_exp.config import PHASES, AugmentConfig, ExperimentConfig
from hcc_exp.data.augment import augment_batch, jitter_times, random_rotation, sample_seed
from hcc_exp.data.cache import PreprocessedCohort

PRELOAD_LIMIT_BYTES = 2 * 1024**3
"""Caches smaller than this are held in memory; larger ones are memory-mapped."""


@dataclass(frozen=True)
class SurvivalLabels:
    """Outcome arrays of a set of patients, aligned with their ids.

    Attributes:
        os_time_days, rfs_time_days: (N,) float days from surgery.
        os_event, rfs_event: (N,) bool event indicators.
        mvi: (N,) int64 in {0, 1}.
    """

    os_time_days: np.ndarray
    os_event: np.ndarray
    rfs_time_days: np.ndarray
    rfs_event: np.ndarray
    mvi: np.ndarray


def labels_for(cohort: PreprocessedCohort, patient_ids: list[str]) -> SurvivalLabels:
    frame = cohort.labels.set_index("patient_id").loc[patient_ids]
    return SurvivalLabels(
        os_time_days=frame["os_time_days"].to_numpy(dtype=np.float64),
        os_event=frame["os_event"].to_numpy(dtype=np.int64).astype(bool),
        rfs_time_days=frame["rfs_time_days"].to_numpy(dtype=np.float64),
        rfs_event=frame["rfs_event"].to_numpy(dtype=np.int64).astype(bool),
        mvi=frame["mvi"].to_numpy(dtype=np.int64),
    )


class CachedPatientDataset(Dataset):
    """Samples of one split from the preprocessed cache.

    Each item is a dict:
        image: (P, D, H, W) float32 in [0, 1], the selected phases in PHASES order.
        masks: (P, R, D, H, W) uint8, R = (liver, margin, tumour).
        os_time, rfs_time: float32 days (jittered when augmenting); os_event, rfs_event: bool;
        mvi: int64; index: int64 position of the patient in ``patient_ids``; item: int64 the
        dataset item (``index + copy * len(patient_ids)``), which seeds its augmentation.

    ``augment`` applies rotation and jitter here, per sample, on the CPU: the path of commit
    fd7cd16, kept for the ``step`` benchmark and the equality tests. The data module leaves it
    None and augments whole batches on the device instead (same numbers).
    """

    def __init__(
        self,
        cohort: PreprocessedCohort,
        patient_ids: list[str],
        phases: tuple[str, ...],
        *,
        augment: AugmentConfig | None = None,
        copies: int = 1,
        seed: int = 0,
    ) -> None:
        self.patient_ids = list(patient_ids)
        self.labels = labels_for(cohort, self.patient_ids)
        cached_phases = cohort.phases
        self.phase_index = [cached_phases.index(p) for p in phases if p in cached_phases]
        if len(self.phase_index) != len(phases):
            missing = [p for p in phases if p not in cached_phases]
            raise ValueError(f"phases {missing} are not in the cache {cohort.root} (has {list(cached_phases)})")
        self.augment = augment
        self.copies = int(copies)
        self.seed = int(seed)
        self.epoch = 0
        estimated = len(self.patient_ids) * 2 * int(np.prod(cohort.shape_zyx)) * len(PHASES) * 4
        mmap = estimated > PRELOAD_LIMIT_BYTES
        self._arrays = [cohort.load(pid, mmap=mmap) for pid in self.patient_ids]

    def __len__(self) -> int:
        return len(self.patient_ids) * self.copies

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        index = item % len(self.patient_ids)
        image_np, masks_np = self._arrays[index]
        image = torch.from_numpy(np.ascontiguousarray(image_np[self.phase_index], dtype=np.float32))
        masks = torch.from_numpy(np.ascontiguousarray(masks_np[self.phase_index]))
        os_time = float(self.labels.os_time_days[index])
        rfs_time = float(self.labels.rfs_time_days[index])
        if self.augment is not None:
            seed = sample_seed(self.seed, self.epoch, item)
            torch_gen = torch.Generator().manual_seed(seed)
            if self.augment.rotation and self.augment.rotation_range_deg > 0:
                image, masks = random_rotation(image, masks, torch_gen, self.augment.rotation_range_deg)
            if self.augment.time_jitter_days > 0:
                os_time, rfs_time = jitter_times(
                    os_time, rfs_time, np.random.default_rng(seed), self.augment.time_jitter_days
                )
        return {
            "image": image,
            "masks": masks,
            "os_time": torch.tensor(os_time, dtype=torch.float32),
            "os_event": torch.tensor(bool(self.labels.os_event[index])),
            "rfs_time": torch.tensor(rfs_time, dtype=torch.float32),
            "rfs_event": torch.tensor(bool(self.labels.rfs_event[index])),
            "mvi": torch.tensor(int(self.labels.mvi[index]), dtype=torch.int64),
            "index": torch.tensor(index, dtype=torch.int64),
            "item": torch.tensor(item, dtype=torch.int64),
        }


class EpochShuffleSampler(Sampler[int]):
    """A random order of ``range(n)`` per epoch, drawn from ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` at the start of every training epoch (as for
    ``DistributedSampler``), so the order does not depend on how often the loader is rebuilt.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n = int(n)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        generator = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0]))
        return iter(torch.randperm(self.n, generator=generator).tolist())


def uses_gpu(accelerator: str) -> bool:
    """Whether ``trainer.accelerator`` trains on a GPU here (``gpu``, or ``auto`` with CUDA available)."""
    return accelerator == "gpu" or (accelerator == "auto" and torch.cuda.is_available())


class HccDataModule(pl.LightningDataModule):
    """Train / internal / external loaders over one preprocessed cache; augments training batches on the device."""

    def __init__(self, cohort: PreprocessedCohort, config: ExperimentConfig) -> None:
        super().__init__()
        self.cohort = cohort
        self.config = config
        self.datasets: dict[str, CachedPatientDataset] = {}
        self._loaders: dict[str, DataLoader] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        cfg = self.config
        for split in ("train", "internal", "external"):
            ids = self.cohort.patient_ids(split)
            self.datasets[split] = CachedPatientDataset(self.cohort, ids, cfg.phases, seed=cfg.seed)
        self.datasets["train_augmented"] = CachedPatientDataset(
            self.cohort, self.cohort.patient_ids("train"), cfg.phases, copies=cfg.augment_copies, seed=cfg.seed
        )

    def _loader(self, name: str, *, shuffle: bool, drop_last: bool = False) -> DataLoader:
        # One loader per split, reused across epochs: with persistent workers (GPU) they survive.
        if name in self._loaders:
            return self._loaders[name]
        dataset = self.datasets[name]
        trainer_cfg = self.config.trainer
        gpu = uses_gpu(trainer_cfg.accelerator)
        loader = DataLoader(
            dataset,
            batch_size=trainer_cfg.batch_size,
            sampler=EpochShuffleSampler(len(dataset), self.config.seed) if shuffle else None,
            drop_last=drop_last,
            num_workers=trainer_cfg.num_workers,
            pin_memory=gpu,
            persistent_workers=gpu and trainer_cfg.num_workers > 0,
        )
        self._loaders[name] = loader
        return loader

    def train_dataloader(self) -> DataLoader:
        dataset = self.datasets["train_augmented"]
        # BatchNorm and the Cox partial likelihood both need more than one sample per batch.
        loader = self._loader(
            "train_augmented", shuffle=True, drop_last=len(dataset) > self.config.trainer.batch_size
        )
        if self.trainer is not None:
            loader.sampler.set_epoch(self.trainer.current_epoch)
        return loader

    def val_dataloader(self) -> DataLoader:
        return self._loader("internal", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("external", shuffle=False)

    def split_loader(self, split: str) -> DataLoader:
        """Unaugmented loader of one split, in patient order (for predictions)."""
        return self._loader(split, shuffle=False)

    def on_after_batch_transfer(self, batch: dict[str, torch.Tensor], dataloader_idx: int) -> dict[str, torch.Tensor]:
        """Augment training batches where they now live (the model's device); others pass unchanged."""
        trainer = self.trainer
        if trainer is None or not trainer.training:
            return batch
        return augment_batch(batch, self.config.augment, seed=self.config.seed, epoch=trainer.current_epoch)
