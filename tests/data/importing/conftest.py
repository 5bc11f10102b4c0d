"""Real public samples for the import tests (skipped cleanly where ../shared is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REAL_CT_DIR, REAL_HCC_DIR


@pytest.fixture
def real_dicom_dir() -> Path:
    """The TotalSegmentator example series: 20 slices of 512 x 512, 0.977 x 0.977 x 2 mm."""
    if not (REAL_CT_DIR / "dicom").is_dir():
        pytest.skip(f"real CT sample not found at {REAL_CT_DIR}")
    return REAL_CT_DIR / "dicom"


@pytest.fixture
def dcmqi_liver_dir() -> Path:
    """A real 3-slice CT with a real liver delineation as DICOM-SEG and as NRRD."""
    folder = REAL_HCC_DIR / "dcmqi-liver"
    if not (folder / "liver-seg.dcm").is_file():
        pytest.skip(f"dcmqi liver sample not found at {folder}")
    return folder


@pytest.fixture
def hcc048_dir() -> Path:
    """HCC_048's real portal-venous series (HCC-TACE-Seg): 89 slices of 512 x 512, padding -2048."""
    folder = REAL_HCC_DIR / "hcc048-portal"
    if not folder.is_dir():
        pytest.skip(f"HCC-TACE-Seg sample not found at {folder}")
    return folder
