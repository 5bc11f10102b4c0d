"""A fast stand-in for ``hcc_exp.training.train.train`` that worker processes can import.

It writes a minimal run folder, reports a metric that depends on the config in a
known way, drives a pruning callback the way Lightning would, and can be told
through environment variables (read at call time, inherited by worker processes):

- ``FAKE_TRAIN_LOG``: a JSON-lines file; every call appends ``{arm_key, seed, pid, run_dir}``.
- ``FAKE_TRAIN_SLEEP``: seconds each call sleeps (default 0.05).
- ``FAKE_TRAIN_HANG_DIR``: the first call (across all processes) writes ``hung.pid`` there
  and sleeps ``FAKE_TRAIN_HANG_S`` (default 120 s), to be killed mid-trial.
- ``FAKE_TRAIN_BARRIER``: ``N`` - each call waits (up to 30 s) until ``N`` different
  processes have logged a call, proving that workers run concurrently.
- ``FAKE_TRAIN_FAIL_ARM``: a ``model.dims`` value whose runs raise (a broken arm).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from hcc_exp.config import ExperimentConfig


@dataclass
class FakeResult:
    run_dir: Path
    metrics: dict[str, float]
    best_epoch: int
    epochs_trained: int
    extra: dict = field(default_factory=dict)


def objective_value(config: ExperimentConfig) -> float:
    """A C-index-like score known in closed form: best at lr = 1e-3, 3D slightly better."""
    import math

    lr_penalty = abs(math.log10(config.optim.lr) + 3.0) * 0.1
    return 0.8 - lr_penalty + (0.02 if config.model.dims == "3d" else 0.0) + 0.001 * config.seed


def _append(path: Path, row: dict) -> None:
    with path.open("a") as handle:
        handle.write(json.dumps(row) + "\n")
        handle.flush()


def _pids(path: Path) -> set[int]:
    if not path.is_file():
        return set()
    return {json.loads(line)["pid"] for line in path.read_text().splitlines() if line.strip()}


def train(config: ExperimentConfig, *, run_dir: Path, tracker=None, callbacks=None) -> FakeResult:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(config.to_yaml())
    log = os.environ.get("FAKE_TRAIN_LOG")
    if log:
        _append(Path(log), {"dims": config.model.dims, "seed": config.seed, "pid": os.getpid(), "run_dir": str(run_dir)})

    hang_dir = os.environ.get("FAKE_TRAIN_HANG_DIR")
    if hang_dir:
        marker = Path(hang_dir) / "hung.pid"
        try:
            with marker.open("x") as handle:  # exclusive create: only the first call hangs
                handle.write(str(os.getpid()))
        except FileExistsError:
            pass
        else:
            time.sleep(float(os.environ.get("FAKE_TRAIN_HANG_S", "120")))

    barrier = int(os.environ.get("FAKE_TRAIN_BARRIER", "0"))
    if barrier and log:
        deadline = time.monotonic() + 30
        while len(_pids(Path(log))) < barrier and time.monotonic() < deadline:
            time.sleep(0.05)

    if os.environ.get("FAKE_TRAIN_FAIL_ARM") == config.model.dims:
        raise RuntimeError(f"fake training diverged for model.dims={config.model.dims}")

    time.sleep(float(os.environ.get("FAKE_TRAIN_SLEEP", "0.05")))
    final = objective_value(config)
    epochs = config.trainer.max_epochs
    if tracker is not None:
        tracker.start(run_id=run_dir.name, run_dir=run_dir, config=config.to_flat_dict(), job_type="train")
    # Drive pruning callbacks as Lightning does after each validation epoch (numpy scalars
    # have the .item() of the tensors in callback_metrics, without importing torch).
    import numpy as np

    trainer = SimpleNamespace(sanity_checking=False, callback_metrics={})
    for epoch in range(epochs):
        value = final * (epoch + 1) / epochs
        trainer.callback_metrics = {"val/os_c_index": np.float64(value), "val/loss": np.float64(1 - value)}
        if tracker is not None:
            tracker.log_metrics({"val/os_c_index": value, "val/loss": 1 - value}, step=epoch)
        for callback in callbacks or []:
            try:
                callback.on_validation_end(trainer, SimpleNamespace(current_epoch=epoch))
            except BaseException:
                if tracker is not None:
                    tracker.finish(exit_code=1)
                raise
    metrics = {"internal/os/c_index": final, "val/loss": 1 - final, "best_epoch": float(epochs - 1)}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    (run_dir / "meta.json").write_text(json.dumps({"run_id": run_dir.name}))
    if tracker is not None:
        tracker.log_summary(metrics)
        tracker.finish(exit_code=0)
    return FakeResult(run_dir=run_dir, metrics=metrics, best_epoch=epochs - 1, epochs_trained=epochs)
