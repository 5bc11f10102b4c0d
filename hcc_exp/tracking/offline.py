"""Read back an offline W&B run (``offline-run-*/run-<id>.wandb``) without uploading it.

Offline runs keep everything in one transaction log (W&B's LevelDB-style record
file: a 7-byte header, then 32 KiB blocks of CRC-framed records, each a
``wandb_internal_pb2.Record``); ``files/config.yaml`` and ``files/wandb-summary.json``
are only written when a run is synced. This reader lets a user (and the tests)
check what an offline run holds before ``hcc-exp sync``.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hcc_exp.tracking.base import TrackingError

_MAGIC = b":W&B"
_HEADER_LEN = 7  # ":W&B" + 2-byte magic + 1-byte version
_BLOCK = 32768
_RECORD_HEADER = struct.Struct("<IHB")  # crc32c, length, type
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    """What an offline W&B run recorded.

    Attributes:
        folder: the ``offline-run-*`` folder.
        run_id, project, group, job_type, display_name: from the run record.
        tags: run tags.
        config: ``{key: value}`` as logged (flat dotted keys for hcc-exp runs).
        summary: final summary (nested dicts for media entries).
        history: one dict per logged row.
        artifacts: ``{"name", "type", "aliases", "metadata", "files"}`` per logged artifact.
        files: files registered with the run (relative to ``files/``), e.g. media images.
        exit_code: exit code of the run, None if it did not finish.
    """

    folder: Path
    run_id: str = ""
    project: str = ""
    group: str = ""
    job_type: str = ""
    display_name: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    exit_code: int | None = None


def _records(data: bytes, path: Path) -> list[bytes]:
    if not data.startswith(_MAGIC):
        raise TrackingError(f"{path}: not a W&B run file (bad header)")
    records: list[bytes] = []
    pending = b""
    pos = _HEADER_LEN
    while pos < len(data):
        left = _BLOCK - (pos % _BLOCK)
        if left < _RECORD_HEADER.size:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = _RECORD_HEADER.unpack_from(data, pos)
        pos += _RECORD_HEADER.size
        if pos + length > len(data):
            raise TrackingError(f"{path}: truncated record at byte {pos} (run still being written?)")
        chunk = data[pos : pos + length]
        pos += length
        if kind == _FULL:
            records.append(chunk)
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            records.append(pending + chunk)
            pending = b""
        elif kind == 0 and length == 0:
            continue
        else:
            raise TrackingError(f"{path}: corrupt record at byte {pos} (type {kind})")
    return records


def _set_nested(target: dict[str, Any], path: list[str], value: Any) -> None:
    node = target
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value


def _item_path(item: Any) -> list[str]:
    return list(item.nested_key) if item.nested_key else [item.key]


def read_offline_run(folder: Path) -> OfflineRun:
    """Parse the ``.wandb`` file of an offline run folder.

    Raises:
        TrackingError: the folder has no ``.wandb`` file or the file is corrupt.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    folder = Path(folder)
    files = sorted(folder.glob("*.wandb"))
    if not files:
        raise TrackingError(f"{folder}: no .wandb file (not an offline W&B run folder)")
    path = files[0]
    run = OfflineRun(folder=folder)
    for raw in _records(path.read_bytes(), path):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.run_id, run.project, run.group = r.run_id, r.project, r.run_group
            run.job_type, run.display_name, run.tags = r.job_type, r.display_name, list(r.tags)
            for item in r.config.update:
                run.config[item.key] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                _set_nested(run.config, _item_path(item), json.loads(item.value_json))
        elif kind == "summary":
            for item in record.summary.update:
                _set_nested(run.summary, _item_path(item), json.loads(item.value_json))
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                _set_nested(row, _item_path(item), json.loads(item.value_json))
            run.history.append(row)
        elif kind == "artifact":
            a = record.artifact
            run.artifacts.append(
                {
                    "name": a.name,
                    "type": a.type,
                    "aliases": list(a.aliases),
                    "metadata": json.loads(a.metadata) if a.metadata else {},
                    "files": [c.path for c in a.manifest.contents],
                }
            )
        elif kind == "files":
            run.files.extend(f.path for f in record.files.files)
        elif kind == "exit":
            run.exit_code = int(record.exit.exit_code)
    # Internal bookkeeping keys are not part of what hcc-exp logged.
    run.config.pop("_wandb", None)
    run.summary.pop("_wandb", None)
    return run
