"""``hcc-exp import SRC DST``: turn raw data into the cohort layout (:mod:`hcc_exp.data.contract`).

Raw data (``SRC``) is one folder per patient, holding per phase either a DICOM series folder
or a volume file (NIfTI, NRRD, MHA), the masks (binary files, label maps or DICOM-SEG
objects), and one clinical table (CSV or XLSX). A YAML mapping file says which file is which
and how the clinical columns are called::

    clinical: clinical.xlsx            # CSV, TSV or XLSX, relative to SRC (or absolute)
    sheet: 0                           # XLSX only: sheet name or index (default 0)
    columns:                           # our column -> their column
      patient_id: "Patient ID"
      institution: "Centre"
      split: "Cohort"
      os_time_days: "OS_days"
      os_event: "Death"
      rfs_time_days: "RFS_days"
      rfs_event: "Recurrence or death"
      mvi: "MVI"
      bclc: "BCLC"
      tnm: "TNM"
      afp_ng_ml: "AFP"
      tumour_size_mm: "Size (mm)"
      age: "Age"
      sex: "Sex"
    values:                            # optional recoding: our column -> {their value: our value}
      split: {"training": "train", "validation": "internal", "test": "external"}
      sex: {"male": "M", "female": "F"}
      os_event: {"yes": 1, "no": 0}    # quote words: YAML reads bare yes/no as booleans
    phases:                            # our phase -> file / folder stem in each patient folder
      arterial: "ART"                  #   ART/ (a DICOM series) or ART.nii.gz / .nii / .nrrd / .mha
      portal: "PV"
      delayed: "DEL"
    masks:                             # mask file stems (any supported extension) or file names
      tumour: "{phase}_tumour"         # {phase}: the phase's stem above (ART), {name}: ours (arterial)
      liver: "liver"                   # no placeholder: one liver mask shared by the phases
    folder_column: "Folder"            # optional: the column naming each patient's folder in SRC;
                                       #   default: the folder is named by the patient's raw ID
    drop_columns: ["Name", "DOB"]      # optional: their columns not to copy into cohort.csv

A required column (``contract.REQUIRED_COLUMNS``) missing from ``columns`` is looked up in the
table under its own name. Their other columns are copied to ``cohort.csv`` under their own
names (except ``drop_columns``, the ``folder_column``, and a name that clashes with one of
ours). A mask template without placeholder is one file used for every phase (``liver`` then
becomes ``liver.nii.gz``, ``tumour`` is copied to each ``<phase>_tumour.nii.gz``).

Real archives need more, and the mapping says it (:mod:`hcc_exp.data.importing.mapping`)::

    phases:
      arterial: {folder: "CT", series_description: "*arterial*"}   # one of several series in CT/
      portal:   {folder: "CT", series_uid: "1.2.840..."}
      delayed:  "DEL"
    masks:
      liver:  {file: "seg", labels: [1, 2]}          # a label map (NIfTI / NRRD / MHA): labels 1 and 2
      tumour: {file: "seg.dcm", segment: "Mass"}     # a DICOM-SEG segment, by label or description
      # tumour: {file: "tumour", phase: portal}      # drawn on the portal phase: registered to the others
      # liver:  {file: "liver", resample: true}      # on another grid: resample instead of refusing
    registration: {working_spacing_mm: 3.0, bspline: false, min_correlation: 0.6}

DICOM series are chosen and checked slice by slice (:mod:`hcc_exp.data.importing.dicom`: one
CT series, no scout, no gantry tilt, no missing / duplicate / unevenly spaced slice), masks are
brought onto their phase's grid exactly (:mod:`hcc_exp.data.importing.masks`), masks drawn on
one phase are registered to the others with QC in ``DST/qc/``
(:mod:`hcc_exp.data.importing.registration`).

Only geometry and pixel values leave the raw files: no name, date or UID is written or logged
(a refusal names a series by its folder, number and description, so the user can choose).
HU below -1500 (padding outside the field of view: -2048, -3024) become -1024 (air). Masks are stored as ``uint8``
0 / 1 where their values allow.

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
