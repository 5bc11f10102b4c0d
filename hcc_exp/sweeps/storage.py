"""Optuna storages for sweeps: a journal file by default, PostgreSQL for several machines.

- ``None`` -> ``JournalStorage(JournalFileBackend(<sweep folder>/optuna.journal))``: safe for
  several processes on one machine (file locks), no server.
- ``postgresql://...`` (or ``postgresql+psycopg://``) -> ``RDBStorage`` through psycopg 3 with
  Optuna's heartbeat: a trial whose worker stops beating is failed and re-queued.
- a path to a ``.journal`` file (e.g. on storage shared with another machine) -> journal storage.
- ``sqlite:///...`` -> refused on a network file system (SQLite's locking is unreliable
  there and concurrent writers corrupt the database), allowed on a local disk.

``${VAR}`` in a URL is expanded from the environment, so passwords need not sit in the YAML.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import optuna
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalStorage

from hcc_exp.errors import SweepError
from hcc_exp.sweeps.folder import SweepFolder, journal_heartbeat_dir
from hcc_exp.sweeps.liveness import RetryCallback

NETWORK_FILESYSTEMS: frozenset[str] = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb",
        "smb2",
        "smb3",
        "smbfs",
        "afs",
        "ncpfs",
        "9p",
        "glusterfs",
        "lustre",
        "gpfs",
        "beegfs",
        "cephfs",
        "ceph",
        "fuse.sshfs",
        "fuse.glusterfs",
        "fuse.s3fs",
        "fuse.gcsfuse",
        "fuse.rclone",
        "fuse.cephfs",
        "davfs",
        "fuse.davfs2",
    }
)


@dataclass(frozen=True)
class StorageTarget:
    """Where a study lives.

    Attributes:
        kind: ``journal`` or ``rdb``.
        url: the SQLAlchemy URL (rdb) or the journal file path (journal), env vars expanded.
        display: the same with any password masked, for logs and tables.
    """

    kind: str
    url: str
    display: str

    @property
    def journal_path(self) -> Path:
        return Path(self.url)

    @property
    def heartbeat_dir(self) -> Path:
        """Per-trial heartbeat files of a journal storage (next to the journal, so every machine sees them)."""
        return journal_heartbeat_dir(self.url)


def _mask(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def mount_fstype(path: Path, mounts_text: str | None = None) -> str | None:
    """File-system type of the mount holding ``path`` (longest mount-point prefix in /proc/mounts).

    Args:
        path: any path (need not exist; its nearest existing parent is used).
        mounts_text: contents of ``/proc/mounts`` (read from the system when None).

    Returns:
        e.g. ``ext4``, ``nfs4``, ``fuse.sshfs``; None when the mount table is unavailable.
    """
    if mounts_text is None:
        try:
            mounts_text = Path("/proc/mounts").read_text(encoding="utf-8")
        except OSError:
            return None
    target = Path(os.path.abspath(path))
    best: tuple[int, str] | None = None
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        # /proc/mounts escapes spaces as \040.
        mount_point = fields[1].replace("\\040", " ")
        try:
            target.relative_to(mount_point)
        except ValueError:
            continue
        if best is None or len(mount_point) > best[0]:
            best = (len(mount_point), fields[2])
    return None if best is None else best[1]


def is_network_filesystem(path: Path, mounts_text: str | None = None) -> str | None:
    """The network file-system type holding ``path``, or None on a local disk."""
    fstype = mount_fstype(path, mounts_text)
    if fstype is None:
        return None
    if fstype in NETWORK_FILESYSTEMS or fstype.startswith("nfs") or fstype.startswith("fuse.sshfs"):
        return fstype
    return None


def resolve_storage(storage: str | None, sweep_dir: Path) -> StorageTarget:
    """Turn the ``storage`` field (or ``--join`` value) into a :class:`StorageTarget`.

    Raises:
        SweepError: an unsupported URL, or SQLite on a network file system.
    """
    if storage is None or not str(storage).strip():
        path = SweepFolder(Path(sweep_dir)).journal.resolve()
        return StorageTarget("journal", str(path), str(path))
    url = os.path.expandvars(str(storage).strip())
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in {"postgresql", "postgres", "postgresql+psycopg"}:
        # SQLAlchemy's default PostgreSQL driver is psycopg2; this project ships psycopg 3.
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
        return StorageTarget("rdb", url, _mask(url))
    if scheme.startswith("postgresql+"):
        return StorageTarget("rdb", url, _mask(url))
    if scheme == "sqlite":
        db_path = url.split("///", 1)[1] if "///" in url else ""
        if db_path and db_path != ":memory:":
            fstype = is_network_filesystem(Path(db_path))
            if fstype:
                raise SweepError(
                    f"storage {url}: the SQLite file is on a network file system ({fstype}). SQLite's file "
                    "locks are unreliable there, so concurrent workers can corrupt the study. Use the "
                    "default journal storage (storage: null) or a PostgreSQL URL."
                )
        return StorageTarget("rdb", url, url)
    if scheme in {"mysql", "mysql+pymysql"}:
        return StorageTarget("rdb", url, _mask(url))
    if scheme in {"", "file"}:
        path = Path(url.split("://", 1)[1] if scheme == "file" else url).expanduser().resolve()
        return StorageTarget("journal", str(path), str(path))
    raise SweepError(
        f"storage {storage!r}: unsupported; use null (journal file in the sweep folder), a path to a "
        ".journal file, postgresql://user:pass@host/db, or sqlite:///local.db"
    )


def open_storage(
    target: StorageTarget,
    *,
    heartbeat_interval: int = 10,
    grace_period: int = 60,
    max_retry: int = 2,
) -> BaseStorage:
    """Open the Optuna storage of ``target``.

    RDB storages get Optuna's heartbeat and a retry callback that re-queues a dead
    worker's trial (same params and user attrs) up to ``max_retry`` times. The journal
    storage has no heartbeat in Optuna 5; :mod:`hcc_exp.sweeps.optuna_backend` keeps
    per-trial heartbeat files instead and applies the same retry callback.

    Raises:
        SweepError: the database cannot be reached or the journal folder not created.
    """
    if target.kind == "journal":
        path = target.journal_path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            target.heartbeat_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SweepError(f"cannot create the journal storage at {path}: {exc}") from exc
        return JournalStorage(JournalFileBackend(str(path)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return RDBStorage(
                target.url,
                engine_kwargs={"pool_pre_ping": True} if not target.url.startswith("sqlite") else None,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=retry_callback(max_retry),
            )
        except Exception as exc:  # SQLAlchemy / driver errors have no common base worth naming
            raise SweepError(f"cannot open study storage {target.display}: {exc}") from exc


def retry_callback(max_retry: int) -> RetryCallback:
    """Re-queues a failed trial as WAITING (params and user attrs kept), see :class:`~hcc_exp.sweeps.liveness.RetryCallback`."""
    return RetryCallback(max_retry)
