"""Benchmark: samples/s of a training step, the new default path vs the path of commit fd7cd16 vs MONAI DenseNet121.

A training step here is everything between a collated batch of cached crops and the updated
weights, at ``trainer.num_workers: 0`` (the default: the loader's work sits on the training
critical path):

* ``old`` (commit fd7cd16): rotation and time jitter per sample on the CPU (what the
  dataset's ``__getitem__`` did, :func:`hcc_exp.data.augment.random_rotation` /
  ``jitter_times``), then :class:`~hcc_exp.training.module.MultiTaskModule` with
  ``model.formulation: reference`` (per-branch convolutions + ``cat``, max pooling in the
  default layout, float mask arithmetic, adaptive pooling + ``einsum``) in float32:
  ``training_step`` (online forward, momentum target forward, Cox losses over the bank, MVI
  cross-entropy, DWA), ``backward`` and AdamW.
* ``new`` (the default now): :func:`hcc_exp.data.augment.augment_batch` (one ``grid_sample``
  and one mask gather for the batch; the same random numbers), then the module with
  ``model.formulation: fast``, float32 (outputs equal to ``old`` within float tolerance), in a
  process that keeps freed memory (:func:`hcc_exp.processes.retain_freed_memory`, as
  ``train`` does; ``old`` runs in a process with glibc's default allocator).
* ``new_bf16``: ``new`` under bf16 autocast (``trainer.precision: bf16-mixed``: heads,
  losses and the Cox risk set in float32); a precision mode, so its outputs are close, not
  equal.
* ``monai_densenet121``: ``monai.networks.nets.DenseNet121(spatial_dims=3, in_channels=3,
  out_channels=4)`` forward + backward + AdamW on the same CT (phases as channels, no masks,
  no augmentation, no momentum network): the off-the-shelf network's cost.

Interleaved repeats (:func:`benchmarks.common.interleaved`) across two worker processes (the
old one with the default allocator, the new one with freed memory retained); one thread by
default. Equality: the old and new modules get the same weights; their outputs for the
same batch (eval mode) and their parameter gradients after one train-mode step (same
dropout seed, no augmentation) are compared.

    python benchmarks/bench_step.py [--batch 8] [--crop 48] [--repeats 5] [--steps 2]
"""

from __future__ import annotations

import copy
import sys
import time
import warnings
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    Target,
    base_parser,
    interleaved,
    ratio,
    report_result,
    setup_process,
)

NAME = "step"
TARGET = Target(3.0, "new default step >= 3x the fd7cd16 step (samples/s, same outputs)")
VARIANTS = ("old", "new", "new_bf16", "monai_densenet121")


def make_batch(batch: int, crop: int, seed: int = 0) -> dict[str, Any]:
    """A collated batch like the loader's: float32 CT, nested-sphere uint8 masks, outcomes, items."""
    import torch

    from hcc_exp.config import PHASES
    from hcc_exp.data.cache import REGIONS

    g = torch.Generator().manual_seed(seed)
    phases = len(PHASES)
    image = torch.rand(batch, phases, crop, crop, crop, generator=g)
    grid = torch.stack(torch.meshgrid(*[torch.arange(crop, dtype=torch.float32)] * 3, indexing="ij"))
    radius = (grid - (crop - 1) / 2).pow(2).sum(0).sqrt() / crop
    by_name = {"liver": radius < 0.45, "tumour": radius < 0.15, "margin": (radius >= 0.12) & (radius < 0.18)}
    region = torch.stack([by_name[name] for name in REGIONS]).to(torch.uint8)
    masks = region.expand(batch, phases, *region.shape).contiguous()
    os_time = torch.randint(30, 2000, (batch,), generator=g).float()
    return {
        "image": image,
        "masks": masks,
        "os_time": os_time,
        "rfs_time": (os_time * 0.6).floor(),
        "os_event": torch.arange(batch) % 2 == 0,
        "rfs_event": torch.arange(batch) % 3 != 0,
        "mvi": torch.arange(batch) % 2,
        "index": torch.arange(batch),
        "item": torch.arange(batch),
    }


