"""The cache key: a hash of the preprocessing parameters and of the cohort's bytes.

``<params_hash>-<first 16 hex of input_hash>`` names a cache folder
(:mod:`hcc_exp.data.cache`): the same recipe on the same files finds its cache again,
any change to either writes a new one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from hcc_exp.config import PreprocessConfig
from hcc_exp.data.contract import COHORT_CSV, IMAGES_DIR
from hcc_exp.vocabulary import PHASES


def hash_cohort_inputs(cohort_dir: Path | str, phases: Sequence[str] = PHASES) -> str:
    """blake2b hex digest of ``cohort.csv``, every file under ``images/`` (relative path, size, bytes) and the phases.

    The phases are part of the hash because they change the cached arrays.
    """
    cohort_dir = Path(cohort_dir)
    digest = hashlib.blake2b(digest_size=32)
    digest.update(("phases=" + ",".join(phases) + "\0").encode())
    files = [cohort_dir / COHORT_CSV]
    images_dir = cohort_dir / IMAGES_DIR
    if images_dir.is_dir():
        files += sorted((p for p in images_dir.rglob("*") if p.is_file()), key=lambda p: p.relative_to(cohort_dir).as_posix())
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    for path in files:
        digest.update(f"{path.relative_to(cohort_dir).as_posix()}\0{path.stat().st_size}\0".encode())
        with open(path, "rb", buffering=0) as fh:
            while n := fh.readinto(buffer):
                digest.update(view[:n])
    return digest.hexdigest()


def cache_key(cfg: PreprocessConfig, input_hash: str) -> str:
    """``<params_hash>-<first 16 hex of input_hash>``."""
    return f"{cfg.params_hash()}-{input_hash[:16]}"
