"""Reading and writing volumes with SimpleITK.

Volumes are ``SimpleITK.Image`` objects in physical space (spacing in mm, origin,
direction). Arrays taken from them with ``GetArrayFromImage`` are indexed
(z, y, x). Only geometry ever leaves a DICOM series: no header field (names,
dates, UIDs) is read into hcc-exp's outputs or logs.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from hcc_exp.errors import CohortError, OutputFolderError, UnreadableVolumeError

GEOMETRY_TOLERANCE_MM = 1e-3
"""Default tolerance (mm, and unitless for direction cosines) for grid comparisons."""


def read_volume(path: Path | str, *, patient_id: str | None = None) -> sitk.Image:
    """Read a NIfTI file or a folder holding one DICOM series.

    Args:
        path: ``*.nii`` / ``*.nii.gz`` file (or any format SimpleITK reads: NRRD, MHA), or a
            folder of DICOM slices (:func:`hcc_exp.data.importing.dicom.read_series`).
        patient_id: named in the error when the read fails.

    Raises:
        UnreadableVolumeError: missing, corrupt or truncated file, or no DICOM series.
        DicomSeriesError: a DICOM folder whose series is ambiguous, not CT, a scout, tilted or
            has missing / duplicate / unevenly spaced slices (a subclass per case).
    """
    path = Path(path)
    try:
        if path.is_dir():
            return _read_dicom_series(path, patient_id)
        if not path.is_file():
            raise UnreadableVolumeError("file does not exist", patient_id=patient_id, path=path)
        if path.name.endswith(".gz") and not _gzip_size_matches_header(path):
            # ITK's reader can return a partially filled image on a truncated gzip
            # stream; reading the stream fully turns that into an error.
            with gzip.open(path, "rb") as fh:
                while fh.read(1 << 22):
                    pass
        return sitk.ReadImage(str(path))
    except CohortError:
        raise
    except (RuntimeError, OSError, EOFError, gzip.BadGzipFile) as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise UnreadableVolumeError(f"cannot read volume: {reason}", patient_id=patient_id, path=path) from exc


def _gzip_size_matches_header(path: Path) -> bool:
    """Cheap completeness check of a single-member ``.nii.gz``.

    gzip stores the uncompressed size (mod 2**32) in its last 4 bytes; a complete
    NIfTI file is ``vox_offset + voxels * bytes per voxel`` long. A truncated stream
    ends in arbitrary compressed bytes, so a match is (almost surely) a complete
    file. On a mismatch the caller falls back to decompressing the whole stream.
    """
    try:
        import nibabel

        image = nibabel.load(str(path))
        header = image.header
        # dataobj.offset resolves a zero vox_offset to the real start of the voxel data.
        expected = int(image.dataobj.offset) + int(np.prod(header.get_data_shape())) * header.get_data_dtype().itemsize
        with open(path, "rb") as fh:
            fh.seek(-4, os.SEEK_END)
            stored = int.from_bytes(fh.read(4), "little")
    except Exception:  # noqa: BLE001 - any failure means "verify the slow way"
        return False
    return stored == expected % (1 << 32)


def _read_dicom_series(folder: Path, patient_id: str | None) -> sitk.Image:
    # The checked reader (one CT series, no scout, no tilt, even slices, padding -> air).
    from hcc_exp.data.importing.dicom import read_series

    image, _ = read_series(folder, patient_id=patient_id)
    return image


def strip_metadata(image: sitk.Image) -> sitk.Image:
    """A copy of ``image`` with pixel data and geometry only (no header dictionary)."""
    clean = sitk.GetImageFromArray(sitk.GetArrayViewFromImage(image).copy())
    clean.CopyInformation(image)
    return clean


@contextmanager
def atomic_path(final: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it into place only on success."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates 0600; give the final file the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_nifti(image: sitk.Image, path: Path | str) -> None:
    """Write ``image`` as NIfTI, byte-for-byte deterministic for equal input (gzip level 1: ~4x faster than 6, ~2% larger).

    ``.nii.gz`` is compressed here with a zeroed gzip timestamp and no file name,
    so that the same volume always gives the same bytes (DVC hashes stay stable).
    The write is atomic.
    """
    path = Path(path)
    with tempfile.TemporaryDirectory() as tmpdir:
        raw = Path(tmpdir) / "volume.nii"
        sitk.WriteImage(image, str(raw), useCompression=False)
        payload = raw.read_bytes()
    with atomic_path(path) as tmp:
        if path.name.endswith(".gz"):
            with open(tmp, "wb") as fh, gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0, compresslevel=1) as gz:
                gz.write(payload)
        else:
            tmp.write_bytes(payload)


def image_from_array(
    array_zyx: np.ndarray,
    spacing_xyz_mm: tuple[float, float, float],
    origin_xyz_mm: tuple[float, float, float] = (0.0, 0.0, 0.0),
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
) -> sitk.Image:
    """Build a SimpleITK image from a (z, y, x) array and its geometry (x, y, z order, mm)."""
    image = sitk.GetImageFromArray(array_zyx)
    image.SetSpacing(tuple(float(s) for s in spacing_xyz_mm))
    image.SetOrigin(tuple(float(o) for o in origin_xyz_mm))
    image.SetDirection(tuple(float(d) for d in direction))
    return image


def same_grid(a: sitk.Image, b: sitk.Image, tol: float = GEOMETRY_TOLERANCE_MM) -> list[str]:
    """Differences between two images' grids; empty when they share one.

    Returns:
        Human-readable descriptions of what differs (size, spacing, origin, direction).
    """
    issues: list[str] = []
    if a.GetSize() != b.GetSize():
        issues.append(f"size {b.GetSize()} != {a.GetSize()}")
    if not np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tol):
        issues.append(f"spacing {_fmt(b.GetSpacing())} != {_fmt(a.GetSpacing())}")
    if not np.allclose(a.GetOrigin(), b.GetOrigin(), atol=max(tol, 1e-3 * max(a.GetSpacing()))):
        issues.append(f"origin {_fmt(b.GetOrigin())} != {_fmt(a.GetOrigin())}")
    if not np.allclose(a.GetDirection(), b.GetDirection(), atol=tol):
        issues.append(f"direction {_fmt(b.GetDirection())} != {_fmt(a.GetDirection())}")
    return issues


def physical_extent_mm(image: sitk.Image) -> np.ndarray:
    """Physical size (x, y, z) in mm covered by the voxels: size * spacing."""
    return np.asarray(image.GetSize(), dtype=float) * np.asarray(image.GetSpacing(), dtype=float)


def _fmt(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def copy_tree_atomic(src: Path, dst: Path) -> None:
    """Copy a folder to ``dst`` through a staging sibling, then swap it into place."""
    with staged_folder(dst) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


@contextmanager
def staged_folder(final: Path | str) -> Iterator[Path]:
    """Yield an empty staging folder beside ``final``; swap it onto ``final`` when the block succeeds.

    The one way hcc-exp publishes a folder (an imported or synthetic cohort): everything is
    written into the staging folder, and only a block that returns normally makes it
    ``final``. An existing ``final`` is renamed aside first and removed only after the new
    folder is in place; if the swap fails it is renamed back. Whatever happens, ``final`` is
    either exactly as it was or the complete new folder, and the staging folder is gone.
    The published folder gets the permissions a plain ``mkdir`` would (``0o777 & ~umask``),
    not the ``0700`` of a temporary folder.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> with staged_folder(root / "cohort") as tmp:
    ...     _ = (tmp / "cohort.csv").write_text("patient_id\\n")
    >>> sorted(p.name for p in root.iterdir())
    ['cohort']
    """
    final = Path(final)
    if final.exists() and not final.is_dir():
        # A folder replaces a folder; a user's file at that path is never swapped away.
        raise OutputFolderError(f"output folder {final} is a file, not a folder")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.staging-", dir=final.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        swap_into_place([(tmp, final)])
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def swap_into_place(moves: Sequence[tuple[Path, Path]], *, replace: bool = True) -> tuple[bool, ...]:
    """Move each ``src`` onto its ``dst`` with one rename each, all or none: the one swap primitive.

    Every folder hcc-exp publishes goes through here: a staged cohort (:func:`staged_folder`,
    one move), a staged run into an existing run folder (one move per entry, so entries the
    stage does not hold, such as ``evaluation/``, stay), and a preprocessed cache (``replace=False``).

    * ``dst`` absent: ``src`` is renamed onto it.
    * ``dst`` present, ``replace=False``: nothing moves (``False`` for that move); the caller
      keeps or removes ``src``. The cache's rule: a completed folder is never replaced.
    * ``dst`` present, ``replace=True``: ``dst`` is renamed aside (a hidden sibling), ``src``
      onto ``dst``; the old entries are removed only after every move succeeded.

    The rollback rule: if any rename fails, the moves done so far are undone in reverse order
    (each new entry back to its ``src``, each old one back to its ``dst``) and the error is
    raised, so every ``dst`` is exactly as it was and every ``src`` still holds the new entry.
    Sources and destinations must be on one filesystem (siblings, as staging folders are).

    Returns:
        Per move, whether ``src`` is now at ``dst``.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> _ = (root / "new.txt").write_text("new"), (root / "old.txt").write_text("old")
    >>> swap_into_place([(root / "new.txt", root / "old.txt")], replace=False)
    (False,)
    >>> swap_into_place([(root / "new.txt", root / "old.txt")]), (root / "old.txt").read_text()
    ((True,), 'new')
    >>> sorted(p.name for p in root.iterdir())
    ['old.txt']
    """
    steps: list[_Step] = []
    moved: list[bool] = []
    try:
        for src, dst in moves:
            step = _Step(Path(src), Path(dst))
            exists = _exists(step.dst)
            if exists and not replace:
                moved.append(False)
                continue
            steps.append(step)
            if exists:
                step.aside = _aside_name(step.dst)
                if step.dst.is_file() and not step.dst.is_symlink():
                    try:
                        # A file is replaced in one rename (never absent for a reader); a hard link
                        # keeps the old one for a rollback.
                        os.link(step.dst, step.aside)
                        step.linked = True
                    except OSError:
                        os.replace(step.dst, step.aside)
                else:
                    # A folder cannot be renamed onto a non-empty folder: set the old one aside first.
                    os.replace(step.dst, step.aside)
            os.replace(step.src, step.dst)
            step.placed = True
            moved.append(True)
    except BaseException:
        _undo(steps)
        raise
    for step in steps:
        if step.aside is not None:
            _remove(step.aside)
    return tuple(moved)


@dataclass
class _Step:
    src: Path
    dst: Path
    aside: Path | None = None  # where the old dst was put (or hard-linked) aside
    linked: bool = False  # aside is a second name of the old dst (a file), not a rename of it
    placed: bool = False  # src renamed onto dst


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _aside_name(dst: Path) -> Path:
    while True:
        aside = dst.with_name(f".{dst.name}.replaced-{secrets.token_hex(4)}")
        if not (aside.exists() or aside.is_symlink()):
            return aside


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _undo(steps: list[_Step]) -> None:
    """Reverse the moves of :func:`swap_into_place` (best effort: the error raised is the first one)."""
    for step in reversed(steps):
        if step.placed:
            with contextlib.suppress(OSError):
                os.replace(step.dst, step.src)  # the new entry back into the stage
        if step.aside is None:
            continue
        with contextlib.suppress(OSError):
            if step.linked and not step.placed:
                step.aside.unlink()  # dst was never replaced: drop the second name
            else:
                os.replace(step.aside, step.dst)  # the old entry back where it was