def per_sample_augment(batch: dict[str, Any], config, seed: int, epoch: int) -> dict[str, Any]:
    """The loader path of fd7cd16: every sample rotated and jittered on its own (CPU)."""
    import numpy as np
    import torch

    from hcc_exp.data.augment import jitter_times, random_rotation, sample_seed

    images, masks, os_times, rfs_times = [], [], [], []
    for i, item in enumerate(batch["item"].tolist()):
        s = sample_seed(seed, epoch, item)
        image, mask = random_rotation(batch["image"][i], batch["masks"][i], torch.Generator().manual_seed(s),
                                      config.rotation_range_deg)
        os_t, rfs_t = jitter_times(float(batch["os_time"][i]), float(batch["rfs_time"][i]),
                                   np.random.default_rng(s), config.time_jitter_days)
        images.append(image)
        masks.append(mask)
        os_times.append(os_t)
        rfs_times.append(rfs_t)
    out = dict(batch)
    out.update(image=torch.stack(images), masks=torch.stack(masks),
               os_time=torch.tensor(os_times), rfs_time=torch.tensor(rfs_times))
    return out


def build_steps(batch: dict[str, Any], config_old, config_new) -> tuple[dict[str, Any], dict[str, Any]]:
    """Zero-argument step closures of every variant, and the modules (for the equality check)."""
    import torch
    from monai.networks.nets import DenseNet121

    from hcc_exp.data.augment import augment_batch
    from hcc_exp.training.module import MultiTaskModule

    torch.manual_seed(0)
    new = MultiTaskModule.from_config(config_new)
    old = MultiTaskModule.from_config(config_old)
    old.load_state_dict(new.state_dict())
    new_bf16 = copy.deepcopy(new)
    modules = {"old": old, "new": new, "new_bf16": new_bf16}
    optimisers = {k: torch.optim.AdamW(m.parameters(), lr=1e-3) for k, m in modules.items()}
    epoch = {"old": 0, "new": 0, "new_bf16": 0}

    def module_step(name: str, augment, bf16: bool):
        module, optimiser = modules[name], optimisers[name]
        module.train()

        def step() -> None:
            augmented = augment(batch, config_new.augment, seed=config_new.seed, epoch=epoch[name])
            epoch[name] += 1
            optimiser.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = module.training_step(augmented, 0)
            loss.backward()
            optimiser.step()

        return step

    densenet = DenseNet121(spatial_dims=3, in_channels=batch["image"].shape[1], out_channels=4, pretrained=False).train()
    densenet_opt = torch.optim.AdamW(densenet.parameters(), lr=1e-3)

    def densenet_step() -> None:
        densenet_opt.zero_grad(set_to_none=True)
        densenet(batch["image"]).pow(2).mean().backward()
        densenet_opt.step()

    steps = {
        "old": module_step("old", per_sample_augment, False),
        "new": module_step("new", augment_batch, False),
        "new_bf16": module_step("new_bf16", augment_batch, True),
        "monai_densenet121": densenet_step,
    }
    params = {k: sum(p.numel() for p in m.parameters()) for k, m in modules.items()}
    params["monai_densenet121"] = sum(p.numel() for p in densenet.parameters())
    return steps, {"modules": modules, "params": params}


