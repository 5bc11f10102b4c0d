"""Benchmark 2: samples per second of the training loader vs samples per second the tiny model trains at.

* Loader: :class:`hcc_exp.data.datamodule.HccDataModule`'s training loader
  (:class:`~hcc_exp.data.datamodule.CachedPatientDataset`: ``augment_copies`` = 3 copies of
  every training patient, cached crops only, batches of ``trainer.batch_size``), iterated
  over one epoch.
* Model: batch augmentation on the model's device (:func:`hcc_exp.data.augment.augment_batch`:
  rotation of CT and masks, +-3 day time jitter), then
  :class:`hcc_exp.training.module.MultiTaskModule` ``training_step`` (tiny preset, momentum
  memory bank, DWA) + ``backward`` + AdamW step on the SAME batches, taken from the loader
  beforehand so that no loading is timed.

Both run on a synthetic cohort (``--patients``, default 64, seed 7) preprocessed with
``params.yaml`` (2 mm, 48^3). The ratio is loader samples/s over model samples/s: above 1
the loader keeps up, and the headroom shows how much slower it could get (e.g. larger
crops or more augmentation) before training waits for data.

    python benchmarks/bench_loader.py [--patients 64] [--batches 12] [--repeats 3]
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    WORK_DIR,
    Target,
    base_parser,
    interleaved,
    report_result,
    setup_process,
    summary,
    synthetic_cohort,
)

NAME = "loader"
TARGET = Target(5.0, "loader >= 5x the model's samples/s")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = base_parser(__doc__.splitlines()[0], repeats=3)
    parser.add_argument("--patients", type=int, default=64, help="synthetic cohort size (default 64; the demo cohort has 388)")
    parser.add_argument("--seed", type=int, default=7, help="synthetic cohort seed (default 7)")
    parser.add_argument("--batches", type=int, default=0, help="batches per timed pass (default 0 = one epoch)")
    parser.add_argument("--num-workers", type=int, default=None, help="loader workers (default: trainer.num_workers)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    setup_process(args.threads)

    from hcc_exp.config import load_config
    from hcc_exp.data.datamodule import HccDataModule
    from hcc_exp.data.preprocess import preprocess_cohort
    from hcc_exp.training.module import MultiTaskModule

    cohort_dir = synthetic_cohort(args.patients, args.seed)
    overrides: dict[str, Any] = {
        "data.cohort_dir": str(cohort_dir),
        "data.cache_dir": str(WORK_DIR / "cache"),
        "tracking.wandb": False,
        "trainer.accelerator": "cpu",
    }
    if args.num_workers is not None:
        overrides["trainer.num_workers"] = args.num_workers
    config = load_config("params.yaml", overrides)
    cache = preprocess_cohort(cohort_dir, config.data.cache_dir, config.preprocess, progress=False)
    datamodule = HccDataModule(cache, config)
    datamodule.setup("fit")
    dataset = datamodule.datasets["train_augmented"]
    full_epoch = len(datamodule.train_dataloader())
    n_batches = full_epoch if args.batches <= 0 else min(args.batches, full_epoch)

    epoch = {"index": 0}

    def load_batches() -> list[dict]:
        # A new epoch each pass: other rotations, same amount of work.
        dataset.set_epoch(epoch["index"])
        epoch["index"] += 1
        out = []
        for batch in datamodule.train_dataloader():
            out.append(batch)
            if len(out) == n_batches:
                break
        return out

    batches = load_batches()
    samples = sum(int(b["image"].shape[0]) for b in batches)

    module = MultiTaskModule.from_config(config)
    module.train()
    optimizer = module.configure_optimizers()

    from hcc_exp.data.augment import augment_batch

    def train_batches() -> None:
        for i, batch in enumerate(batches):
            batch = augment_batch(batch, config.augment, seed=config.seed, epoch=0)
            optimizer.zero_grad(set_to_none=True)
            loss = module.training_step(batch, i)
            loss.backward()
            optimizer.step()

    with warnings.catch_warnings():
        # training_step calls self.log, which only warns outside a Trainer.
        warnings.filterwarnings("ignore", message=r".*self\.log\(\).*")
        timings = interleaved({"loader": load_batches, "model": train_batches}, args.repeats)

    loader_rate = [samples / t for t in timings["loader"].values]
    model_rate = [samples / t for t in timings["model"].values]
    per_repeat = [a / b for a, b in zip(loader_rate, model_rate, strict=True)]
    headline = (samples / timings["loader"].median) / (samples / timings["model"].median)
    notes = [
        "Model samples/s include batch augmentation (rotation of CT trilinear and 9 masks nearest, time jitter), "
        "forward (online + momentum target network), the three losses, DWA weighting, backward and the AdamW "
        "step; the loader's include reading the in-memory cache, float32 conversion and collation.",
        f"Loader with num_workers={config.trainer.num_workers} (params.yaml): the training loop and the loader "
        "share the main process, so an epoch costs the sum of both; the ratio says how small the loading share is.",
    ]
    if not TARGET.met(headline):
        notes.append(f"target missed: the loader delivers {headline:.1f}x the model's rate, below 5x.")
    return report_result(
        NAME,
        title="Data loading vs training",
        compares="training loader (3 copies, rotation + jitter) vs tiny-model training step, samples/s",
        ratio_label="loader samples/s / model samples/s",
        ratio_value=headline,
        ratio_text=f"{headline:.1f}x ({samples / timings['loader'].median:.0f} vs {samples / timings['model'].median:.1f} samples/s)",
        target=TARGET,
        sizes={
            "cohort_patients": args.patients,
            "train_patients": len(dataset.patient_ids),
            "augment_copies": config.augment_copies,
            "samples_per_pass": samples,
            "batches_per_pass": len(batches),
            "batches_per_epoch": full_epoch,
            "batch_size": config.trainer.batch_size,
            "crop_size_vox": list(config.preprocess.crop_size_vox),
            "spacing_mm": list(config.preprocess.spacing_mm),
            "model_preset": config.model.preset,
            "num_workers": config.trainer.num_workers,
            "rotation_range_deg": config.augment.rotation_range_deg,
            "threads": args.threads,
            "repeats": args.repeats,
        },
        timings={
            "loader_pass": timings["loader"].to_dict(),
            "model_pass": timings["model"].to_dict(),
            "loader_samples_per_s": summary(loader_rate, "samples/s", 3),
            "model_samples_per_s": summary(model_rate, "samples/s", 3),
        },
        results={"ratio_per_repeat": summary(per_repeat, digits=3)},
        notes=notes,
        started=started,
    )


if __name__ == "__main__":
    main()
