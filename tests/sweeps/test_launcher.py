"""Launcher settings (YAML launcher: and the command line), cluster storage rules, per-worker sampler seeds."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from hcc_exp.errors import ConfigError, SweepError
from hcc_exp.sweeps.launcher import LauncherSpec, parse_slurm_set, parse_slurm_time
from hcc_exp.sweeps.optuna_backend import make_sampler, worker_sampler_seed
from hcc_exp.sweeps.slurm import check_cluster_storage
from hcc_exp.sweeps.spec import load_sweep_spec
from hcc_exp.sweeps.storage import resolve_storage
from tests.sweeps.conftest import write_spec


@pytest.mark.parametrize(
    ("text", "minutes"),
    [(30, 30), ("30", 30), ("00:30:00", 30), ("1:00:00", 60), ("2-12:00:00", 3600), ("05:30", 6), ("0:00:30", 1)],
)
def test_slurm_time_in_minutes(text, minutes) -> None:
    assert parse_slurm_time(text) == minutes


@pytest.mark.parametrize("text", ["1h", "", "0", "-5", "1:2:3:4"])
def test_bad_slurm_time_is_refused(text) -> None:
    with pytest.raises(ValueError):
        parse_slurm_time(text)


def test_launcher_section_of_the_yaml(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path / "s.yaml",
        launcher={"type": "slurm", "array": 4, "partition": "gpu", "gpus_per_task": 1, "time": "02:00:00",
                  "mem": "16G", "slurm_set": {"account": "rad"}},
    )  # fmt: skip
    launcher = load_sweep_spec(spec).spec.launcher
    assert launcher.type == "slurm" and launcher.array == 4 and launcher.time_min == 120
    assert launcher.slurm_set == {"account": "rad"}
    with pytest.raises(ConfigError, match=r"launcher.arrays: Extra inputs"):
        load_sweep_spec(write_spec(tmp_path / "t.yaml", launcher={"type": "slurm", "arrays": 2}))
    with pytest.raises(ConfigError, match=r"launcher.time"):
        load_sweep_spec(write_spec(tmp_path / "u.yaml", launcher={"time": "1h"}))
    assert LauncherSpec().type == "local"


def test_launcher_settings_do_not_change_the_study_fingerprint(tmp_path: Path) -> None:
    a = load_sweep_spec(write_spec(tmp_path / "a.yaml"))
    b = load_sweep_spec(write_spec(tmp_path / "b.yaml", launcher={"type": "slurm", "array": 8}))
    assert a.fingerprint() == b.fingerprint()


def test_slurm_set_items() -> None:
    assert parse_slurm_set(["account=rad", "--qos=high", "exclusive="]) == {"account": "rad", "qos": "high", "exclusive": ""}
    with pytest.raises(ValueError, match="expected key=value"):
        parse_slurm_set(["account"])


def test_cluster_storage_rules(tmp_path: Path) -> None:
    assert check_cluster_storage(resolve_storage("postgresql://u:p@db/hcc", tmp_path)) is None
    with pytest.raises(SweepError, match="SQLite cannot be shared by Slurm tasks"):
        check_cluster_storage(resolve_storage(f"sqlite:///{tmp_path}/s.db", tmp_path))
    warning = check_cluster_storage(resolve_storage(None, tmp_path))
    assert warning is not None and "every task must see this file" in warning and "PostgreSQL" in warning


def test_worker_sampler_seeds_differ_by_task_and_attempt_and_repeat() -> None:
    seeds = {worker_sampler_seed(11, task, attempt) for task in range(8) for attempt in range(3)}
    assert len(seeds) == 24
    assert worker_sampler_seed(11, 2, 1) == worker_sampler_seed(11, 2, 1)
    assert worker_sampler_seed(None, 3) is None


def test_parallel_workers_do_not_sample_the_same_trials(tmp_path: Path) -> None:
    """Optuna issue 3790: workers with one shared seed sample identical parameters."""
    import optuna

    resolved = load_sweep_spec(
        write_spec(tmp_path / "s.yaml", method="random", arms=[], seeds=[0], trials=4, sampler_seed=5,
                   parameters={"optim.lr": {"min": 1e-4, "max": 1e-2, "distribution": "log_uniform_values"}})
    )  # fmt: skip

    def first_samples(worker: int) -> list[float]:
        study = optuna.create_study(sampler=make_sampler(resolved.spec, worker))
        return [study.ask().suggest_float("lr", 1e-4, 1e-2, log=True) for _ in range(3)]

    drawn = [tuple(first_samples(w)) for w in range(4)]
    assert len(set(drawn)) == 4 and drawn[1] == tuple(first_samples(1))
    assert max(Counter(v for d in drawn for v in d).values()) == 1
