"""Preprocessing of a cohort into the cache (paper, Methods: "Imaging annotation and preprocessing").

Split as nnU-Net v2 splits its preprocessing, one concern per module, top-down:

* :mod:`~hcc_exp.data.preprocessing.resampling`: voxel grids, resampling onto a grid, anti-aliasing;
* :mod:`~hcc_exp.data.preprocessing.intensity`: the percentile window scaled to [0, 1];
* :mod:`~hcc_exp.data.preprocessing.regions`: the peritumoral margin band (the ROI regions);
* :mod:`~hcc_exp.data.preprocessing.cropping`: boxes and the fixed crop around the tumour;
* :mod:`~hcc_exp.data.preprocessing.preprocessor`: one patient, from its files to its arrays;
* :mod:`~hcc_exp.data.preprocessing.hashing`: the cache key (recipe hash + input hash);
* :mod:`~hcc_exp.data.preprocessing.cache_size`: the cache's size, stated and checked first;
* :mod:`~hcc_exp.data.preprocessing.cohort`: the whole cohort: table, worker pool, manifest, publishing.

The first five are pure (arrays and SimpleITK images in and out); the cache layout
itself is owned by :mod:`hcc_exp.data.cache`.
"""

from hcc_exp.data.preprocessing.cache_size import check_cache_fits, describe_cache_size, expected_cache_bytes
from hcc_exp.data.preprocessing.cohort import preprocess_cohort, read_cohort_table
from hcc_exp.data.preprocessing.cropping import Box, crop_around, crop_start, mask_centroid_vox
from hcc_exp.data.preprocessing.hashing import cache_key, hash_cohort_inputs
from hcc_exp.data.preprocessing.intensity import clip_and_scale, clip_levels
from hcc_exp.data.preprocessing.preprocessor import REFERENCE_PHASE, preprocess_and_save, preprocess_patient
from hcc_exp.data.preprocessing.regions import margin_band, margin_band_array
from hcc_exp.data.preprocessing.resampling import (
    INTERPOLATORS,
    Grid,
    Interpolator,
    antialias,
    antialias_sigmas_mm,
    resample_onto,
    resample_to_grid,
    resample_to_spacing,
    spacing_grid,
)

__all__ = [
    "INTERPOLATORS",
    "REFERENCE_PHASE",
    "Box",
    "Grid",
    "Interpolator",
    "antialias",
    "antialias_sigmas_mm",
    "cache_key",
    "check_cache_fits",
    "clip_and_scale",
    "clip_levels",
    "crop_around",
    "crop_start",
    "describe_cache_size",
    "expected_cache_bytes",
    "hash_cohort_inputs",
    "margin_band",
    "margin_band_array",
    "mask_centroid_vox",
    "preprocess_and_save",
    "preprocess_cohort",
    "preprocess_patient",
    "read_cohort_table",
    "resample_onto",
    "resample_to_grid",
    "resample_to_spacing",
    "spacing_grid",
]
