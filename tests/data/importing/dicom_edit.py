"""Copies of real DICOM series with edited headers (the quirks a hospital archive holds)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid


def slice_files(folder: Path) -> list[Path]:
    """The series' slice files sorted by position along z (first = lowest z)."""
    files = []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except pydicom.errors.InvalidDicomError:
            continue
        files.append((float(ds.ImagePositionPatient[2]), path))
    return [p for _, p in sorted(files)]


def copy_series(
    src: Path,
    dst: Path,
    edit: Callable[[pydicom.Dataset, int], pydicom.Dataset | None] | None = None,
    *,
    prefix: str = "",
) -> list[Path]:
    """Copy ``src``'s slices (sorted by z) to ``dst``; ``edit(ds, k)`` may change slice k or drop it (None)."""
    dst.mkdir(parents=True, exist_ok=True)
    written = []
    for k, path in enumerate(slice_files(src)):
        ds = pydicom.dcmread(path)
        if edit is not None:
            ds = edit(ds, k)
        if ds is None:
            continue
        out = dst / f"{prefix}{k:04d}.dcm"
        ds.save_as(out)
        written.append(out)
    return written


def new_series(description: str, number: int) -> Callable[[pydicom.Dataset, int], pydicom.Dataset]:
    """An edit giving every slice one new SeriesInstanceUID, a description and a number."""
    uid = generate_uid()

    def edit(ds: pydicom.Dataset, k: int) -> pydicom.Dataset:
        ds.SeriesInstanceUID = uid
        ds.SeriesDescription = description
        ds.SeriesNumber = number
        ds.SOPInstanceUID = generate_uid()
        return ds

    return edit
