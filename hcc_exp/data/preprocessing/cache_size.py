"""The size of a cache before it is written, and the refusal to start one the disk cannot hold.

A cache holds, per patient, ``image.npy`` (P phases x crop voxels of the image dtype) and
``masks.npy`` (P phases x R regions x crop voxels, one byte each), each behind a 128-byte
``.npy`` header. A 400^3 crop of 8 patients is 8 x 3 x 64e6 x (2 + 3) bytes = 7.7 GB, however
small the cohort's files are, so the size is stated before any work and checked against the
free space of the target disk.

>>> from hcc_exp.config import PreprocessConfig
>>> cfg = PreprocessConfig(crop_size_vox=(16, 16, 16), dtype="float16")
>>> expected_cache_bytes(cfg, patients=6, phases=3)    # 6 x (2 x 128 + 3 x 4096 x 2 + 3 x 3 x 4096)
370176
>>> format_bytes(7_680_000_000)
'7.7 GB'
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

from hcc_exp.config import PreprocessConfig
from hcc_exp.errors import InsufficientDiskSpaceError
from hcc_exp.vocabulary import REGIONS

NPY_HEADER_BYTES = 128
"""Length of a ``np.save`` header (format 1.0) for the cache's array shapes."""

LARGE_CACHE_BYTES = 2_000_000_000
"""Above this expected size (2 GB) preprocessing warns before it writes anything."""

MASK_ITEMSIZE = np.dtype(np.uint8).itemsize

log = logging.getLogger("hcc_exp.data.preprocessing")


def expected_cache_bytes(cfg: PreprocessConfig, patients: int, phases: int) -> int:
    """Bytes of the arrays of a cache of ``patients`` patients and ``phases`` phases (headers included).

    ``patients x (2 headers + phases x crop voxels x (image itemsize + regions x 1 byte))``.
    """
    voxels = int(np.prod(cfg.crop_size_vox, dtype=np.int64))
    image_itemsize = np.dtype(cfg.dtype).itemsize
    per_patient = 2 * NPY_HEADER_BYTES + phases * voxels * (image_itemsize + len(REGIONS) * MASK_ITEMSIZE)
    return int(patients) * per_patient


def format_bytes(n: int) -> str:
    """Decimal units (kB, MB, GB, TB), one decimal: what ``df -H`` and file managers show."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def describe_cache_size(cfg: PreprocessConfig, patients: int, phases: int) -> str:
    """One line: ``8 patients x 3 phases x (1 image + 3 masks) x 48x48x48 voxels: 13.3 MB``."""
    size = "x".join(str(int(n)) for n in cfg.crop_size_vox)
    total = expected_cache_bytes(cfg, patients, phases)
    return (
        f"{patients} patients x {phases} phases x (1 image ({cfg.dtype}) + {len(REGIONS)} masks (uint8))"
        f" x {size} voxels: {format_bytes(total)}"
    )


def check_cache_fits(
    cfg: PreprocessConfig,
    patients: int,
    phases: int,
    cache_root: Path,
    *,
    warn_above_bytes: int | None = None,
) -> int:
    """Warn about a large cache and refuse one the disk under ``cache_root`` cannot hold.

    Args:
        warn_above_bytes: log a warning above this size (default :data:`LARGE_CACHE_BYTES`).

    Returns:
        The expected size in bytes.

    Raises:
        InsufficientDiskSpaceError: the disk has less free space than the cache needs
            (naming the folder, the size needed and the space free).
    """
    needed = expected_cache_bytes(cfg, patients, phases)
    if needed > (LARGE_CACHE_BYTES if warn_above_bytes is None else warn_above_bytes):
        log.warning(
            "the cache will take %s (%s); preprocess.crop_size_vox = %s sets most of it",
            format_bytes(needed),
            describe_cache_size(cfg, patients, phases),
            list(cfg.crop_size_vox),
        )
    free = shutil.disk_usage(_existing_parent(cache_root)).free
    if free < needed:
        raise InsufficientDiskSpaceError(
            f"not enough disk space for the cache under {cache_root}: it needs"
            f" {describe_cache_size(cfg, patients, phases)}, the disk has {format_bytes(free)} free"
        )
    return needed


def _existing_parent(path: Path) -> Path:
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
