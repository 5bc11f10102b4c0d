"""Is a volume file intact, and can it be CT? The rules ``hcc-exp check`` and ``predict`` share.

Two questions, asked of every volume before anything trusts it:

* **Integrity** (:func:`verify_volume_file`): a ``.nii.gz`` is decompressed in full, so gzip
  verifies its CRC-32 and length (a flipped bit, or a file truncated with its trailer kept,
  fails here; the size stored in the trailer proves nothing); the header must be NIfTI-1/2
  and the voxel data as long as the header says. Float voxels are scanned for NaN / inf,
  which SimpleITK silently reads as 0. One streaming pass, memory bounded by
  :data:`CHUNK_BYTES`. A file that passed is remembered in a small database under the user
  cache (:func:`user_cache_dir`, never inside the cohort), keyed by the file's identity
  (device, inode, size, modification and change times), so the cost is paid once per file.
* **Plausibility** (:func:`shape_problem`, :func:`ct_problem`): a 3D scalar image with at
  least two voxels along each axis; a phase volume is not constant, not 8-bit, spans air /
  fat to soft tissue (below -100 HU and above 100 HU) and stays inside the range HU can
  take. One definition, used by ``check`` and by ``predict``'s not-CT refusal.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import os
import sqlite3
import struct
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from hcc_exp.errors import (
    ConstantVolumeError,
    CorruptVolumeError,
    ImplausibleVolumeError,
    NonFiniteVoxelError,
    NotComputedTomographyError,
    NotVolumetricError,
    UnreadableVolumeError,
)

CHUNK_BYTES = 1 << 22
"""Decompressed bytes handled at a time (4 MiB): the memory one verification needs."""
VERIFIER_VERSION = 1
"""Part of the cache key: raise it when the integrity rules change, so every file is verified again."""

CT_MAX_AT_LEAST_HU = 100.0
"""A CT volume holds soft tissue / contrast / bone: its maximum is above this (HU)."""
CT_MIN_AT_MOST_HU = -100.0
"""A CT volume holds air or fat (or padding): its minimum is below this (HU)."""
CT_LOWEST_HU = -32768.0
CT_HIGHEST_HU = 32767.0
"""Hounsfield units, padding and extended-range scales included, fit in signed 16 bits; values beyond are not HU."""
EIGHT_BIT_TYPES = (sitk.sitkInt8, sitk.sitkUInt8)


# --------------------------------------------------------------------------- integrity
def user_cache_dir() -> Path:
    """``$HCC_EXP_CACHE_DIR``, else ``$XDG_CACHE_HOME/hcc-exp``, else ``~/.cache/hcc-exp`` (never a cohort)."""
    root = os.environ.get("HCC_EXP_CACHE_DIR")
    if not root:
        root = str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hcc-exp")
    return Path(root)


def _file_key(path: Path) -> str:
    """What identifies this version of the file; a rewrite changes the change time even if mtime is restored."""
    st = path.stat()
    identity = f"{VERIFIER_VERSION}|{path.resolve()}|{st.st_dev}|{st.st_ino}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}"
    return hashlib.blake2b(identity.encode("utf-8", "surrogateescape"), digest_size=16).hexdigest()


@functools.lru_cache(maxsize=4)
def _database(path: str) -> sqlite3.Connection | None:
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("CREATE TABLE IF NOT EXISTS verified (key TEXT PRIMARY KEY)")
        return db
    except (sqlite3.Error, OSError):
        return None  # a read-only or full cache folder: verify every time instead


def _verified_db() -> sqlite3.Connection | None:
    return _database(str(user_cache_dir() / "verified-volumes.sqlite3"))


def _known_good(key: str) -> bool:
    db = _verified_db()
    if db is None:
        return False
    try:
        return db.execute("SELECT 1 FROM verified WHERE key = ?", (key,)).fetchone() is not None
    except sqlite3.Error:
        return False


def _remember_good(key: str) -> None:
    db = _verified_db()
    if db is None:
        return
    try:
        db.execute("INSERT OR IGNORE INTO verified (key) VALUES (?)", (key,))
    except sqlite3.Error:
        pass


def _nifti_header(first: bytes, path: Path, patient_id: str | None):
    """Parse the NIfTI-1 or NIfTI-2 header at the start of ``first`` (decompressed bytes)."""
    import nibabel

    for header_class, size in ((nibabel.Nifti1Header, 348), (nibabel.Nifti2Header, 540)):
        for order in "<>":
            if len(first) >= 4 and struct.unpack(f"{order}i", first[:4])[0] == size:
                if len(first) < size:
                    raise CorruptVolumeError("file ends inside the NIfTI header", patient_id=patient_id, path=path)
                header = header_class(binaryblock=first[:size], check=False)
                if bytes(header["magic"]).rstrip(b"\x00") not in (b"n+1", b"n+2"):
                    raise CorruptVolumeError(
                        f"NIfTI magic {bytes(header['magic'])!r} is not a single-file NIfTI",
                        patient_id=patient_id,
                        path=path,
                    )
                return header, size
    raise CorruptVolumeError("not a NIfTI file (no NIfTI-1/2 header)", patient_id=patient_id, path=path)


def _scan(stream, path: Path, patient_id: str | None) -> None:
    """Read ``stream`` to its end: header, voxel byte count, NaN / inf among float voxels."""
    first = stream.read(CHUNK_BYTES)
    header, header_size = _nifti_header(first, path, patient_id)
    offset = max(int(header.get_data_offset()), header_size + 4)
    dtype = header.get_data_dtype()
    n_bytes = int(np.prod(header.get_data_shape(), dtype=np.int64)) * dtype.itemsize
    floating = dtype.kind in "fc"
    position, carry, non_finite = 0, b"", 0
    chunk = first
    while chunk:
        start, end = position, position + len(chunk)
        lo, hi = max(start, offset), min(end, offset + n_bytes)
        if floating and lo < hi:
            data = carry + chunk[lo - start : hi - start]
            whole = len(data) - len(data) % dtype.itemsize
            values = np.frombuffer(data[:whole], dtype=dtype)
            non_finite += int(values.size - np.count_nonzero(np.isfinite(values)))
            carry = data[whole:]
        position = end
        chunk = stream.read(CHUNK_BYTES)
    if position < offset + n_bytes:
        raise CorruptVolumeError(
            f"voxel data is truncated: {max(position - offset, 0):,} of {n_bytes:,} bytes present",
            patient_id=patient_id,
            path=path,
        )
    if non_finite:
        raise NonFiniteVoxelError(
            f"{non_finite:,} voxel(s) are NaN or infinite (SimpleITK would read them as 0)",
            patient_id=patient_id,
            path=path,
        )


def verify_volume_file(path: Path | str, *, patient_id: str | None = None, use_cache: bool = True) -> None:
    """Check that a NIfTI file is intact and its voxels finite (see the module docstring).

    Folders (DICOM series) are left to the reader. A file that passes is remembered under
    :func:`user_cache_dir` and not read again until it changes.

    Raises:
        CorruptVolumeError: gzip CRC / length mismatch, truncated stream or voxel data, no NIfTI header.
        NonFiniteVoxelError: NaN or infinite voxels.
    """
    path = Path(path)
    if not path.is_file() or not path.name.endswith((".nii", ".nii.gz")):
        return
    key = _file_key(path) if use_cache else ""
    if use_cache and _known_good(key):
        return
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as stream:
                _scan(stream, path, patient_id)
        else:
            with open(path, "rb") as raw:
                _scan(io.BufferedReader(raw, CHUNK_BYTES), path, patient_id)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        reason = str(exc).strip() or type(exc).__name__
        raise CorruptVolumeError(f"gzip stream is corrupt: {reason}", patient_id=patient_id, path=path) from exc
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise UnreadableVolumeError(f"cannot read file: {reason}", patient_id=patient_id, path=path) from exc
    if use_cache:
        _remember_good(key)


# --------------------------------------------------------------------------- plausibility
def shape_problem(image: sitk.Image, *, patient_id: str | None = None, path=None) -> NotVolumetricError | None:
    """Why ``image`` is not a 3D scalar volume (2D, 4D, one slice, several components), or None."""
    size = tuple(image.GetSize())
    if image.GetDimension() != 3:
        return NotVolumetricError(
            f"image has {image.GetDimension()} dimensions (size {size}); expected a 3D volume",
            patient_id=patient_id,
            path=path,
        )
    if image.GetNumberOfComponentsPerPixel() != 1:
        return NotVolumetricError(
            f"image has {image.GetNumberOfComponentsPerPixel()} components per voxel; expected 1 (scalar)",
            patient_id=patient_id,
            path=path,
        )
    if min(size) < 2:
        axis = "xyz"[size.index(min(size))]
        return NotVolumetricError(
            f"image has {min(size)} voxel(s) along {axis} (size {size}); a volume needs at least 2",
            patient_id=patient_id,
            path=path,
        )
    return None


def ct_problem(image: sitk.Image, *, patient_id: str | None = None, path=None) -> ImplausibleVolumeError | None:
    """Why a phase volume cannot be CT in Hounsfield units, as a named error, or None if it can.

    CT spans air / fat (far below -100 HU, or padding at -1024 and below) to soft tissue,
    contrast and bone (far above 100 HU), within what signed 16 bits hold; MR, PET, an
    8-bit export, a blank or an already normalised image does not.
    """
    where = {"patient_id": patient_id, "path": path}
    if image.GetPixelID() in EIGHT_BIT_TYPES:
        return NotComputedTomographyError(
            f"voxels are {image.GetPixelIDTypeAsString()}: 8 bits cannot hold Hounsfield units "
            "(air -1000 to bone above +1000); an exported or windowed image?",
            **where,
        )
    values = sitk.GetArrayViewFromImage(image)
    low, high = float(np.min(values)), float(np.max(values))
    if low == high:
        return ConstantVolumeError(f"every voxel is {low:.6g}: a blank image", **where)
    if high < CT_MAX_AT_LEAST_HU or low > CT_MIN_AT_MOST_HU:
        return NotComputedTomographyError(
            f"values span [{low:.4g}, {high:.4g}], not CT Hounsfield units (expected values below "
            f"{CT_MIN_AT_MOST_HU:g} and above {CT_MAX_AT_LEAST_HU:g}: air and soft tissue); "
            "wrong modality or an already normalised volume?",
            **where,
        )
    if low < CT_LOWEST_HU or high > CT_HIGHEST_HU:
        return NotComputedTomographyError(
            f"values span [{low:.4g}, {high:.4g}], beyond any Hounsfield scale "
            f"([{CT_LOWEST_HU:g}, {CT_HIGHEST_HU:g}]); raw detector values or a wrong rescale?",
            **where,
        )
    return None


def modality_problem(image: sitk.Image) -> str | None:
    """:func:`ct_problem` as words (None if the image can be CT)."""
    problem = ct_problem(image)
    return None if problem is None else problem.message