def compare_outputs(batch: dict[str, Any], config_old, config_new) -> dict[str, Any]:
    """Old vs new module on the same weights: eval outputs, train-mode gradients, and the augmented batch."""
    import torch

    from hcc_exp.data.augment import augment_batch
    from hcc_exp.training.module import MultiTaskModule

    torch.manual_seed(1)
    new = MultiTaskModule.from_config(config_new)
    old = MultiTaskModule.from_config(config_old)
    old.load_state_dict(new.state_dict())
    out: dict[str, Any] = {}
    with torch.no_grad():
        a = new.eval()(batch["image"], batch["masks"])
        b = old.eval()(batch["image"], batch["masks"])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            c = new(batch["image"], batch["masks"])
    out["eval_max_abs_diff"] = max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))
    out["eval_max_abs_output"] = max(float(y.abs().max()) for y in b)
    out["bf16_eval_max_abs_diff"] = max(float((x - y).abs().max()) for x, y in zip(c, b, strict=True))
    grads = []
    for module in (new, old):
        module.train()
        module.zero_grad(set_to_none=True)
        torch.manual_seed(2)
        module.training_step(batch, 0).backward()
        grads.append({n: p.grad for n, p in module.named_parameters() if p.grad is not None})
    scale = max(float(g.abs().max()) for g in grads[1].values())
    out["train_grad_max_abs_diff_over_max_grad"] = max(
        float((grads[0][n] - grads[1][n]).abs().max()) for n in grads[1]
    ) / scale
    # float64, fresh modules (no bank or BatchNorm state from the float32 step): the same function
    # exactly; float32 differs by the kernels' accumulation order only
    torch.manual_seed(1)
    new = MultiTaskModule.from_config(config_new).double().train()
    old = MultiTaskModule.from_config(config_old).double().train()
    old.load_state_dict(new.state_dict())
    batch64 = {**batch, "image": batch["image"].double()}
    grads64 = []
    for module in (new, old):
        module.zero_grad(set_to_none=True)
        torch.manual_seed(2)
        module.training_step(batch64, 0).backward()
        grads64.append({n: p.grad for n, p in module.named_parameters() if p.grad is not None})
    scale64 = max(float(g.abs().max()) for g in grads64[1].values())
    out["float64_train_grad_max_abs_diff_over_max_grad"] = max(
        float((grads64[0][n] - grads64[1][n]).abs().max()) for n in grads64[1]
    ) / scale64
    aug_new = augment_batch(batch, config_new.augment, seed=3, epoch=0)
    aug_old = per_sample_augment(batch, config_new.augment, seed=3, epoch=0)
    out["augmented_image_max_abs_diff"] = float((aug_new["image"] - aug_old["image"]).abs().max())
    out["augmented_masks_equal"] = bool(torch.equal(aug_new["masks"], aug_old["masks"]))
    out["jittered_times_equal"] = bool(torch.equal(aug_new["os_time"], aug_old["os_time"].to(aug_new["os_time"].dtype)))
    out["equal_within_tolerance"] = bool(
        out["eval_max_abs_diff"] <= 1e-4 * max(1.0, out["eval_max_abs_output"])
        and out["train_grad_max_abs_diff_over_max_grad"] <= 1e-2
        and out["float64_train_grad_max_abs_diff_over_max_grad"] <= 1e-9
        and out["augmented_masks_equal"]
        and out["augmented_image_max_abs_diff"] <= 1e-5
    )
    return out


def step_inputs(preset: str, batch: int, crop: int) -> tuple[Any, Any, dict[str, Any]]:
    """``(config_old, config_new, batch)``: the reference and fast formulations' configs and the collated batch."""
    from hcc_exp.config import build_config

    base = {"model.preset": preset, "trainer.batch_size": batch, "trainer.accelerator": "cpu"}
    config_new = build_config({}, base)
    config_old = build_config({}, {**base, "model.formulation": "reference"})
    return config_old, config_new, make_batch(batch, crop)


def _serve_steps(connection, variants: tuple[str, ...], retain: bool, args: dict[str, Any]) -> None:
    """Child process: build the steps, then run the variant named by each message and reply with its seconds."""
    setup_process(args["threads"])
    if retain:
        from hcc_exp.processes import retain_freed_memory

        retain_freed_memory()
    config_old, config_new, batch = step_inputs(args["preset"], args["batch"], args["crop"])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*self\.log\(\).*")
        steps, info = build_steps(batch, config_old, config_new)
        connection.send(info["params"])
        while (name := connection.recv()) is not None:
            start = time.perf_counter()
            steps[name]()
            connection.send(time.perf_counter() - start)


