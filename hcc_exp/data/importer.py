"""``hcc-exp import SRC DST``: turn raw data into the cohort layout (:mod:`hcc_exp.data.contract`).

Raw data (``SRC``) is one folder per patient, holding per phase either a DICOM series folder
or a volume file (NIfTI, NRRD, MHA), the masks (binary files, label maps or DICOM-SEG
objects), and one clinical table (CSV or XLSX). A YAML mapping file says which file is
which, how the clinical columns are called, how a DICOM series is chosen, in which format each
mask is stored and how masks drawn on one phase are registered; its format, with the one
written example, is :mod:`hcc_exp.data.importing.mapping`.

DICOM series are chosen and checked slice by slice (:mod:`hcc_exp.data.importing.dicom`: one
CT series, no scout, no missing / duplicate slice, no gantry tilt or unevenly spaced slices
unless the phase says ``resample: true``, then resampled onto a uniform axial grid), masks are
brought onto their phase's grid exactly (:mod:`hcc_exp.data.importing.masks`), masks drawn on
one phase are registered to the others with QC in ``DST/qc/``
(:mod:`hcc_exp.data.importing.registration`).

Only geometry and pixel values leave the raw files: no name, date or UID is written or logged
(a refusal names a series by its folder, number and description, so the user can choose).
HU below -1500 (padding outside the field of view: -2048, -3024) become -1024 (air). Masks are
stored as ``uint8`` 0 / 1 where their values allow.

The cohort is built in a staging folder and swapped onto ``DST`` only after
:func:`hcc_exp.data.validate.validate_cohort` passes (:func:`hcc_exp.data.io.staged_folder`); a
failed import leaves ``DST`` as it was (absent if it was) and raises
:class:`~hcc_exp.errors.CohortValidationError` naming each patient, column and source file.
"""

from hcc_exp.data.importing.cohort import QC_CSV, QC_DIR, import_cohort
from hcc_exp.data.importing.mapping import (
    ImportMapping,
    MaskNames,
    MaskSpec,
    PhaseSource,
    RegistrationSettings,
)

__all__ = [
    "QC_CSV",
    "QC_DIR",
    "ImportMapping",
    "MaskNames",
    "MaskSpec",
    "PhaseSource",
    "RegistrationSettings",
    "import_cohort",
]
