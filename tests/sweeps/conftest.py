"""Sweep test helpers: a 2-arm x 2-seed grid spec writer, environment for the fake train, a PostgreSQL server."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

FAKE_TRAIN = "tests.sweeps.fake_train:train"


def write_spec(path: Path, **fields: Any) -> Path:
    """A valid grid sweep (arms a=3d, b=2d; seeds 0, 1; no W&B; 3 epochs), updated with ``fields``."""
    spec: dict[str, Any] = {
        "name": "grid",
        "method": "grid",
        "metric": {"name": "internal/os/c_index", "goal": "maximize"},
        "base": None,
        "seeds": [0, 1],
        "arms": [{"name": "a", "set": {"model.dims": "3d"}}, {"name": "b", "set": {"model.dims": "2d"}}],
        "overrides": {"tracking.wandb": False, "trainer.max_epochs": 3},
        "heartbeat_interval": 1,
        "grace_period": 4,
    }
    spec.update(fields)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture
def fake_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Log file of the fake train's calls; the environment reaches worker processes."""
    log = tmp_path / "fake-calls.jsonl"
    monkeypatch.setenv("FAKE_TRAIN_LOG", str(log))
    monkeypatch.setenv("FAKE_TRAIN_SLEEP", "0.05")
    for var in ("FAKE_TRAIN_HANG_DIR", "FAKE_TRAIN_BARRIER", "FAKE_TRAIN_FAIL_ARM"):
        monkeypatch.delenv(var, raising=False)
    # Workers need one thread each on the shared CPUs.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return log


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[str]:
    """``postgresql://postgres@127.0.0.1:<port>`` of a throw-away server (trust auth, tmp data dir)."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binary (initdb) installed")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="hcc-pg-"))  # not under pytest's root-only tmp folder
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server")
        os.chown(root, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, log, port = root / "data", root / "server.log", free_port()
    subprocess.run(
        [*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"],
        check=True,
        capture_output=True,
    )
    started = subprocess.run(
        [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
         "-o", f"-p {port} -k {root} -c fsync=off -c listen_addresses=127.0.0.1", "start"],
        capture_output=True,
        text=True,
    )
    if started.returncode != 0:
        pytest.fail(f"PostgreSQL did not start: {started.stderr}\n{log.read_text() if log.exists() else ''}")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(
            [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def database(postgres_server: str) -> str:
    """A fresh database on the server; returns its URL as a user would write it (no driver)."""
    import psycopg

    name = f"sweep_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{postgres_server}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{postgres_server}/{name}"