class StepProcess:
    """A process that times the steps of some variants on request (its own allocator settings)."""

    def __init__(self, variants: tuple[str, ...], *, retain: bool, args: dict[str, Any]) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_serve_steps, args=(child, variants, retain, args), daemon=True)
        self.process.start()
        self.params = self.connection.recv()

    def timed(self, name: str):
        """A zero-argument callable for :func:`interleaved`: one step of ``name`` in this process."""

        def step() -> None:
            self.connection.send(name)
            self.connection.recv()

        return step

    def close(self) -> None:
        self.connection.send(None)
        self.process.join(timeout=30)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = base_parser(__doc__.splitlines()[0], repeats=5)
    parser.add_argument("--batch", type=int, default=8, help="patients per batch (default 8 = trainer.batch_size)")
    parser.add_argument("--crop", type=int, default=48, help="crop edge in voxels (default 48 = params.yaml)")
    parser.add_argument("--preset", default="tiny", choices=("tiny", "paper"))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    setup_process(args.threads)

    config_old, config_new, batch = step_inputs(args.preset, args.batch, args.crop)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*self\.log\(\).*")
        equality = compare_outputs(batch, config_old, config_new)
    # The old path runs in a process with glibc's default allocator (as at fd7cd16), the new
    # ones in a process that keeps freed memory (what `train` sets: processes.retain_freed_memory).
    shared = {"threads": args.threads, "preset": args.preset, "batch": args.batch, "crop": args.crop}
    old_process = StepProcess(("old",), retain=False, args=shared)
    new_process = StepProcess(("new", "new_bf16", "monai_densenet121"), retain=True, args=shared)
    try:
        steps = {v: (old_process if v == "old" else new_process).timed(v) for v in VARIANTS}
        timings = interleaved(steps, args.repeats)
    finally:
        old_process.close()
        new_process.close()
    info = {"params": new_process.params}
    per_second = {v: timings[v].scaled(1 / args.batch) for v in VARIANTS}  # seconds per sample
    rates = {v: round(args.batch / timings[v].median, 3) for v in VARIANTS}
    speedup = ratio(timings["old"], timings["new"])
    speedup_bf16 = ratio(timings["old"], timings["new_bf16"])
    densenet = ratio(timings["monai_densenet121"], timings["new"])
    headline = speedup["of_medians"]
    met = TARGET.met(headline) and equality["equal_within_tolerance"]
    notes = [
        "Step = augmentation of the batch + training_step (online + momentum target forward, Cox losses over "
        "the bank, MVI cross-entropy, DWA) + backward + AdamW; old augments per sample as its loader did with "
        "num_workers=0, new augments the batch on its device (same random numbers).",
        f"bf16-mixed (precision mode, outputs close not equal): {speedup_bf16['of_medians']:.2f}x the old step.",
        "old runs in a process with glibc's default allocator, new and new_bf16 in one with "
        "processes.retain_freed_memory() (what train() sets): freed activation buffers stay mapped instead of "
        "being unmapped and page-faulted in again every step.",
        "new's stem pools before BatchNorm + ELU (kernels of negative-gamma channels negated; statistics from "
        "column sums of the full-resolution map) and the online and momentum networks share one prepared "
        "batch (masked CT, byte regions, pooling weights).",
    ]
    return report_result(
        NAME,
        title="Training step",
        compares="default step vs the fd7cd16 step (and bf16-mixed, MONAI DenseNet121)",
        ratio_label="old step time / new step time",
        ratio_value=headline,
        ratio_text=(
            f"{headline:.2f}x ({rates['new']:.1f} vs {rates['old']:.1f} samples/s; bf16 "
            f"{speedup_bf16['of_medians']:.2f}x; DenseNet121 {densenet['of_medians']:.1f}x slower than new)"
        ),
        target=TARGET,
        target_met=met,
        sizes={"batch": args.batch, "phases": 3, "crop_vox": args.crop, "preset": args.preset,
               "threads": args.threads, "repeats": args.repeats, "parameters": info["params"]},
        timings={f"{v}_step": timings[v].to_dict() for v in VARIANTS}
        | {f"{v}_per_sample": per_second[v].to_dict() for v in VARIANTS},
        results={
            "samples_per_s": rates,
            "old_over_new": speedup,
            "old_over_new_bf16": speedup_bf16,
            "densenet121_over_new": densenet,
            "equality": equality,
        },
        notes=notes,
        started=started,
    )


if __name__ == "__main__":
    main()
