"""Storage selection: journal by default, psycopg 3 for PostgreSQL, SQLite refused on network file systems."""

from __future__ import annotations

from pathlib import Path

import pytest

from hcc_exp.errors import SweepError
from hcc_exp.sweeps import storage as storage_module
from hcc_exp.sweeps.storage import is_network_filesystem, mount_fstype, resolve_storage

MOUNTS = """\
/dev/sda1 / ext4 rw,relatime 0 0
proc /proc proc rw 0 0
fileserver:/export/projects /mnt/projects nfs4 rw,vers=4.2 0 0
//nas/share /mnt/nas cifs rw 0 0
user@host:/data /mnt/remote\\040data fuse.sshfs rw 0 0
tmpfs /mnt/projects/scratch tmpfs rw 0 0
"""


def test_mount_type_uses_the_longest_mount_point() -> None:
    assert mount_fstype(Path("/home/me/study.db"), MOUNTS) == "ext4"
    assert mount_fstype(Path("/mnt/projects/hcc/study.db"), MOUNTS) == "nfs4"
    assert mount_fstype(Path("/mnt/projects/scratch/study.db"), MOUNTS) == "tmpfs"
    assert is_network_filesystem(Path("/mnt/nas/x.db"), MOUNTS) == "cifs"
    assert is_network_filesystem(Path("/mnt/remote data/x.db"), MOUNTS) == "fuse.sshfs"
    assert is_network_filesystem(Path("/mnt/projects/scratch/x.db"), MOUNTS) is None
    assert is_network_filesystem(Path("/tmp/x.db"), MOUNTS) is None


def test_sqlite_on_nfs_is_refused_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage_module, "mount_fstype", lambda path, mounts_text=None: mount_fstype(path, MOUNTS))
    with pytest.raises(SweepError, match=r"network file system \(nfs4\).*locks are unreliable.*journal storage"):
        resolve_storage("sqlite:////mnt/projects/hcc/study.db", Path("/tmp/sweep"))
    local = resolve_storage("sqlite:////home/me/study.db", Path("/tmp/sweep"))
    assert local.kind == "rdb" and local.url == "sqlite:////home/me/study.db"


def test_default_journal_and_env_expansion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = resolve_storage(None, tmp_path / "sweep")
    assert target.kind == "journal" and target.journal_path == (tmp_path / "sweep" / "optuna.journal").resolve()
    monkeypatch.setenv("PGPASS_TEST", "s3cret")
    pg = resolve_storage("postgres://hcc:${PGPASS_TEST}@db:5432/studies", tmp_path)
    assert pg.url == "postgresql+psycopg://hcc:s3cret@db:5432/studies" and "s3cret" not in pg.display
    assert resolve_storage(str(tmp_path / "shared.journal"), tmp_path).kind == "journal"
    with pytest.raises(SweepError, match="unsupported"):
        resolve_storage("redis://localhost", tmp_path)
