"""``hcc-exp import``: raw hospital / archive data -> the cohort layout (:mod:`hcc_exp.data.contract`).

Modules, in the order an import uses them: :mod:`.mapping` (the YAML mapping), :mod:`.clinical`
(the clinical table), :mod:`.dicom` (choosing and checking DICOM series), :mod:`.masks` (mask
formats and grids), :mod:`.registration` (annotations drawn on one phase) and :mod:`.cohort`
(the entry point :func:`import_cohort`).
"""
