"""GPU placement of local workers, without a GPU: visible devices, round robin, trials per GPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from hcc_exp.errors import SweepError
from hcc_exp.sweeps.placement import DevicePool, plan_devices, visible_gpus
from hcc_exp.sweeps.runner import _supervise, prepare_sweep
from tests.sweeps.conftest import FAKE_TRAIN, write_spec


def test_visible_gpus_from_override_cuda_visible_devices_or_count() -> None:
    assert visible_gpus({"HCC_EXP_SWEEP_GPUS": "1, 3"}, device_count=8) == ["1", "3"]
    assert visible_gpus({"HCC_EXP_SWEEP_GPUS": "none"}, device_count=8) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "4,5,6"}, device_count=3) == ["4", "5", "6"]
    assert visible_gpus({}, device_count=2) == ["0", "1"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "0"}, device_count=0) == []


def test_round_robin_one_device_per_worker_and_k_trials_per_gpu() -> None:
    assert plan_devices(["0", "1"], 2) == ["0", "1"]
    assert plan_devices(["0", "1", "2"], 3) == ["0", "1", "2"]
    assert plan_devices(["0", "1"], 4, per_device=2) == ["0", "1", "0", "1"]
    assert plan_devices(["0", "1"], 3, per_device=3) == ["0", "1", "0"]
    assert plan_devices([], 3) == [None, None, None]
    with pytest.raises(SweepError, match="--workers 3 on 2 GPU"):
        plan_devices(["0", "1"], 3)
    with pytest.raises(SweepError, match="--trials-per-gpu must be >= 1"):
        plan_devices(["0"], 1, per_device=0)


def test_a_replacement_worker_takes_the_freed_gpu() -> None:
    pool = DevicePool(("0", "1", "2"), per_device=1)
    assert pool.acquire(["0", "2"]) == "1"  # worker on GPU 1 exited
    pool2 = DevicePool(("0", "1"), per_device=2)
    assert pool2.acquire(["0", "0", "1"]) == "1"
    with pytest.raises(SweepError, match="already runs 2"):
        pool2.acquire(["0", "0", "1", "1"])


def test_supervisor_gives_each_worker_its_cuda_visible_devices(tmp_path: Path, fake_env: Path, monkeypatch) -> None:
    """Two workers on two (pretended) GPUs: each process sees exactly one, a different one."""
    import subprocess

    seen: list[str | None] = []
    real_popen = subprocess.Popen

    def popen(argv, env=None, **kwargs):
        seen.append(env.get("CUDA_VISIBLE_DEVICES"))
        return real_popen(argv, env=env, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", popen)
    prepared = prepare_sweep(write_spec(tmp_path / "s.yaml", name="gpus"), runs_root=tmp_path / "runs")
    _supervise(prepared, workers=2, train_fn=FAKE_TRAIN, progress=False, devices=DevicePool(("0", "1")))
    assert sorted(seen[:2]) == ["0", "1"]
    assert all(device in {"0", "1"} for device in seen)
