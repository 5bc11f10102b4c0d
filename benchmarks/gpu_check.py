"""GPU check (under 8 minutes on one GPU): the paper preset at 1 mm for a few steps, and one short tiny trial.

What it measures, on the first visible CUDA device:

1. **Paper preset, 1 mm, 96^3 crops** (``model.preset: paper``, ``preprocess.spacing_mm: 1``):
   a small synthetic cohort (``--patients``, default 48) is preprocessed, then

   * loader samples/s: the training loader (cached crops only, ``--num-workers`` workers,
     pinned memory, persistent workers) iterated for ``--steps`` batches, host to device
     copy included;
   * model samples/s and peak GPU memory: ``--steps`` training steps (batch augmentation on
     the GPU, ``training_step`` with the momentum bank, backward, AdamW) in float32 and in
     ``bf16-mixed`` (autocast), after one warm-up step each;
     ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``.

2. **One short trial of the tiny preset** (2 mm, 48^3, ``--tiny-epochs`` epochs) through
   :func:`hcc_exp.training.train.train` with ``trainer.accelerator: gpu``: wall time and
   its internal / external C-index.

Writes ``benchmarks/results/gpu_check.json``. Without a GPU it prints why and exits with
status 0, writing nothing (the CPU benchmarks are the other scripts).

    bash benchmarks/gpu_check.sh            # or: python benchmarks/gpu_check.py [--patients 48] [--steps 6]
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
    fresh_dir,
    setup_process,
    synthetic_cohort,
    write_result,
)

NAME = "gpu_check"
TARGET = Target(1.0, "loader samples/s >= model samples/s (paper preset, 1 mm, bf16-mixed)")
NO_GPU_MESSAGE = "gpu_check: no CUDA GPU is visible (torch.cuda.is_available() is False); nothing measured, nothing written."


def gpu_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def paper_steps(args, cohort_dir: Path) -> dict[str, Any]:
    import torch

    from hcc_exp.config import build_config
    from hcc_exp.data.datamodule import HccDataModule
    from hcc_exp.data.preprocess import preprocess_cohort
    from hcc_exp.training.module import MultiTaskModule

    config = build_config({}, {
        "data.cohort_dir": str(cohort_dir),
        "data.cache_dir": str(WORK_DIR / "gpu-cache-1mm"),
        "preprocess.spacing_mm": [1.0, 1.0, 1.0],
        "preprocess.crop_size_vox": [args.crop_1mm] * 3,
        "preprocess.workers": args.preprocess_workers,
        "model.preset": "paper",
        "trainer.batch_size": args.batch,
        "trainer.num_workers": args.num_workers,
        "trainer.accelerator": "gpu",
    })
    started = time.perf_counter()
    cache = preprocess_cohort(cohort_dir, config.data.cache_dir, config.preprocess, progress=False)
    preprocess_s = time.perf_counter() - started
    datamodule = HccDataModule(cache, config)
    datamodule.setup("fit")
    device = torch.device("cuda")

    loader = datamodule.train_dataloader()
    batches = []
    for batch in loader:  # first pass starts the workers; not timed
        batches.append(batch)
        if len(batches) == args.steps:
            break
    torch.cuda.synchronize()
    started = time.perf_counter()
    seen = 0
    for batch in loader:
        moved = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        seen += int(moved["image"].shape[0])
        if seen >= args.steps * args.batch:
            break
    torch.cuda.synchronize()
    loader_rate = seen / (time.perf_counter() - started)

    out: dict[str, Any] = {"preprocess_s": round(preprocess_s, 1), "patients": len(cache.patient_ids("train")),
                           "crop_vox": args.crop_1mm, "batch": args.batch, "loader_samples_per_s": round(loader_rate, 2)}
    device_batches = [{k: v.to(device) for k, v in b.items()} for b in batches]
    for precision in ("32", "bf16-mixed"):
        torch.manual_seed(0)
        module = MultiTaskModule.from_config(config).to(device).train()
        optimiser = torch.optim.AdamW(module.parameters(), lr=1e-3)

        def step(batch, module=module, optimiser=optimiser, precision=precision) -> None:
            from hcc_exp.data.augment import augment_batch

            batch = augment_batch(batch, config.augment, seed=config.seed, epoch=0)
            optimiser.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
                loss = module.training_step(batch, 0)
            loss.backward()
            optimiser.step()

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*self\.log\(\).*")
            step(device_batches[0])
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            started = time.perf_counter()
            for batch in device_batches:
                step(batch)
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        samples = sum(int(b["image"].shape[0]) for b in device_batches)
        out[f"model_samples_per_s_{precision}"] = round(samples / seconds, 2)
        out[f"peak_gpu_memory_gib_{precision}"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        del module, optimiser
        torch.cuda.empty_cache()
    out["loader_over_model_bf16"] = round(out["loader_samples_per_s"] / out["model_samples_per_s_bf16-mixed"], 3)
    return out


def tiny_trial(args, cohort_dir: Path) -> dict[str, Any]:
    from hcc_exp.config import build_config
    from hcc_exp.training.train import train

    config = build_config({}, {
        "data.cohort_dir": str(cohort_dir),
        "data.cache_dir": str(WORK_DIR / "gpu-cache-2mm"),
        "tracking.runs_dir": str(WORK_DIR / "gpu-runs"),
        "tracking.wandb": False,
        "preprocess.workers": args.preprocess_workers,
        "trainer.accelerator": "gpu",
        "trainer.max_epochs": args.tiny_epochs,
        "trainer.num_workers": args.num_workers,
    })
    run_dir = fresh_dir(WORK_DIR / "gpu-runs" / "tiny")
    started = time.perf_counter()
    result = train(config, run_dir=run_dir, progress=False)
    return {
        "epochs": result.epochs_trained,
        "wall_s": round(time.perf_counter() - started, 1),
        "best_epoch": result.best_epoch,
        **{k: result.metrics.get(k) for k in ("internal/os/c_index", "external/os/c_index", "internal/mvi/auc")},
    }


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0], repeats=1, threads=4)
    parser.add_argument("--patients", type=int, default=48, help="synthetic cohort size (default 48: 9 training batches of 8)")
    parser.add_argument("--steps", type=int, default=6, help="timed training steps of the paper preset (default 6)")
    parser.add_argument("--batch", type=int, default=8, help="batch size (default 8)")
    parser.add_argument("--crop-1mm", type=int, default=96, help="crop edge at 1 mm in voxels (default 96 = 96 mm)")
    parser.add_argument("--num-workers", type=int, default=4, help="loader workers (default 4)")
    parser.add_argument("--preprocess-workers", type=int, default=8, help="preprocessing processes (default 8)")
    parser.add_argument("--tiny-epochs", type=int, default=3, help="epochs of the tiny trial (default 3)")
    args = parser.parse_args(argv)
    if not gpu_available():
        print(NO_GPU_MESSAGE)
        return 0
    started = time.perf_counter()
    setup_process(args.threads)
    import torch

    cohort_dir = synthetic_cohort(args.patients, 7)
    paper = paper_steps(args, cohort_dir)
    tiny = tiny_trial(args, cohort_dir)
    payload = write_result(
        NAME,
        title="GPU check",
        compares="loader vs model samples/s (paper preset, 1 mm), and one tiny trial",
        ratio_label="loader samples/s / model samples/s (bf16-mixed)",
        ratio_value=paper["loader_over_model_bf16"],
        ratio_text=(f"loader {paper['loader_samples_per_s']:.1f} vs model {paper['model_samples_per_s_bf16-mixed']:.1f} "
                    f"samples/s (fp32 {paper['model_samples_per_s_32']:.1f}); peak "
                    f"{paper['peak_gpu_memory_gib_bf16-mixed']:.1f} GiB; tiny trial {tiny['wall_s']:.0f} s"),
        target=TARGET,
        device="cuda",
        sizes={"patients": args.patients, "steps": args.steps, "batch": args.batch, "crop_1mm": args.crop_1mm,
               "num_workers": args.num_workers, "tiny_epochs": args.tiny_epochs, "gpu": torch.cuda.get_device_name(0)},
        timings={},
        results={"paper_1mm": paper, "tiny_trial": tiny},
        notes=["Loader: cached crops only (augmentation runs on the GPU in the training step)."],
        started=started,
    )
    print(payload["ratio_text"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
